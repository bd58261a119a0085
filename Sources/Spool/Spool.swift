// The spool: an append-only log of records in segment files, made durable by group commit, with
// the queue index of what it owes. See docs/spool.md for the format, the rules and the failure
// handling.
//
// All file I/O happens on one writer thread. Callers (event loops, delivery workers, the courier)
// only queue work and are told when it is durable: a slow or frozen disk stalls the writer, never a
// caller. The writer takes everything queued, writes it, runs one fdatasync for the lot and then
// answers every item it covered (sessions finishing DATA while one fdatasync runs share the next).
//
// What a failure does:
// - A message from a client that cannot be written (no space, I/O error) is refused: the client
//   gets 452/451 and tries again later. Its bytes are cut back; if that fails too, or the
//   fdatasync covering it failed, the message is withdrawn (statuses "removed") so it is never
//   delivered — the client was not told it was accepted.
// - What the spool itself owes the log (delivery statuses, reports, dead marks) is never dropped:
//   it is retried, in order, until it is written. Meanwhile new mail is refused and delivery pauses
//   (`deliveriesPaused`), so nothing is delivered whose status could not be recorded. On the first
//   "no space" the reserve file (SPOOL/reserve) is given up to make room for them; mail is refused
//   until it can be made again.
// - Segments are deleted only as the ledger allows (SegmentLedger.swift: the invariant).

import CTernSystem
import Glibc
import Synchronization

/// Where a record lies: its segment and byte range.
public struct RecordLocation: Sendable, Equatable, Hashable {
    public var segment: UInt64
    public var offset: Int
    public var length: Int

    public init(segment: UInt64, offset: Int, length: Int) {
        self.segment = segment
        self.offset = offset
        self.length = length
    }
}

/// Settings of a spool (tests shrink them).
public struct SpoolOptions: Sendable {
    /// A segment is closed and the next begun when a record would take it past this size.
    public var segmentSize = 64 * 1024 * 1024
    /// Bytes kept in SPOOL/reserve and given up when the disk is full, so statuses still fit.
    public var reserveBytes = 1024 * 1024
    /// Queued bytes beyond which new mail is refused (a disk slower than the clients).
    public var maxQueuedBytes = 256 * 1024 * 1024
    /// Seconds the writer may wait on one batch before `condition` says the disk is stalled.
    public var stallAfter: Double = 5
    /// Seconds between attempts to write what could not be written.
    public var retryInterval: Double = 1
    /// At most this many bytes per batch (one fdatasync).
    public var batchBytes = 32 * 1024 * 1024

    public init() {}
}

/// What the spool can take right now.
public enum SpoolCondition: Sendable, Equatable, CustomStringConvertible {
    case ok
    /// The disk is full: what the spool owes could not all be written, or the reserve is given up.
    case full
    /// Writes fail with this error (retried).
    case failing(String)
    /// The writer has waited on the disk this many seconds.
    case stalled(Double)
    case closed

    public var description: String {
        switch self {
        case .ok: return "ok"
        case .full: return "the spool's disk is full"
        case .failing(let e): return "spool writes fail: \(e)"
        case .stalled(let s): return "the spool's disk has not answered for \(Int(s)) s"
        case .closed: return "the spool is closed"
        }
    }
}

/// A message handed to `accept`, to abandon it if the answer takes too long.
public struct AcceptTicket: Sendable, Hashable {
    public let id: UInt64
}

public enum AcceptResult: Sendable {
    /// Queued: the completion will say whether it was stored.
    case queued(AcceptTicket)
    /// Refused at once (nothing written; the completion is not called).
    case refused(SpoolCondition)
}

/// What became of an accepted message.
public enum AcceptOutcome: Sendable, Equatable {
    /// Durable and queued for delivery: answer 250.
    case stored
    /// Not stored (the client must be told so): why.
    case failed(SpoolCondition)
}

