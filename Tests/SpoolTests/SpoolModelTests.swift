// A model-based randomized test of the spool: random interleavings of what sessions, delivery
// workers and the disk do — accepts (several sessions at once, small and large bodies), deliveries,
// deferrals (with and without a delay warning), failures with their reports, removals, expiry,
// failing and frozen file operations, segments rolling over at tiny sizes, clean restarts, crashes
// (an in-memory file system keeps exactly what a power cut would) and flipped bits — checked after
// every step against a plain model of what was acknowledged and recorded.
//
// What must hold: an acknowledged message is never lost (unless damage was reported naming it, or
// as unidentifiable); a message never acknowledged is never delivered (a crash may bring back one
// whose refusal was not yet on disk); a delivery is never made twice, except after a crash before
// its status was on disk or damage to it (those are counted and reported); a report is on disk
// before the failure it reports; nothing owed is left unwritten by a clean shutdown; and once
// everything is delivered, the spool shrinks back to one segment.
//
// `make test` runs TERN_SPOOL_SEQUENCES (default 1500) seeded sequences; a failure prints its seed,
// and TERN_SPOOL_SEED=N replays that one. `make soak` runs them for TERN_SOAK_SECONDS.

import Foundation
import Spool
import Synchronization
import TernTestSupport
import Testing

struct ModelDelivery {
    var phase: DeliveryState.Phase = .pending
    var attempts: UInt32 = 0
    var next: Int64 = 0
    var warned = false
    var delivered = 0
    /// The sequence number of the latest status recorded for it (0: none).
    var lastStatus = 0
    /// Delivering it again is allowed (its delivered status may have been lost to a crash, or to
    /// damage recovery reported).
    var mayRepeat = false
    var repeatAfterDamage = false

    func matches(_ s: DeliveryState) -> Bool {
        // (When and whether a delay was warned of matter while the delivery is pending only.)
        s.phase == phase && s.attempts == attempts && (phase != .pending || ((attempts == 0 || s.nextAttempt == next) && s.warned == warned))
    }
}

struct ModelMessage {
    var id: UInt64
    var deliveries: [ModelDelivery]
    var acknowledged: Bool
    /// Body bytes (each the low byte of the id); nil when not known.
    var size: Int? = nil
    var isFinished: Bool { deliveries.allSatisfy { $0.phase != .pending } }
}

/// What a run found worth reporting.
struct ModelCounts {
    var sequences = 0
    var steps = 0
    var accepted = 0
    var delivered = 0
    var crashes = 0
    var restarts = 0
    var flips = 0
    var faults = 0
    /// Deliveries made again after a crash lost their status (allowed; reported).
    var repeatedAfterCrash = 0
    /// Deliveries made again after damage (allowed when recovery said so).
    var repeatedAfterDamage = 0
    /// Acknowledged messages lost to reported damage.
    var lostToDamage = 0
    /// Messages never acknowledged that came back after a crash (their refusal was not on disk).
    var unacknowledgedBack = 0

    /// As `perf/soak-spool.sh` reads it: one "name value" a line.
    var report: String {
        "sequences \(sequences)\nsteps \(steps)\nacknowledged \(accepted)\ndeliveries \(delivered)\nrestarts \(restarts)\ncrashes \(crashes)\nflips \(flips)\nfaults \(faults)\nrepeated_after_crash \(repeatedAfterCrash)\nrepeated_after_damage \(repeatedAfterDamage)\nlost_to_damage \(lostToDamage)\nunacknowledged_back \(unacknowledgedBack)\n"
    }

    mutating func add(_ o: ModelCounts) {
        sequences += o.sequences; steps += o.steps; accepted += o.accepted; delivered += o.delivered
        crashes += o.crashes; restarts += o.restarts; flips += o.flips; faults += o.faults
        repeatedAfterCrash += o.repeatedAfterCrash; repeatedAfterDamage += o.repeatedAfterDamage
        lostToDamage += o.lostToDamage; unacknowledgedBack += o.unacknowledgedBack
    }
}

final class Confirmations: Sendable {
    let confirmed = Mutex<Set<Int>>([])
    func insert(_ n: Int) { confirmed.withLock { _ = $0.insert(n) } }
    var all: Set<Int> { confirmed.withLock { $0 } }
}

/// The disk a model run uses: in memory (crashes keep exactly what a power cut would), or the
/// real file system in a temporary folder (a crash loses an arbitrary part of what came after the
/// last fdatasync of the segment being written, as a power cut would).
protocol ModelDisk: AnyObject {
    var fileSystem: any SpoolFileSystem { get }
    var capacity: Int? { get set }
    func freeBytes(_ path: String) -> Int?
    func names(_ directory: String) -> [String]
    func contents(_ path: String) -> [UInt8]?
    func flipBit(_ path: String, bit: Int)
    /// The disk after a crash of `spool` (stopped by then).
    func crash<G: RandomNumberGenerator>(_ spool: Spool, directory: String, using g: inout G) -> ModelDisk
}

