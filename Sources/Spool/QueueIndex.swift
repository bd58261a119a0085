// What the spool owes: the messages with deliveries not yet finished, the state of each delivery,
// when each is due, and where the records that recovery would need lie (the copies of each
// message record and the latest durable status of each delivery, which the segment ledger counts).
// Built by replaying the log at start-up and kept up to date as records are written. Memory per
// message is its index entry, never its body. Pure: no I/O, no locks (the spool holds its lock).

public struct DeliveryState: Sendable, Equatable {
    public enum Phase: UInt8, Sendable {
        case pending, delivered, failed, removed
    }
    public var phase: Phase = .pending
    public var attempts: UInt32 = 0
    public var nextAttempt: Int64 = 0
    /// The sender was warned of the delay.
    public var warned = false
    /// The version of the status this state comes from (0: none yet).
    public var version: UInt64 = 0

    public init() {}

    /// The state a status record leaves a delivery in.
    mutating func apply(_ s: SpoolStatus) {
        attempts = s.attempts
        version = s.version
        switch s.state {
        case .delivered: phase = .delivered
        case .failed: phase = .failed
        case .removed: phase = .removed
        case .deferred, .deferredWarned:
            phase = .pending
            nextAttempt = s.nextAttempt
            warned = warned || s.state == .deferredWarned
        }
    }
}

public struct PendingMessage: Sendable, Equatable {
    public var id: UInt64
    public var arrival: Int64
    public var deliveries: [DeliveryState]

    public var isFinished: Bool { deliveries.allSatisfy { $0.phase != .pending } }
    /// The earliest next attempt among pending deliveries.
    public var nextAttempt: Int64? {
        var best: Int64? = nil
        for d in deliveries where d.phase == .pending { best = min(best ?? d.nextAttempt, d.nextAttempt) }
        return best
    }
}

/// A delivery's latest durable status record.
struct StatusReference: Sendable, Equatable {
    var location: RecordLocation
    var isFinal: Bool
    var version: UInt64
}

struct IndexEntry: Sendable {
    /// The state as attempts left it (statuses apply here at once, before they are durable).
    var message: PendingMessage
    /// The copies of the message record known to be on disk (compaction adds one before it marks
    /// the old one dead).
    var copies: [RecordLocation]
    /// Copies that may or may not be on disk (written, then the fdatasync meant to cover them
    /// failed): never read, but marked dead with the others.
    var uncertainCopies: [RecordLocation] = []
    /// Per delivery, the latest status record that is durable.
    var statuses: [StatusReference?]
    /// Offered to the scheduler: acknowledged or recovered (false for a withdrawn message).
    var visible: Bool
    /// Dead marks have been asked for.
    var killing = false

    /// Every delivery's durable status is final: nothing about this message can change any more.
    var isDurablyFinished: Bool { statuses.allSatisfy { $0?.isFinal == true } }
}

public struct QueueIndex: Sendable {
    var entries: [UInt64: IndexEntry] = [:]
    var due = DueHeap()
    /// At recovery: statuses met before any copy of their message, the newest per delivery
    /// (see `replay`). Empty once recovery is done.
    var early: [UInt64: [UInt32: (SpoolStatus, RecordLocation)]] = [:]

    public init() {}

    /// Messages the scheduler can still be asked for (not finished, not withdrawn).
    public var pendingCount: Int { entries.values.count { $0.visible && !$0.message.isFinished } }

    /// Messages that have an entry (pending, or finished and not yet marked dead).
    var entryCount: Int { entries.count }

    public func message(_ id: UInt64) -> PendingMessage? { entries[id].map(\.message) }

    // MARK: Building

    /// A message record was made durable (or was replayed): a new entry, or one more copy of an
    /// existing one. Returns false when the entry already existed.
    @discardableResult
    mutating func insert(id: UInt64, arrival: Int64, deliveries: Int, at location: RecordLocation, visible: Bool, schedule: Bool) -> Bool {
        if entries[id] != nil {
            entries[id]!.copies.append(location)
            return false
        }
        let p = PendingMessage(id: id, arrival: arrival, deliveries: Array(repeating: DeliveryState(), count: deliveries))
        entries[id] = IndexEntry(message: p, copies: [location], statuses: Array(repeating: nil, count: deliveries), visible: visible)
        if schedule, visible, !p.isFinished { due.push(0, id) }
        return true
    }

    /// Applies a status to the in-memory state (the record may not be durable yet). Returns false
    /// for an unknown message or delivery.
    @discardableResult
    mutating func apply(_ s: SpoolStatus, schedule: Bool = true) -> Bool {
        guard var e = entries[s.id], Int(s.delivery) < e.message.deliveries.count else { return false }
        e.message.deliveries[Int(s.delivery)].apply(s)
        entries[s.id] = e
        if schedule, e.visible, s.state.isDeferred, let next = e.message.nextAttempt { due.push(next, s.id) }
        return true
    }