/// What recovery found.
public struct RecoveryReport: Sendable, Equatable {
    public var segments = 0
    public var records = 0
    /// Messages owing deliveries after recovery.
    public var pendingMessages = 0
    /// Bytes cut from the end of the last segment (a torn write), and the message whose record
    /// was being written there, when its header survived (it was never acknowledged).
    public var truncatedBytes = 0
    public var tornMessage: UInt64? = nil
    /// Damage found (each region resynchronised after; the segment is kept in SPOOL/damaged/).
    public var damage: [SpoolDamage] = []
    /// Messages whose records were damaged (their ids were readable): lost.
    public var lostMessages: [UInt64] = []
    /// Messages whose delivery statuses were damaged: those deliveries may be repeated.
    public var lostStatuses: [UInt64] = []
    /// Messages whose record's state word was damaged: taken as still owed (they may have been
    /// finished, and so be delivered again).
    public var revivedMessages: [UInt64] = []
    /// Damaged regions whose contents could not be identified.
    public var unidentifiedDamage = 0
    /// Where damaged segments will be kept (moved there once nothing in them is owed; they stay
    /// in the spool until then), and the bytes of a suspicious torn tail, by path.
    public var savedCopies: [String] = []
    /// Messages taken over from segments of record format 1.
    public var migratedMessages = 0
    /// Segments deleted at start-up because nothing in them mattered any more.
    public var deletedSegments = 0
    public var seconds: Double = 0

    public var corruptions: [String] { damage.map(\.description) }
}

/// What could not be written before the spool closed.
public struct CloseReport: Sendable, Equatable {
    /// Messages whose delivery statuses were not recorded: those deliveries may be repeated.
    public var unrecordedStatuses: [UInt64] = []
    /// Reports (DSNs) not stored.
    public var unstoredReports: [UInt64] = []
}

public final class Spool: @unchecked Sendable {
    public let directory: String
    public private(set) var options: SpoolOptions
    public var segmentSize: Int { options.segmentSize }
    let fs: any SpoolFileSystem

    let lock = PThreadLock()
    // MARK: Guarded by `lock`
    var index = QueueIndex()
    var ledger = SegmentLedger()
    /// Work for the writer, in order.
    var queue: [WriteItem] = []
    var queuedBytes = 0
    /// Accepted messages not answered yet, by id.
    var tickets: [UInt64: TicketState] = [:]
    /// What the spool owes could not be written (it is retried): new mail is refused meanwhile.
    var blocked: SpoolError? = nil
    /// The reserve exists (or could never be made: then it is not waited for).
    var reserveHeld = false
    var reserveWanted = true
    /// The reserve was given up, or could not be made at start-up: its return is worth a log line.
    var reserveMissed = false
    /// A client's message could not be written for want of space: new mail is refused (`.full`,
    /// so at MAIL, before anyone sends a body) until the file system has room for one that size
    /// (up to 64 KiB) and 64 KiB more again, a message is stored, or a minute has passed (then one
    /// more is tried).
    var noSpaceFor: (bytes: Int, since: Double)? = nil
    /// Called (with the lock held: it may only hand work to another thread) when the spool
    /// stops or starts taking mail for a reason the writer sees — the disk full, writes failing,
    /// the reserve given up or back. (A stall is a matter of time: `condition` says it.)
    var conditionHook: (@Sendable () -> Void)? = nil
    /// When the writer began the batch it is working on (monotonic seconds).
    var busySince: Double? = nil
    var stopping = false
    var closed = false
    var key = SpoolKey.random()
    var nextID: UInt64 = 0
    /// The version of the last status recorded (see `SpoolStatus.version`).
    var statusVersion: UInt64 = 0
    var writer: pthread_t? = nil
    /// Copies of internal messages whose write failed with an unknown outcome: kept with the
    /// message once it is stored.
    var uncertainCopies: [UInt64: [RecordLocation]] = [:]
    /// Segments queued for compaction, and the bytes in force each held when last tried.
    var compactionQueued: Set<UInt64> = []
    var compactionTried: [UInt64: Int] = [:]
    /// Byte ranges of large dead records to free.
    var holesToPunch: [(UInt64, Int, Int)] = []
    /// When the writer last began a turn (monotonic seconds; 0: retry at once).
    var lastAttempt = 0.0
    /// Where streamed bodies are appended (BodyStream), off the loops.
    let stager = Stager()
    /// Bytes of bodies being received that streams keep in memory (BodyStream), and how much
    /// they may keep together before each spills to a file past its first 64 KiB.
    let inlineHeld = Atomic<Int>(0)
    public let inlineBudget = 32 << 20
    /// What streams under their floor may hold past `inlineBudget`.
    public let floorAllowance = 16 << 20
    /// What the stager owes the disk, over every stream.
    public let backlog = StagingBacklog()
    /// What streams keep in memory now (for tests and the status output).
    public var inlineBytes: Int { inlineHeld.load(ordering: .relaxed) }
    /// fdatasync calls made (for tests and the group-commit benchmark).
    public internal(set) var syncCount = 0
    /// Where the spool says what went wrong and what it did about it (set before `recover`).
    public var log: @Sendable (String) -> Void = { _ in }
    /// Called (outside the lock) when messages became due: the delivery workers' wake-up.
    public var onWork: (@Sendable () -> Void)? = nil