final class MemoryDisk: ModelDisk {
    let memory: MemoryFileSystem
    init(_ m: MemoryFileSystem) { memory = m }
    var fileSystem: any SpoolFileSystem { memory }
    var capacity: Int? {
        get { memory.capacity }
        set { memory.capacity = newValue }
    }
    func freeBytes(_ path: String) -> Int? { memory.freeBytes(path) }
    func names(_ directory: String) -> [String] { memory.names(directory) }
    func contents(_ path: String) -> [UInt8]? { memory.contents(path) }
    func flipBit(_ path: String, bit: Int) { memory.flipBit(path, bit: bit) }
    func crash<G: RandomNumberGenerator>(_ spool: Spool, directory: String, using g: inout G) -> ModelDisk {
        let after = MemoryDisk(memory.crashed(using: &g))
        spool.close(grace: 0)
        return after
    }
}

final class RealDisk: ModelDisk {
    var fileSystem: any SpoolFileSystem { PosixFileSystem.shared }
    var capacity: Int? {
        get { nil }
        set {}
    }
    func freeBytes(_ path: String) -> Int? { nil }
    func names(_ directory: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }
    func contents(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }
    func flipBit(_ path: String, bit: Int) {
        guard var d = FileManager.default.contents(atPath: path), !d.isEmpty else { return }
        d[(bit / 8) % d.count] ^= UInt8(1 << (bit % 8))
        try? d.write(to: URL(fileURLWithPath: path))
    }
    func crash<G: RandomNumberGenerator>(_ spool: Spool, directory: String, using g: inout G) -> ModelDisk {
        let synced = spool.halt()
        // What came after the last fdatasync of the segment being written may be lost, from any byte.
        for n in names(directory).compactMap(SegmentFiles.number) where n >= synced.segment {
            let path = SegmentFiles.path(directory, n)
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            let from = n == synced.segment ? synced.offset : 0
            guard size > from else { continue }
            truncate(path, off_t(Int.random(in: from...size, using: &g)))
        }
        return self
    }
}

final class LogLines: Sendable {
    let lines = Mutex<[String]>([])
    func append(_ s: String) { lines.withLock { $0.append(s) } }
    func take() -> [String] { lines.withLock { l in defer { l.removeAll() }; return l } }
}

final class ModelRun {
    let seed: UInt64
    var rng: SplitMix
    var memory: ModelDisk
    var fs: FaultInjectingFileSystem
    var spool: Spool
    let options: SpoolOptions
    let dir: String
    var model: [UInt64: ModelMessage] = [:]
    /// Not acknowledged, possibly written (a failed accept, an abandoned one): never delivered,
    /// except after a crash.
    var maybe: Set<UInt64> = []
    /// Refused at once: never written, never seen.
    var refused: Set<UInt64> = []
    /// Reports queued, with the status whose failure each reports.
    var reports: [UInt64: (message: ModelMessage, after: Int)] = [:]
    var clock: Int64 = 1_000_000
    var nextID: UInt64 = 1
    var statusSeq = 0
    /// Sequence numbers of the statuses the spool said are durable.
    let durable = Confirmations()
    var trace: [String] = []
    let spoolLines = LogLines()
    /// Messages finished and gone from the spool.
    var gone: Set<UInt64> = []
    /// Damage recovery reported ("segment:offset"), and the segments it was in.
    var knownDamage: Set<String> = []
    var damagedSegments: Set<UInt64> = []
    var counts = ModelCounts()
    var failures: [String] = []

    /// `realDirectory`: run on the real file system there (no disk-full steps: it has no capacity to set).
    init(seed: UInt64, realDirectory: String? = nil) throws {
        self.seed = seed
        dir = realDirectory.map { "\($0)/spool" } ?? "/spool"
        rng = SplitMix(seed: seed)
        var o = SpoolOptions()
        o.segmentSize = [1024, 4096, 16 * 1024, 256 * 1024].randomElement(using: &rng)!
        o.retryInterval = 0.001
        o.stallAfter = 0.02
        let capacity: Int? = realDirectory == nil && Int.random(in: 0..<3, using: &rng) == 0 ? Int.random(in: 96...512, using: &rng) * 1024 : nil
        o.reserveBytes = capacity == nil ? 0 : 8 * 1024
        options = o
        memory = realDirectory == nil ? MemoryDisk(MemoryFileSystem(capacity: capacity)) : RealDisk()
        fs = FaultInjectingFileSystem(memory.fileSystem)
        spool = try Spool(directory: dir, options: o, fileSystem: fs)
        attachLog(spool)
        _ = try spool.recover()
        note("segments of \(o.segmentSize) bytes, capacity \(capacity.map(String.init) ?? "none")")
    }

