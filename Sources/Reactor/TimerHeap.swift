// A binary min-heap of deadlines. Connection idle timeouts use one entry per connection that is
// re-armed lazily (the connection keeps its real deadline; an expired entry whose connection has
// moved its deadline is pushed again), so activity costs no heap operation and 10k sessions
// need no 10k timerfds.

struct TimerEntry {
    var deadline: UInt64
    var seq: UInt64
    /// A connection's timeout, or a scheduled callback id.
    var connection: Connection?
    var generation: UInt32
    var callbackID: UInt64
}

struct TimerHeap {
    private(set) var items: [TimerEntry] = []
    private var seq: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    var next: UInt64? { items.first?.deadline }

    @inline(__always)
    static func less(_ a: TimerEntry, _ b: TimerEntry) -> Bool {
        a.deadline < b.deadline || (a.deadline == b.deadline && a.seq < b.seq)
    }

    mutating func push(_ e: TimerEntry) {
        var e = e
        seq &+= 1
        e.seq = seq
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if Self.less(items[i], items[p]) {
                items.swapAt(i, p)
                i = p
            } else {
                break
            }
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(_ now: UInt64) -> TimerEntry? {
        guard let first = items.first, first.deadline <= now else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return first }
        items[0] = last
        var i = 0
        let n = items.count
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < n, Self.less(items[l], items[m]) { m = l }
            if r < n, Self.less(items[r], items[m]) { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return first
    }

    mutating func removeAll() { items.removeAll() }
}