    // MARK: Writer thread only (and `recover`, before the writer starts)
    var markHandles: [UInt64: SpoolFile] = [:]
    var file: SpoolFile? = nil
    /// The spool folder itself, locked (flock) from `recover()` until `close()` or `halt()`: one
    /// spool, one writer process (two would delete each other's live segments). A lock on a file
    /// in it could be deleted or replaced under a running ternd; the folder cannot be while it is
    /// open and holds the segments. The one place that ensures it.
    var lockFile: SpoolFile? = nil
    /// `folderMoved()`'s last look, and what it saw.
    var folderCheckedAt: Double = 0
    var folderWasMoved = false
    /// Something was written to `file` since its last fdatasync.
    var dirty = false
    var segment: UInt64 = 0
    var offset = 0

    enum TicketState {
        case queued, writing, abandoned
    }

    /// Work for the writer thread.
    enum WriteItem {
        /// A client's message: refused when it cannot be written.
        case accept(id: UInt64, record: PendingRecord, deliveries: Int, arrival: Int64, completion: @Sendable (AcceptOutcome) -> Void)
        /// A message the spool makes itself (a report): never dropped.
        case report(id: UInt64, bytes: [UInt8], deliveries: Int, arrival: Int64)
        case status(SpoolStatus, bytes: [UInt8], durable: (@Sendable () -> Void)?)
        /// Dead marks on copies of a message's record; `finishing`: all of them (the message is done).
        case kill(id: UInt64, copies: [RecordLocation], finishing: Bool)
        /// Copy the records still in force out of a segment.
        case compact(UInt64)
        /// A record copied by compaction (verbatim): a message copy, or a status.
        case copy(id: UInt64, bytes: [UInt8], status: SpoolStatus?, from: RecordLocation)

        var size: Int {
            switch self {
            case .accept(_, let r, _, _, _): return r.count
            case .report(_, let b, _, _), .status(_, let b, _), .copy(_, let b, _, _): return b.count
            case .kill, .compact: return 64
            }
        }

        /// What it holds in memory: a streamed body's bytes are on its staged file, not here
        /// (`maxQueuedBytes` bounds memory; the batch bound, `size`, counts what is written).
        var memory: Int {
            if case .accept(_, let r, _, _, _) = self { return r.head.count + r.tail.count }
            return size
        }

        var isMark: Bool {
            if case .kill = self { return true }
            return false
        }

        /// Written whatever it takes (retried in order until it is).
        var isOwed: Bool {
            if case .accept = self { return false }
            return true
        }
    }

    /// Opens (creating) the spool folder. Call `recover()` before anything else.
    public init(directory: String, options: SpoolOptions = SpoolOptions(), fileSystem: any SpoolFileSystem = PosixFileSystem.shared) throws(SpoolError) {
        self.directory = directory
        self.options = options
        self.fs = fileSystem
        try fs.makeDirectories(directory)
    }

    /// For the tests of earlier days: `Spool(directory:segmentSize:)`.
    public convenience init(directory: String, segmentSize: Int) throws(SpoolError) {
        var o = SpoolOptions()
        o.segmentSize = segmentSize
        try self.init(directory: directory, options: o)
    }

    deinit {
        if writer != nil { _ = close(grace: 0) }
        releaseLock()
    }

    var damagedDirectory: String { "\(directory)/damaged" }
    var reservePath: String { "\(directory)/reserve" }
    var keyPath: String { "\(directory)/key" }