    func note(_ s: String) { trace.append(s) }

    /// What the spool logs goes into the trace.
    func attachLog(_ spool: Spool) {
        let lines = spoolLines
        spool.log = { line in lines.append(line) }
    }

    func drainLog() {
        for line in spoolLines.take() {
            note("  spool: \(line)")
            // A mark refused for a copy that must be there is an inconsistency (for one whose write
            // was never confirmed, it is expected).
            if line.contains("no dead mark at"), !uncertainMarkOK { fail("spool: \(line)") }
        }
    }

    /// Copies of uncertain fate exist (a failed fdatasync): a mark may find nothing to mark.
    var uncertainMarkOK = false

    func fail(_ s: String) {
        failures.append(s)
        note("FAILED: \(s)")
    }

    func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }

    // MARK: Steps

    func step() throws {
        counts.steps += 1
        defer { drainLog() }
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<28: acceptBurst()
        case 28..<60: deliver()
        case 60..<70: clock += Int64.random(in: 0...150, using: &rng)
        case 70..<76: try restart()
        case 76..<81: try crash()
        case 81..<84: try flip()
        case 84..<92: withFault()
        case 92..<95: frozen()
        default: expire()
        }
        if failures.isEmpty { checkMemory() }
    }

    func newMessage() -> SpoolMessage {
        let id = nextID
        nextID += 1
        let large = chance(0.15)
        let size = large ? Int.random(in: 20_000...120_000, using: &rng) : Int.random(in: 10...600, using: &rng)
        let n = Int.random(in: 1...3, using: &rng)
        return SpoolMessage(
            id: id, arrival: clock, sender: "s\(id)@example.test", body: Array(repeating: UInt8(truncatingIfNeeded: id), count: size),
            deliveries: (0..<n).map { SpoolDelivery(kind: .mailbox, recipient: "r\($0)@example.test", destination: "r\($0)@example.test") })
    }

    /// Several sessions finishing DATA at once.
    func acceptBurst() {
        let messages = (0..<Int.random(in: 1...10, using: &rng)).map { _ in newMessage() }
        let results = Mutex<[UInt64: AcceptOutcome?]>([:])
        let group = DispatchGroup()
        for m in messages {
            group.enter()
            let s = spool
            // Some bodies streamed into the spool as they arrive, the others in memory.
            let staged = chance(0.4)
            Thread {
                let r = store(s, m, staged: staged)
                results.withLock { $0[m.id] = r }
                group.leave()
            }.start()
        }
        group.wait()
        for m in messages {
            let r = results.withLock { $0[m.id] } ?? nil
            switch r {
            case .stored?:
                model[m.id] = ModelMessage(id: m.id, deliveries: Array(repeating: ModelDelivery(), count: m.deliveries.count), acknowledged: true, size: m.body.count)
                counts.accepted += 1
            case .failed?: maybe.insert(m.id)
            case nil: refused.insert(m.id)
            }
        }
        note("accept \(messages.map(\.id)): \(messages.map { m in (results.withLock { $0[m.id] } ?? nil).map { "\($0)" } ?? "refused" })")
    }

    /// A delivery worker's turn: what is due is attempted, and each outcome recorded.
    func deliver() {
        guard !spool.deliveriesPaused else { return }
        let due = spool.takeDue(now: clock, limit: Int.random(in: 1...20, using: &rng))
        for p in due {
            guard var m = model[p.id] else {
                if maybe.contains(p.id) || refused.contains(p.id) { fail("message \(p.id) was never acknowledged, and is offered for delivery (\(spool.describe(p.id)))") }
                else if reports[p.id] == nil { fail("message \(p.id) is unknown to the model") }
                continue
            }
            // The body comes back whole (a read that fails, under a fault, is tried later).
            guard let body = try? spool.readMessage(p.id) else {
                spool.reschedule(p.id)
                continue
            }
            let byte = UInt8(truncatingIfNeeded: p.id)
            // (Its size and bytes at both ends and in steps through it: all of it is slow in a debug build.)
            let sampled = stride(from: 0, to: body.body.count, by: 509).allSatisfy { body.body[$0] == byte } && body.body.last.map { $0 == byte } ?? true
            if let size = m.size, body.body.count != size || !sampled {
                fail("message \(p.id) read back with a body of \(body.body.count) bytes, not the \(size) stored")
            }
            for (d, state) in p.deliveries.enumerated() where state.phase == .pending && state.nextAttempt <= clock {
                var md = m.deliveries[d]
                guard md.phase == .pending else {
                    fail("delivery \(p.id)/\(d) is \(md.phase) in the model, offered as pending")
                    continue
                }
                let roll = Int.random(in: 0..<100, using: &rng)
                if roll >= 90 { continue }  // not attempted this time
                statusSeq += 1
                let seq = statusSeq
                md.lastStatus = seq
                let status: SpoolStatus
                switch roll {
                case 0..<45:
                    md.delivered += 1
                    counts.delivered += 1
                    if md.delivered > 1 {
                        if md.mayRepeat {
                            md.mayRepeat = false
                            if md.repeatAfterDamage { counts.repeatedAfterDamage += 1 } else { counts.repeatedAfterCrash += 1 }
                        } else {
                            fail("delivery \(p.id)/\(d) made twice with no crash or damage to excuse it")
                        }
                    }
                    md.phase = .delivered
                    md.attempts += 1
                    status = SpoolStatus(id: p.id, delivery: UInt32(d), state: .delivered, attempts: md.attempts)
                case 45..<75:
                    md.attempts += 1
                    md.next = clock + Int64.random(in: 1...200, using: &rng)
                    md.warned = md.warned || chance(0.2)
                    status = SpoolStatus(id: p.id, delivery: UInt32(d), state: md.warned ? .deferredWarned : .deferred, attempts: md.attempts, nextAttempt: md.next, reason: "451 later \(md.attempts)")
                case 75..<86:
                    md.attempts += 1
                    md.phase = .failed
                    status = SpoolStatus(id: p.id, delivery: UInt32(d), state: .failed, attempts: md.attempts, reason: "550 no")
                    if chance(0.7) { queueReport(for: p.id, statusSeq: seq) }
                default:
                    md.phase = .removed
                    status = SpoolStatus(id: p.id, delivery: UInt32(d), state: .removed, attempts: md.attempts)
                }
                m.deliveries[d] = md
                spool.record(status) { [durable] in durable.insert(seq) }
            }
            model[p.id] = m
            spool.reschedule(p.id)
        }
        note("deliver \(due.map(\.id)) at \(clock)")
    }

    /// A report (DSN) for a failure: stored before the failure's status is recorded.
    func queueReport(for id: UInt64, statusSeq: Int) {
        let r = SpoolMessage(id: nextID, arrival: clock, sender: "", body: Array("report for \(id)".utf8), deliveries: [SpoolDelivery(kind: .mailbox, recipient: "s@x", destination: "s@x")])
        nextID += 1
        spool.storeReport(r)
        reports[r.id] = (ModelMessage(id: r.id, deliveries: [ModelDelivery()], acknowledged: true), statusSeq)
    }

    /// Deliveries past the queue lifetime fail (with a report).
    func expire() {
        let due = spool.takeDue(now: clock, limit: 5)
        for p in due {
            guard var m = model[p.id] else { continue }
            for (d, state) in p.deliveries.enumerated() where state.phase == .pending && state.attempts > 0 {
                statusSeq += 1
                let seq = statusSeq
                queueReport(for: p.id, statusSeq: seq)
                m.deliveries[d].phase = .failed
                m.deliveries[d].attempts += 1
                m.deliveries[d].lastStatus = seq
                spool.record(SpoolStatus(id: p.id, delivery: UInt32(d), state: .failed, attempts: m.deliveries[d].attempts, reason: "expired")) { [durable] in durable.insert(seq) }
            }
            model[p.id] = m
            spool.reschedule(p.id)
        }
    }

    /// Some file operation fails for a while, with ENOSPC, EIO or EROFS, while sessions and
    /// workers go on.
    func withFault() {
        counts.faults += 1
        // (Faults while recovering are tested on their own: here the running spool meets them.)
        let op: FaultInjectingFileSystem.Operation = [.write, .write, .sync, .sync, .create, .syncDirectory, .unlink, .truncate, .open, .read].randomElement(using: &rng)!
        let errno: Int32 = [ENOSPC, EIO, EROFS].randomElement(using: &rng)!
        let calls = Int.random(in: 1...6, using: &rng)
        if op == .sync { uncertainMarkOK = true }
        let left = Atomic<Int>(calls)
        fs.setRule { call in
            guard call.operation == op, !call.path.hasSuffix("/reserve"), !call.path.hasSuffix("/reserve.new") else { return nil }
            return left.subtract(1, ordering: .relaxed).newValue >= 0 ? .fail(errno) : nil
        }
        note("fault: \(calls) × \(op) fail with errno \(errno)")
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            if chance(0.5) { acceptBurst() } else { deliver() }
        }
        fs.setRule(nil)
        settle("the fault cleared")
    }

    /// Waits for what is queued to be written. A disk that stays really full (its reserve used
    /// up, nothing left to free) is given more room, as an operator would.
    func settle(_ after: String) {
        var fullSince: Date? = nil
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if spool.waitForWrites(timeout: 0.02) { return }
            guard spool.condition == .full, let cap = memory.capacity else {
                fullSince = nil
                continue
            }
            if let since = fullSince, Date().timeIntervalSince(since) > 0.2 {
                memory.capacity = cap + 256 * 1024
                note("disk full: the operator adds 256 KiB")
                fullSince = nil
            } else if fullSince == nil {
                fullSince = Date()
            }
        }
        fail("writes not done after \(after) (\(spool.condition)); queued: \(spool.queuedWork.prefix(8)); writer busy \(spool.writerBusySeconds.map { String(Int($0 * 1000)) + " ms" } ?? "no"), \(fs.blockedCalls) calls blocked; free \(memory.freeBytes(dir).map(String.init) ?? "-")")
    }

    /// The disk freezes: sessions get no durable answer; some give up (abandon); then it thaws.
    func frozen() {
        let op: FaultInjectingFileSystem.Operation = chance(0.5) ? .write : .sync
        fs.setRule { $0.operation == op && !$0.path.hasSuffix("reserve") && !$0.path.hasSuffix("(unnamed)") ? .block : nil }
        var tickets: [(AcceptTicket, UInt64)] = []
        let answered = Mutex<[UInt64: AcceptOutcome]>([:])
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let m = newMessage()
            switch submit(spool, m, staged: chance(0.4), completion: { o in answered.withLock { $0[m.id] = o } }) {
            case .queued(let t)?: tickets.append((t, m.id))
            case .refused?, nil: refused.insert(m.id)
            }
        }
        if chance(0.5) { deliver() }
        // Until the writer is stuck on the disk (or has nothing to write).
        _ = waitUntil(2) { fs.blockedCalls > 0 || (spool.queuedWork.isEmpty && spool.writerBusySeconds == nil) }
        var abandoned: Set<UInt64> = []
        for (t, id) in tickets where chance(0.6) {
            if spool.abandon(t) { abandoned.insert(id) }
        }
        note("frozen \(op): queued \(tickets.map(\.1)), abandoned \(abandoned.sorted())")
        fs.setRule(nil)
        fs.release()
        settle("the thaw")
        for (_, id) in tickets {
            if abandoned.contains(id) {
                if answered.withLock({ $0[id] }) != nil { fail("abandoned message \(id) was answered") }
                maybe.insert(id)
                continue
            }
            guard waitUntil(10, { answered.withLock { $0[id] } != nil }) else {
                fail("message \(id) never answered")
                continue
            }
            if answered.withLock({ $0[id] }) == .stored {
                model[id] = ModelMessage(id: id, deliveries: Array(repeating: ModelDelivery(), count: spool.pendingMessage(id)?.deliveries.count ?? 0), acknowledged: true)
                if spool.pendingMessage(id) == nil { fail("stored message \(id) is not pending") }
                counts.accepted += 1
            } else {
                maybe.insert(id)
            }
        }
    }

    // MARK: Restarts

    func restart() throws {
        counts.restarts += 1
        note("restart")
        let unwritten = spool.close()
        var mode = Mode.clean
        if !unwritten.unrecordedStatuses.isEmpty || !unwritten.unstoredReports.isEmpty {
            // Only a disk with no room left (its reserve used up) may keep a clean shutdown from
            // writing what it owes; then those statuses are not on disk, as after a crash.
            if let cap = memory.capacity, (memory.freeBytes(dir) ?? cap) < 16 * 1024 {
                note("shutdown on a full disk: statuses \(unwritten.unrecordedStatuses) not written")
                mode = .crash
            } else {
                fail("a clean shutdown left statuses \(unwritten.unrecordedStatuses) and reports \(unwritten.unstoredReports) unwritten")
            }
        }
        try reopen(mode: mode, report: nil)
    }

    func crash() throws {
        counts.crashes += 1
        // Work in flight when the power goes.
        if chance(0.5) { deliver() }
        if chance(0.5) { acceptBurstNoWait() }
        fs.setRule(nil)
        fs.release()
        memory = memory.crash(spool, directory: dir, using: &rng)
        fs = FaultInjectingFileSystem(memory.fileSystem)
        note("crash")
        try reopen(mode: .crash, report: nil)
    }

    func acceptBurstNoWait() {
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let m = newMessage()
            if case .queued? = submit(spool, m, staged: chance(0.4), completion: { _ in }) { maybe.insert(m.id) } else { refused.insert(m.id) }
        }
    }

    func flip() throws {
        counts.flips += 1
        let unwritten = spool.close()
        if !unwritten.unrecordedStatuses.isEmpty || !unwritten.unstoredReports.isEmpty {
            // As in restart(): a disk too full to take them; the flip then changes nothing else.
            note("shutdown left statuses \(unwritten.unrecordedStatuses) unwritten; no flip")
            if let cap = memory.capacity, (memory.freeBytes(dir) ?? cap) < 16 * 1024 { return try reopen(mode: .crash, report: nil) }
            fail("a clean shutdown left statuses \(unwritten.unrecordedStatuses) and reports \(unwritten.unstoredReports) unwritten")
            return
        }
        let files = memory.names(dir).filter { $0.hasSuffix(".seg") || $0 == "key" }.sorted()
        let file = files.randomElement(using: &rng)!
        let size = memory.contents("\(dir)/\(file)")?.count ?? 0
        if size > 0 {
            let bit = Int.random(in: 0..<(size * 8), using: &rng)
            memory.flipBit("\(dir)/\(file)", bit: bit)
            note("flip bit \(bit) of \(file) (\(size) bytes)")
        }
        try reopen(mode: .damage, report: nil)
    }

    enum Mode { case clean, crash, damage }

    func reopen(mode: Mode, report: RecoveryReport?) throws {
        spool = try Spool(directory: dir, options: options, fileSystem: fs)
        attachLog(spool)
        let report = try spool.recover()
        // Damage found before may be found again (until compaction moves what it holds away).
        let fresh = report.damage.filter { !knownDamage.contains("\($0.segment):\($0.offset)") }
        for d in report.damage { knownDamage.insert("\(d.segment):\(d.offset)") }
        if mode != .damage, !fresh.isEmpty { fail("damage reported with no damage done: \(fresh)") }
        if mode == .clean, report.truncatedBytes > 0 { fail("a clean shutdown left a torn tail of \(report.truncatedBytes) bytes") }
        for d in report.damage where !d.stateOnly { damagedSegments.insert(d.segment) }
        verify(mode: mode, report: report)
    }

    /// The recovered spool against the model; where a crash or damage allows it, the model takes
    /// what was recovered.
    func verify(mode: Mode, report: RecoveryReport) {
        let recovered = Dictionary(uniqueKeysWithValues: spool.pendingMessages.map { ($0.id, $0) })
        let confirmed = durable.all
        let damaged = mode == .damage && !report.damage.isEmpty
        let unidentified = damaged && report.unidentifiedDamage > 0
        for (id, m) in model {
            let lostOK = damaged && (report.lostMessages.contains(id) || unidentified)
            let statusLossOK = damaged && (report.lostStatuses.contains(id) || report.revivedMessages.contains(id) || unidentified)
            guard let r = recovered[id] else {
                if m.isFinished { continue }
                if lostOK {
                    counts.lostToDamage += 1
                    model[id] = nil
                } else {
                    fail("acknowledged message \(id) lost (\(mode))")
                }
                continue
            }
            var adopted = m
            for (d, md) in m.deliveries.enumerated() {
                let rd = r.deliveries[d]
                if md.matches(rd) { continue }
                let unconfirmed = md.lastStatus != 0 && !confirmed.contains(md.lastStatus)
                if (mode == .crash && unconfirmed) || statusLossOK || (lostOK && !m.isFinished) {
                    // An earlier state came back: the model takes it (a delivery made may be made again).
                    if rd.phase == .pending, md.phase == .delivered {
                        adopted.deliveries[d].mayRepeat = true
                        adopted.deliveries[d].repeatAfterDamage = mode == .damage
                    }
                    if rd.attempts > md.attempts && !statusLossOK { fail("delivery \(id)/\(d) came back with more attempts (\(rd.attempts)) than made (\(md.attempts))") }
                    adopted.deliveries[d].phase = rd.phase
                    adopted.deliveries[d].attempts = rd.attempts
                    adopted.deliveries[d].next = rd.nextAttempt
                    adopted.deliveries[d].warned = rd.warned
                } else {
                    fail("delivery \(id)/\(d) recovered as \(rd) after \(mode), the model has \(md); on disk: \(onDisk(id)); recovery: \(report.segments) segments, \(report.records) records, deleted \(report.deletedSegments)")
                }
            }
            model[id] = adopted
        }
        for (id, r) in recovered where model[id] == nil {
            if let rep = reports[id] {
                model[id] = rep.message
                continue
            }
            if damaged, report.revivedMessages.contains(id) {
                // A finished message whose dead mark was damaged: recovery said it may be
                // delivered again, and it may (counted as repeated after damage).
                model[id] = ModelMessage(id: id, deliveries: r.deliveries.map { s in
                    var d = ModelDelivery()
                    d.phase = s.phase
                    d.attempts = s.attempts
                    d.next = s.nextAttempt
                    d.warned = s.warned
                    d.delivered = 1
                    d.mayRepeat = true
                    d.repeatAfterDamage = true
                    return d
                }, acknowledged: true)
                continue
            }
            if maybe.contains(id), mode == .crash || damaged {
                // Never acknowledged, its refusal not yet on disk: it may be delivered (counted).
                counts.unacknowledgedBack += 1
                model[id] = ModelMessage(id: id, deliveries: r.deliveries.map { s in
                    var d = ModelDelivery()
                    d.phase = s.phase
                    d.attempts = s.attempts
                    d.next = s.nextAttempt
                    d.warned = s.warned
                    return d
                }, acknowledged: false)
                continue
            }
            fail("message \(id) recovered, but it was \(gone.contains(id) ? "finished" : maybe.contains(id) ? "never acknowledged" : refused.contains(id) ? "refused" : "never stored") (\(mode)); on disk: \(onDisk(id))")
        }
        // A report is on disk before the failure it reports (and after a clean shutdown, at all).
        for (id, rep) in reports where model[id] == nil && recovered[id] == nil {
            if mode == .clean {
                fail("report \(id) lost by a clean shutdown")
            } else if confirmed.contains(rep.after) && mode != .damage {
                fail("report \(id) lost although the failure it reports (status \(rep.after)) is on disk")
            }
            reports[id] = nil
        }
        for id in reports.keys where model[id] != nil { reports[id] = nil }
        // Messages finished in the model and not recovered leave it.
        for (id, m) in model where m.isFinished && recovered[id] == nil {
            model[id] = nil
            gone.insert(id)
        }
    }

    /// What the segment files hold for a message (copies and statuses, in log order).
    func onDisk(_ id: UInt64) -> String {
        var out: [String] = []
        _ = try? Spool.scan(directory: dir, fileSystem: memory.fileSystem) { r, at in
            switch r {
            case .message(let m) where m.id == id: out.append("copy@\(at.segment):\(at.offset)")
            case .status(let st) where st.id == id: out.append("\(st.delivery):\(st.state)/\(st.attempts)@\(at.segment):\(at.offset)")
            default: break
            }
        }
        return out.joined(separator: " ") + " (segments \(memory.names(dir).filter { $0.hasSuffix(".seg") }.sorted().map { String($0.dropFirst(12).dropLast(4)) }))"
    }

    /// The spool's view in memory equals the model at every step (statuses apply at once).
    func checkMemory() {
        for (id, m) in model where !m.isFinished {
            guard let p = spool.pendingMessage(id) else {
                fail("message \(id) owes deliveries in the model but not in the spool")
                continue
            }
            for (d, md) in m.deliveries.enumerated() where !md.matches(p.deliveries[d]) {
                fail("delivery \(id)/\(d) is \(p.deliveries[d]) in the spool, \(md) in the model")
            }
        }
    }

    /// Delivers everything, restarts cleanly and checks that the spool shrank to one segment.
    func finishAll() throws {
        fs.setRule(nil)
        fs.release()
        for _ in 0..<200 {
            // (Reports become messages once written: wait for the writes first.)
            settle("the last deliveries")
            let due = spool.pendingMessages
            if due.isEmpty { break }
            for p in due {
                reports[p.id] = nil
                for (d, s) in p.deliveries.enumerated() where s.phase == .pending {
                    if var m = model[p.id] {
                        m.deliveries[d].delivered += 1
                        if m.deliveries[d].delivered > 1 {
                            if m.deliveries[d].mayRepeat { counts.repeatedAfterCrash += 1 } else { fail("delivery \(p.id)/\(d) made twice (at the end)") }
                        }
                        m.deliveries[d].phase = .delivered
                        model[p.id] = m
                    }
                    spool.record(SpoolStatus(id: p.id, delivery: UInt32(d), state: .delivered, attempts: s.attempts + 1))
                }
            }
            settle("the last deliveries")
        }
        try restart()
        if !spool.pendingMessages.isEmpty { fail("still pending after everything was delivered: \(spool.pendingMessages.map(\.id))") }
        let segments = spool.segments()
        if segments.count > 1 { fail("\(segments.count) segments left once everything was delivered: \(segments)") }
        // Every damaged segment left the spool for damaged/, none was deleted.
        let kept = Set(memory.names("\(dir)/damaged").compactMap { SegmentFiles.number(String($0.prefix(20))) })
        for s in damagedSegments where !kept.contains(s) { fail("damaged segment \(s) was not kept in damaged/ (kept: \(kept.sorted()))") }
        spool.close()
    }
}

