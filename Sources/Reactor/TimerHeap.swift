// A binary min-heap of deadlines. Connection idle timeouts use one entry per connection that is
// re-armed lazily (the connection keeps its real deadline; an expired entry whose connection has
// moved its deadline is pushed again), so activity costs no heap operation and 10k sessions
// need no 10k timerfds. Each connection knows its entry's position, so closing a connection
// removes its entry at once: a churn of short connections leaves nothing behind in the heap.

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

    @inline(__always)
    private mutating func place(_ e: TimerEntry, at i: Int) {
        items[i] = e
        e.connection?.heapIndex = i
    }

    mutating func push(_ e: TimerEntry) {
        var e = e
        seq &+= 1
        e.seq = seq
        items.append(e)
        siftUp(items.count - 1)
    }

    private mutating func siftUp(_ start: Int) {
        var i = start
        let e = items[i]
        while i > 0 {
            let p = (i - 1) / 2
            guard Self.less(e, items[p]) else { break }
            place(items[p], at: i)
            i = p
        }
        place(e, at: i)
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        let e = items[i]
        let n = items.count
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = l
            if l >= n { break }
            if r < n, Self.less(items[r], items[l]) { m = r }
            guard Self.less(items[m], e) else { break }
            place(items[m], at: i)
            i = m
        }
        place(e, at: i)
    }

    /// Removes the entry at `index` (a connection's, when it closes).
    mutating func remove(at index: Int) {
        guard index >= 0, index < items.count else { return }
        items[index].connection?.heapIndex = -1
        let last = items.removeLast()
        guard index < items.count else { return }
        place(last, at: index)
        siftDown(index)
        siftUp(index)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(_ now: UInt64) -> TimerEntry? {
        guard let first = items.first, first.deadline <= now else { return nil }
        remove(at: 0)
        return first
    }

    mutating func removeAll() { items.removeAll() }
}