    func segmentPath(_ n: UInt64) -> String { SegmentFiles.path(directory, n) }

    /// Segment numbers present, in order.
    public func segments() -> [UInt64] { Self.segments(in: directory, fs: fs) }

    static func segments(in directory: String, fs: any SpoolFileSystem) -> [UInt64] {
        ((try? fs.list(directory)) ?? []).compactMap(SegmentFiles.number).sorted()
    }

    // MARK: Public state

    /// What the spool can take now (`ok`, or why mail should be refused).
    public var condition: SpoolCondition { lock.locked { conditionLocked() } }

    func conditionLocked() -> SpoolCondition {
        if closed || stopping { return .closed }
        if folderMoved() { return .failing("the spool folder \(directory) was moved or replaced while ternd runs (put it back, or restart ternd)") }
        if let b = blocked { return b.isNoSpace ? .full : .failing(b.description) }
        if reserveWanted && !reserveHeld { return .full }
        if let n = noSpaceFor {
            let free = fs.freeBytes(directory) ?? .max
            // Room for a message of that size (at most 64 KiB: one large message that does not
            // fit must not keep small ones out; SIZE= at MAIL refuses large ones early) and
            // 64 KiB to spare.
            if free - min(n.bytes, 64 * 1024) >= 64 * 1024 || monotonicSeconds() - n.since >= 60 {
                noSpaceFor = nil
            } else {
                return .full
            }
        }
        if let t = busySince {
            let waited = monotonicSeconds() - t
            if waited >= options.stallAfter { return .stalled(waited) }
        }
        // A body append that waits as long counts the same (the disk does not take writes).
        if let waited = stager.busySeconds, waited >= options.stallAfter { return .stalled(waited) }
        return .ok
    }

    /// The folder this spool locked is no longer at its path (`mv spool spool.old; mkdir spool`):
    /// what is read and created by path would then go to another folder, perhaps another
    /// ternd's. Checked at most once a second, under the lock; logged once.
    func folderMoved() -> Bool {
        if monotonicSeconds() - folderCheckedAt >= 1, let f = lockFile { noteFolder(moved: !fs.stillNames(directory, f)) }
        return folderWasMoved
    }

    /// Records what a look at the folder found (under the lock) and logs a change, once.
    func noteFolder(moved: Bool) {
        folderCheckedAt = monotonicSeconds()
        if moved && !folderWasMoved { log("spool: \(directory) is no longer the folder this spool locked (moved or replaced while ternd runs): new mail is refused and delivery paused until it is back; restart ternd to use the folder now there") }
        // (Back: segments go on being created in it; `ensureFolderIsOurs` guards each one.)
        if !moved && folderWasMoved { log("spool: \(directory) is back; mail is accepted and delivered again") }
        folderWasMoved = moved
    }

    /// Delivery must wait: a status could not be recorded, so another delivery's might not be
    /// either (it would be repeated after a restart).
    /// Also while the disk stalls (a write has waited `stallAfter`): a delivery made then could
    /// not have its status recorded before a stop either. And while the spool folder is not where
    /// it was (`folderMoved`).
    public var deliveriesPaused: Bool {
        lock.locked {
            if folderMoved() { return true }
            if blocked != nil { return true }
            if let t = busySince, monotonicSeconds() - t >= options.stallAfter { return true }
            return false
        }
    }

    /// Messages owing deliveries.
    public var pendingCount: Int { lock.locked { index.pendingCount } }

    /// What the index holds for a message, as people read it (for diagnostics).
    public func describe(_ id: UInt64) -> String {
        lock.locked {
            guard let e = index.entries[id] else { return "no entry" }
            return "visible \(e.visible), killing \(e.killing), copies \(e.copies.map { "\($0.segment):\($0.offset)" }), uncertain \(e.uncertainCopies.count), deliveries \(e.message.deliveries.map { "\($0.phase)/\($0.attempts)" }), durable \(e.statuses.map { $0.map { "\($0.location.segment):\($0.isFinal)" } ?? "-" })"
        }
    }

    /// How long the writer has been in its current turn (nil: idle).
    public var writerBusySeconds: Double? { lock.locked { busySince.map { monotonicSeconds() - $0 } } }