func modelSequences() -> [UInt64] {
    let env = ProcessInfo.processInfo.environment
    if let s = env["TERN_SPOOL_SEED"], let seed = UInt64(s) { return [seed] }
    let n = env["TERN_SPOOL_SEQUENCES"].flatMap(Int.init) ?? 1500
    let base = env["TERN_SPOOL_SEED_BASE"].flatMap(UInt64.init) ?? 20_261_201
    return (0..<UInt64(n)).map { base &+ $0 }
}

/// Runs one seeded sequence; the failures, with the trace, and the counts.
func runModelSequence(_ seed: UInt64, steps: Int, real: Bool = false) -> (failures: [String], trace: [String], counts: ModelCounts) {
    let folder = real ? FileManager.default.temporaryDirectory.appendingPathComponent("spool-model-\(seed)-\(UUID().uuidString)").path : nil
    defer { if let folder { try? FileManager.default.removeItem(atPath: folder) } }
    do {
        let run = try ModelRun(seed: seed, realDirectory: folder)
        for _ in 0..<steps {
            try run.step()
            if !run.failures.isEmpty { break }
        }
        if run.failures.isEmpty { try run.finishAll() }
        run.counts.sequences = 1
        return (run.failures, run.trace, run.counts)
    } catch {
        return (["error: \(error)"], [], ModelCounts())
    }
}

