// What the spool owes: the messages with deliveries not yet finished, where their records lie,
// and when each is due. Built by replaying the log at start-up and kept up to date as records
// are appended. Memory per pending message is its index entry, never its body.

public struct DeliveryState: Sendable, Equatable {
    public enum Phase: UInt8, Sendable {
        case pending, delivered, failed
    }
    public var phase: Phase = .pending
    public var attempts: UInt32 = 0
    public var nextAttempt: Int64 = 0
    /// The sender was warned of the delay.
    public var warned = false
}

public struct PendingMessage: Sendable, Equatable {
    public var id: UInt64
    public var location: RecordLocation
    public var arrival: Int64
    public var deliveries: [DeliveryState]

    public var isFinished: Bool { deliveries.allSatisfy { $0.phase != .pending } }
    /// The earliest next attempt among pending deliveries.
    public var nextAttempt: Int64? { deliveries.filter { $0.phase == .pending }.map(\.nextAttempt).min() }
}

public struct QueueIndex: Sendable {
    public private(set) var messages: [UInt64: PendingMessage] = [:]
    /// Messages not finished, per segment: a segment with none left can be deleted.
    public private(set) var liveBySegment: [UInt64: Int] = [:]
    var due = DueHeap()

    public init() {}

    public var count: Int { messages.count }

    /// Applies a record (replayed at recovery, or just appended). Returns segments emptied by it.
    /// At recovery pass `schedule: false` and call `scheduleAll()` at the end: the due heap then
    /// gets one entry per message instead of one per replayed record.
    @discardableResult
    public mutating func apply(_ record: SpoolRecord, at location: RecordLocation, schedule: Bool = true) -> [UInt64] {
        switch record {
        case .message(let m):
            guard messages[m.id] == nil else { return [] }
            let p = PendingMessage(
                id: m.id, location: location, arrival: m.arrival,
                deliveries: Array(repeating: DeliveryState(), count: m.deliveries.count))
            if p.isFinished { return [] }
            messages[m.id] = p
            liveBySegment[location.segment, default: 0] += 1
            if schedule { due.push(0, m.id) }
            return []
        case .status(let s):
            guard var p = messages[s.id], Int(s.delivery) < p.deliveries.count else { return [] }
            var d = p.deliveries[Int(s.delivery)]
            d.attempts = s.attempts
            switch s.state {
            case .delivered: d.phase = .delivered
            case .failed: d.phase = .failed
            case .deferred, .deferredWarned:
                d.phase = .pending
                d.nextAttempt = s.nextAttempt
                d.warned = d.warned || s.state == .deferredWarned
            }
            p.deliveries[Int(s.delivery)] = d
            if p.isFinished {
                messages[s.id] = nil
                let seg = p.location.segment
                let left = (liveBySegment[seg] ?? 1) - 1
                if left <= 0 {
                    liveBySegment[seg] = nil
                    return [seg]
                }
                liveBySegment[seg] = left
            } else {
                messages[s.id] = p
                if schedule, s.state.isDeferred, let next = p.nextAttempt { due.push(next, s.id) }
            }
            return []
        }
    }

    /// Schedules a message again at its next attempt, if it still owes deliveries. Called after an
    /// attempt, so no pending delivery is left without a heap entry (an entry taken by a worker
    /// while another one had the message in flight would otherwise be lost). Duplicates are harmless.
    public mutating func reschedule(_ id: UInt64) {
        if let p = messages[id], let next = p.nextAttempt { due.push(next, id) }
    }

    /// Schedules every message at its next attempt (after a recovery replayed with `schedule: false`).
    public mutating func scheduleAll() {
        due = DueHeap()
        due.items.reserveCapacity(messages.count)
        for (id, p) in messages {
            if let next = p.nextAttempt { due.push(next, id) }
        }
    }

    /// Messages with a delivery due at `now` (seconds since the epoch), at most `limit`.
    public mutating func takeDue(now: Int64, limit: Int = .max) -> [PendingMessage] {
        var out: [PendingMessage] = []
        while out.count < limit, let (t, id) = due.peek(), t <= now {
            due.pop()
            guard let p = messages[id], let next = p.nextAttempt else { continue }
            if next > now {
                // An older entry: the message is due later now.
                due.push(next, id)
                continue
            }
            if out.contains(where: { $0.id == id }) { continue }
            out.append(p)
        }
        return out
    }

    /// The next time anything is due (stale heap entries are brought up to date first).
    public mutating func nextDue() -> Int64? {
        while let (t, id) = due.peek() {
            guard let p = messages[id], let next = p.nextAttempt else {
                due.pop()
                continue
            }
            if next == t { return t }
            due.pop()
            due.push(next, id)
        }
        return nil
    }

    /// Segments that hold no unfinished message, given the segments on disk.
    public func emptySegments(among all: [UInt64]) -> [UInt64] {
        all.filter { liveBySegment[$0] == nil }
    }
}

/// A min-heap of (time, id).
struct DueHeap: Sendable {
    var items: [(Int64, UInt64)] = []

    func peek() -> (Int64, UInt64)? { items.first }

    mutating func push(_ t: Int64, _ id: UInt64) {
        items.append((t, id))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[i].0 < items[p].0 else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() {
        guard !items.isEmpty else { return }
        let last = items.removeLast()
        guard !items.isEmpty else { return }
        items[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count, items[l].0 < items[m].0 { m = l }
            if r < items.count, items[r].0 < items[m].0 { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
    }
}