    /// What waits to be written, in order, as people read it (for diagnostics).
    public var queuedWork: [String] {
        lock.locked {
            queue.map { item -> String in
                switch item {
                case .accept(let id, let r, _, _, _): return "message \(QueueID.text(id)) (\(r.count) bytes)"
                case .report(let id, let b, _, _): return "report \(QueueID.text(id)) (\(b.count) bytes)"
                case .status(let s, _, _): return "status \(s.state) of \(QueueID.text(s.id))/\(s.delivery)"
                case .kill(let id, let copies, _): return "dead marks for \(QueueID.text(id)) at \(copies.map { "\($0.segment):\($0.offset)" })"
                case .compact(let s): return "compaction of segment \(s)"
                case .copy(let id, _, let st, _): return st == nil ? "copy of \(QueueID.text(id))" : "copy of a status of \(QueueID.text(id))"
                }
            }
        }
    }

    /// The state of a message's deliveries, as the scheduler sees it.
    public func pendingMessage(_ id: UInt64) -> PendingMessage? { lock.locked { index.message(id) } }

    /// Every message owing deliveries, by id (without taking them from the scheduler).
    public var pendingMessages: [PendingMessage] {
        lock.locked { index.entries.values.filter { $0.visible && !$0.message.isFinished }.map(\.message).sorted { $0.id < $1.id } }
    }

    /// Whether a message of `size` bytes would fit in what the spool's file system has free now
    /// (nil: it cannot tell). For SIZE= at MAIL (RFC 1870: 452 4.3.1 before the data is sent).
    public func hasRoom(for size: Int) -> Bool? {
        guard let free = fs.freeBytes(directory) else { return nil }
        return free - size >= 64 * 1024
    }

    /// `f` is called soon after the spool stops or starts taking mail for a reason the writer
    /// sees (see `conditionHook`); it must only hand work to another thread.
    public func onConditionChange(_ f: @escaping @Sendable () -> Void) { lock.locked { conditionHook = f } }

    /// The largest message `hasRoom` says yes to now (nil: unknown, taken as room).
    public var room: Int? { fs.freeBytes(directory).map { max($0 - 64 * 1024, 0) } }

    /// How long a write may wait before the spool counts as stalled (SIGHUP changes it).
    public func setStallAfter(_ seconds: Double) { lock.locked { options.stallAfter = seconds } }

    /// Current segment number.
    public var currentSegment: UInt64 { lock.locked { ledger.current } }