    /// A status record is durable at `location`: it becomes the delivery's latest, unless a newer
    /// one (a higher version) already is. Returns whether it is in force now, and the record it
    /// supersedes (no longer needed).
    mutating func statusDurable(_ s: SpoolStatus, at location: RecordLocation) -> (inForce: Bool, superseded: RecordLocation?) {
        guard entries[s.id] != nil, Int(s.delivery) < entries[s.id]!.statuses.count else { return (false, nil) }
        let old = entries[s.id]!.statuses[Int(s.delivery)]
        if let old, old.version > s.version { return (false, nil) }
        entries[s.id]!.statuses[Int(s.delivery)] = StatusReference(location: location, isFinal: s.state.isFinal, version: s.version)
        return (true, old?.location)
    }

    /// Replays one record at recovery, in log order. Schedule with `scheduleAll()` and call
    /// `finishReplay()` afterwards.
    ///
    /// The newest version of each delivery's status wins, wherever it lies: a status may come
    /// before the only live copy of its message (the message was copied forward by compaction
    /// after the status was written, and the copy's snapshot of that state was never made or
    /// did not survive). Such a status is kept aside and applied when the copy comes; one whose
    /// message never comes is of a message already gone.
    mutating func replay(_ r: DecodedRecord) {
        switch r {
        case .live(.message(let m), let at):
            guard insert(id: m.id, arrival: m.arrival, deliveries: m.deliveries.count, at: at, visible: true, schedule: false),
                let waiting = early.removeValue(forKey: m.id)
            else { return }
            for (s, at) in waiting.values.sorted(by: { $0.0.version < $1.0.version }) { replayStatus(s, at: at) }
        case .live(.status(let s), let at):
            guard entries[s.id] != nil else {
                if (early[s.id]?[s.delivery]?.0.version ?? 0) <= s.version { early[s.id, default: [:]][s.delivery] = (s, at) }
                return
            }
            replayStatus(s, at: at)
        case .live, .dead:
            break
        }
    }

    mutating func replayStatus(_ s: SpoolStatus, at: RecordLocation) {
        // An older version (a copy compaction wrote after a newer status) changes nothing.
        guard let e = entries[s.id], Int(s.delivery) < e.statuses.count, (e.statuses[Int(s.delivery)]?.version ?? 0) <= s.version else { return }
        apply(s, schedule: false)
        _ = statusDurable(s, at: at)
    }

    /// Recovery is done: statuses whose message never came are of messages already gone.
    mutating func finishReplay() { early = [:] }

    mutating func remove(_ id: UInt64) -> IndexEntry? { entries.removeValue(forKey: id) }

    // MARK: Scheduling

    /// Schedules a message again at its next attempt, if it still owes deliveries. Called after an
    /// attempt, so no pending delivery is left without a heap entry (an entry taken by a worker
    /// while another one had the message in flight would otherwise be lost). Duplicates are harmless.
    public mutating func reschedule(_ id: UInt64) {
        if let e = entries[id], e.visible, let next = e.message.nextAttempt { due.push(next, id) }
    }

    /// Schedules every message at its next attempt (after a recovery replayed without scheduling).
    public mutating func scheduleAll() {
        due = DueHeap()
        due.items.reserveCapacity(entries.count)
        for (id, e) in entries where e.visible {
            if let next = e.message.nextAttempt { due.push(next, id) }
        }
    }

    /// Messages with a delivery due at `now` (seconds since the epoch), at most `limit`, none of
    /// those in `excluding` (in flight: whoever has one calls `reschedule` when done, so its heap
    /// entry is dropped here).
    public mutating func takeDue(now: Int64, limit: Int = .max, excluding: Set<UInt64> = []) -> [PendingMessage] {
        var out: [PendingMessage] = []
        while out.count < limit, let (t, id) = due.peek(), t <= now {
            due.pop()
            guard let e = entries[id], e.visible, let next = e.message.nextAttempt else { continue }
            if next > now {
                // An older entry: the message is due later now.
                due.push(next, id)
                continue
            }
            if excluding.contains(id) || out.contains(where: { $0.id == id }) { continue }
            out.append(e.message)
        }
        return out
    }

    /// The next time anything is due (stale heap entries are brought up to date first).
    public mutating func nextDue() -> Int64? {
        while let (t, id) = due.peek() {
            guard let e = entries[id], e.visible, let next = e.message.nextAttempt else {
                due.pop()
                continue
            }
            if next == t { return t }
            due.pop()
            due.push(next, id)
        }
        return nil
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