@Suite("Spool against a model")
struct SpoolModelTests {
    @Test("the same on the real file system (TERN_SPOOL_REAL_SEQUENCES, default 150): faults injected around real files, crashes that lose what was not synced")
    func realFileSystem() {
        let env = ProcessInfo.processInfo.environment
        let n = env["TERN_SPOOL_REAL_SEQUENCES"].flatMap(Int.init) ?? 150
        let base = env["TERN_SPOOL_SEED_BASE"].flatMap(UInt64.init) ?? 77_000_000
        let soakUntil = env["TERN_SOAK_SECONDS"].flatMap(Double.init).map { Date().addingTimeInterval($0) }
        var total = ModelCounts()
        var k: UInt64 = 0
        while soakUntil.map({ Date() < $0 }) ?? (k < UInt64(n)) {
            defer { k += 1 }
            let seed = env["TERN_SPOOL_SEED"].flatMap(UInt64.init) ?? (base &+ k)
            let (failures, trace, counts) = runModelSequence(seed, steps: 30, real: true)
            total.add(counts)
            if !failures.isEmpty {
                Issue.record("seed \(seed) on the real file system (replay: TERN_SPOOL_SEED=\(seed)): \(failures.joined(separator: "; "))\ntrace:\n\(trace.suffix(120).joined(separator: "\n"))")
                break
            }
            if env["TERN_SPOOL_SEED"] != nil { break }
        }
        print("spool model, real file system: \(total.sequences) sequences, \(total.steps) steps, \(total.accepted) acknowledged, \(total.crashes) crashes, \(total.flips) flipped bits, \(total.faults) faults; repeated after a crash \(total.repeatedAfterCrash)")
        if let out = env["TERN_SPOOL_MODEL_REPORT"] { try? total.report.write(toFile: out, atomically: true, encoding: .utf8) }
    }