    /// A new message id: milliseconds since the epoch in the high bits, unique and increasing.
    public func newID() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let base = (UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000) << 16
        return lock.locked {
            nextID = max(nextID + 1, base)
            return nextID
        }
    }

    /// The spool's record key (for encoding records elsewhere, as spoolfill does).
    public var recordKey: SpoolKey { lock.locked { key } }

    // MARK: Queueing work

    /// Stores a client's message. `completion` runs on the writer thread once the message is
    /// durable and queued for delivery, or failed; it is not called when the result is `refused`
    /// or after a successful `abandon`.
    public func accept(_ message: SpoolMessage, bodyParts: [[UInt8]]? = nil, completion: @escaping @Sendable (AcceptOutcome) -> Void) -> AcceptResult {
        var bytes: [UInt8] = []
        let k = recordKey
        SpoolRecord.encodeMessage(message, bodyParts: bodyParts ?? [message.body], into: &bytes, key: k)
        return enqueueAccept(message, PendingRecord(head: bytes), completion: completion)
    }

    func enqueueAccept(_ message: SpoolMessage, _ record: PendingRecord, completion: @escaping @Sendable (AcceptOutcome) -> Void) -> AcceptResult {
        lock.locked {
            let c = conditionLocked()
            switch c {
            case .ok, .stalled: break
            default: return .refused(c)
            }
            if queuedBytes + record.head.count + record.tail.count > options.maxQueuedBytes && queuedBytes > 0 { return .refused(.stalled(busySince.map { monotonicSeconds() - $0 } ?? 0)) }
            tickets[message.id] = .queued
            enqueueLocked(.accept(id: message.id, record: record, deliveries: message.deliveries.count, arrival: message.arrival, completion: completion))
            return .queued(AcceptTicket(id: message.id))
        }
    }

    /// Gives up waiting for an accepted message (the client will be told it was not accepted).
    /// Returns false when it is too late: the message is stored and its completion is on its way.
    /// After true the message is never delivered: still queued, it is dropped; being written, it
    /// is withdrawn once written.
    public func abandon(_ ticket: AcceptTicket) -> Bool {
        lock.locked {
            guard let state = tickets[ticket.id] else { return false }
            switch state {
            case .queued:
                tickets[ticket.id] = nil
                if let i = queue.firstIndex(where: { if case .accept(let id, _, _, _, _) = $0 { return id == ticket.id }; return false }) {
                    queuedBytes -= queue[i].memory
                    queue.remove(at: i)
                }
                return true
            case .writing:
                tickets[ticket.id] = .abandoned
                return true
            case .abandoned:
                return true
            }
        }
    }

    /// Stores a message the spool itself sends (a delivery report). Never refused: it is written
    /// as soon as the disk allows, in order with the statuses recorded after it (so a failure's
    /// report is durable before the failure is).
    public func storeReport(_ message: SpoolMessage) {
        let bytes = SpoolRecord.message(message).encoded(key: recordKey)
        lock.locked { enqueueLocked(.report(id: message.id, bytes: bytes, deliveries: message.deliveries.count, arrival: message.arrival)) }
    }

    /// Records the outcome of a delivery attempt. It applies at once (the scheduler will not offer
    /// the delivery again unless it was deferred) and is written as soon as the disk allows;
    /// `durable` is called (on the writer thread) once it is.
    public func record(_ status: SpoolStatus, durable: (@Sendable () -> Void)? = nil) {
        lock.locked {
            var s = status
            statusVersion += 1
            s.version = statusVersion
            index.apply(s)
            enqueueLocked(.status(s, bytes: SpoolRecord.status(s).encoded(key: key), durable: durable))
        }
    }

    /// Waits until everything queued so far is written (or `timeout` seconds passed). Returns
    /// whether the queue is empty.
    @discardableResult
    public func waitForWrites(timeout: Double = 30) -> Bool {
        let deadline = monotonicSeconds() + timeout
        return lock.locked {
            while !queue.isEmpty || busySince != nil {
                let left = deadline - monotonicSeconds()
                if left <= 0 || writer == nil { return false }
                lock.wait(seconds: min(left, 0.05))
            }
            return true
        }
    }

    func enqueueLocked(_ item: WriteItem) {
        queue.append(item)
        queuedBytes += item.memory
        lock.broadcast()
    }

    // MARK: Scheduling (the queue index under the spool's lock)

    public func takeDue(now: Int64, limit: Int = .max, excluding: Set<UInt64> = []) -> [PendingMessage] {
        lock.locked { index.takeDue(now: now, limit: limit, excluding: excluding) }
    }

    public func nextDue() -> Int64? { lock.locked { index.nextDue() } }

    public func reschedule(_ id: UInt64) { lock.locked { index.reschedule(id) } }

    // MARK: Reading messages back

    /// Reads a message back (for delivery).
    public func readMessage(_ id: UInt64) throws(SpoolError) -> SpoolMessage {
        var tried: Set<RecordLocation> = []
        var last: SpoolError? = nil
        // A copy may move meanwhile (compaction writes a new one, marks the old one dead, deletes
        // its segment): every copy the index holds is tried before giving up.
        while let at = lock.locked({ index.entries[id]?.copies.first(where: { !tried.contains($0) }) }) {
            tried.insert(at)
            do throws(SpoolError) {
                if case .message(let m) = try read(at) { return m }
            } catch {
                last = error
            }
        }
        throw last ?? SpoolError(operation: "read", path: "message \(QueueID.text(id))", errno: ENOENT)
    }

    /// Reads one record back.
    public func read(_ at: RecordLocation) throws(SpoolError) -> SpoolRecord {
        let path = segmentPath(at.segment)
        let f = try fs.open(path, writable: false)
        defer { fs.close(f) }
        let buf = try fs.read(f, count: at.length, at: at.offset)
        guard buf.count == at.length else { throw SpoolError(operation: "read", path: path, errno: EIO) }
        let k = recordKey
        let v1 = buf.withUnsafeBytes { SpoolRecord.isVersion1($0) }
        switch buf.withUnsafeBytes({ v1 ? SpoolRecord.decodeV1($0) : SpoolRecord.decode($0, key: k) }) {
        case .record(let r, _): return r
        default: throw SpoolError(operation: "decode", path: path, errno: EIO)
        }
    }

    // MARK: Closing

    /// Stops taking new work, writes what is queued (waiting at most `grace` seconds for a disk
    /// that refuses), closes the current segment in good order and stops the writer.
    /// - Returns: what could not be written.
    @discardableResult
    public func close(grace: Double = 5) -> CloseReport {
        if stopWriter(deadline: monotonicSeconds() + grace, halting: false) { releaseLock() }
        return lock.locked {
            closed = true
            var report = CloseReport()
            for item in queue {
                switch item {
                case .status(let s, _, _): report.unrecordedStatuses.append(s.id)
                case .report(let id, _, _, _): report.unstoredReports.append(id)
                default: break
                }
            }
            queue.removeAll()
            return report
        }
    }

    var closeDeadline: Double = 0

    /// Tells the writer to stop (after its turn, or once `deadline` passes with work owed) and
    /// waits for it: `close()` and `halt()`.
    /// Returns false when the writer did not stop within 5 s of `deadline` (a disk that does
    /// not answer at all: the writer is stuck in a system call). It is left behind then — the
    /// process is ending; nothing it was writing was acknowledged — and the lock is kept.
    @discardableResult
    func stopWriter(deadline: Double, halting: Bool) -> Bool {
        let t: pthread_t? = lock.locked {
            stopping = true
            if halting { self.halting = true }
            closeDeadline = deadline
            lock.broadcast()
            let t = writer
            writer = nil
            return t
        }
        guard let t else { return true }
        if halting {
            pthread_join(t, nil)
            return true
        }
        if tern_join_within(t, max(0, deadline - monotonicSeconds()) + 5) == 0 { return true }
        pthread_detach(t)
        log("spool: the disk of \(directory) does not answer; stopping without the writer (nothing it was writing was acknowledged)")
        return false
    }
    func releaseLock() {
        let f: SpoolFile? = lock.locked {
            defer { lockFile = nil }
            return lockFile
        }
        if let f { fs.close(f) }
    }

    /// `halt()`: the writer stops after its turn, writing nothing more.
    var halting = false
    /// How far the current segment is known to be on disk (the last fdatasync covered it).
    var durableEnd = (segment: UInt64(0), offset: 0)

    /// Stops the writer after the turn it is in, without writing or syncing anything more, as a
    /// process killed then would (for tests of what a crash leaves). Returns how far the current
    /// segment was synced: a power cut could lose anything after that.
    @discardableResult
    public func halt() -> (segment: UInt64, offset: Int) {
        stopWriter(deadline: 0, halting: true)
        releaseLock()
        return lock.locked {
            closed = true
            queue.removeAll()
            return durableEnd
        }
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A pthread mutex with one condition variable (Swift's Mutex has no condition variable).
public final class PThreadLock: @unchecked Sendable {
    let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(m, nil)
        pthread_cond_init(c, nil)
    }

    deinit {
        pthread_mutex_destroy(m)
        pthread_cond_destroy(c)
        m.deallocate()
        c.deallocate()
    }

    public func lock() { pthread_mutex_lock(m) }
    public func unlock() { pthread_mutex_unlock(m) }
    public func wait() { pthread_cond_wait(c, m) }
    public func signal() { pthread_cond_signal(c) }
    public func broadcast() { pthread_cond_broadcast(c) }

    /// Waits at most `seconds` (the lock is held on return).
    public func wait(seconds: Double) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let total = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 + max(seconds, 0)
        ts.tv_sec = Int(total)
        ts.tv_nsec = Int((total - Double(Int(total))) * 1e9)
        pthread_cond_timedwait(c, m, &ts)
    }

    public func locked<T>(_ body: () -> T) -> T {
        lock()
        defer { unlock() }
        return body()
    }

    public func lockedThrowing<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