    @Test("seeded random sequences of accepts, deliveries, faults, stalls, restarts, crashes and flipped bits keep every promise")
    func randomSequences() {
        let seeds = modelSequences()
        let env = ProcessInfo.processInfo.environment
        let steps = env["TERN_SPOOL_STEPS"].flatMap(Int.init) ?? 40
        let soakUntil = env["TERN_SOAK_SECONDS"].flatMap(Double.init).map { Date().addingTimeInterval($0) }
        var total = ModelCounts()
        var seed = seeds.first ?? 1
        var k = 0
        while true {
            if let until = soakUntil {
                if Date() > until { break }
            } else if k >= seeds.count {
                break
            }
            seed = soakUntil == nil ? seeds[k] : (seeds.first ?? 1) &+ UInt64(k)
            k += 1
            let (failures, trace, counts) = runModelSequence(seed, steps: steps)
            total.add(counts)
            if !failures.isEmpty {
                Issue.record("seed \(seed) (replay: TERN_SPOOL_SEED=\(seed) swift test --filter SpoolModelTests): \(failures.joined(separator: "; "))\ntrace:\n\(trace.suffix(120).joined(separator: "\n"))")
                break
            }
        }
        print(
            "spool model: \(total.sequences) sequences, \(total.steps) steps, \(total.accepted) acknowledged, \(total.delivered) deliveries; \(total.restarts) restarts, \(total.crashes) crashes, \(total.flips) flipped bits, \(total.faults) faults; repeated after a crash \(total.repeatedAfterCrash), after damage \(total.repeatedAfterDamage); lost to reported damage \(total.lostToDamage); unacknowledged back after a crash \(total.unacknowledgedBack)"
        )
        if let out = env["TERN_SPOOL_MODEL_REPORT"] { try? total.report.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}
