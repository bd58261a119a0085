// The spool's failures as they were reported (issue 15), each as a test that failed before the
// segment ledger, the writer thread and the damage handling, and passes now.
import Foundation
import Spool
import Synchronization
import TernTestSupport
import Testing

func message(_ id: UInt64, size: Int = 200, deliveries: Int = 1) -> SpoolMessage {
    SpoolMessage(
        id: id, arrival: 1_700_000_000, sender: "s@example.test", body: Array(repeating: UInt8(ascii: "m"), count: size),
        deliveries: (0..<deliveries).map { SpoolDelivery(kind: .mailbox, recipient: "r\($0)@example.test", destination: "r\($0)@example.test") })
}

@Suite("Spool lifecycle", .serialized)
struct SpoolLifecycleTests {
    @Test("many sessions with large and small messages on tiny segments: every stored message is readable until delivered, and finished segments go even when they were current")
    func concurrency() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        let (spool, _) = try openSpool(dir, fs: fs, options: testOptions(segmentSize: 16 * 1024))
        let unreadable = Atomic<Int>(0)
        let deliveredOnce = Mutex<Set<UInt64>>([])
        let group = DispatchGroup()
        // A delivery worker finishing every message the moment it is stored, while sessions store.
        let stop = Atomic<Bool>(false)
        let worker = Thread {
            while !stop.load(ordering: .relaxed) || spool.pendingCount > 0 {
                for p in spool.takeDue(now: .max) {
                    do {
                        let m = try spool.readMessage(p.id)
                        #expect(m.body.count == Int(m.id % 3 == 0 ? 40_000 : 300))
                    } catch {
                        unreadable.add(1, ordering: .relaxed)
                    }
                    deliveredOnce.withLock { #expect($0.insert(p.id).inserted, "delivered twice: \(p.id)") }
                    spool.record(SpoolStatus(id: p.id, delivery: 0, state: .delivered))
                }
                usleep(200)
            }
        }
        worker.start()
        for t in 0..<12 {
            group.enter()
            Thread {
                for i in 0..<40 {
                    let id = UInt64(t * 1000 + i + 1)
                    #expect(store(spool, message(id, size: id % 3 == 0 ? 40_000 : 300)) == .stored)
                }
                group.leave()
            }.start()
        }
        group.wait()
        stop.store(true, ordering: .relaxed)
        while !worker.isFinished { usleep(1000) }
        let unreadableCount = unreadable.load(ordering: .relaxed)
        #expect(unreadableCount == 0)
        #expect(deliveredOnce.withLock { $0.count } == 480)
        #expect(spool.waitForWrites())
        // One more record starts a new segment: nothing older is owed, so nothing older stays.
        #expect(store(spool, message(99_999, size: 20_000)) == .stored)
        #expect(spool.waitForWrites())
        #expect(waitUntil { spool.segments().count <= 2 }, "segments left: \(spool.segments())")
        spool.close()
        let (again, report) = try openSpool(dir, fs: fs, options: testOptions(segmentSize: 16 * 1024))
        #expect(pendingIDs(again) == [99_999] && report.damage.isEmpty)
        again.close()
    }

    @Test("statuses in later segments keep their meaning across restarts: a delivered message is not delivered again, and attempts are not forgotten")
    func statusesSurviveRestarts() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        let options = testOptions(segmentSize: 4096)
        var (spool, _) = try openSpool(dir, fs: fs, options: options)
        let a = message(1, deliveries: 2), b = message(2)
        #expect(store(spool, a) == .stored && store(spool, b) == .stored)
        var filler: UInt64 = 100
        func traffic() {
            // Enough messages, delivered at once, to move the log on by a segment or two.
            for _ in 0..<25 {
                filler += 1
                #expect(store(spool, message(filler, size: 300)) == .stored)
                recordDurably(spool, SpoolStatus(id: filler, delivery: 0, state: .delivered))
            }
        }
        traffic()
        recordDurably(spool, SpoolStatus(id: 2, delivery: 0, state: .delivered))
        recordDurably(spool, SpoolStatus(id: 1, delivery: 0, state: .delivered))
        for attempt in UInt32(1)...3 {
            traffic()
            recordDurably(spool, SpoolStatus(id: 1, delivery: 1, state: .deferred, attempts: attempt, nextAttempt: 5000 + Int64(attempt), reason: "451 later"))
        }
        traffic()
        for _ in 0..<3 {
            spool.close()
            (spool, _) = try openSpool(dir, fs: fs, options: options)
            #expect(pendingIDs(spool) == [1], "message 2 was delivered; only 1 is owed")
            let p = try #require(spool.pendingMessage(1))
            #expect(p.deliveries[0].phase == .delivered)
            #expect(p.deliveries[1].attempts == 3 && p.deliveries[1].nextAttempt == 5003)
            #expect(try spool.readMessage(1) == a)
            traffic()
        }
        spool.close()
    }

    @Test("a status that cannot be written stops delivery and new mail, is never lost, and the reserve makes room for it on a full disk")
    func diskFull() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem(capacity: 400 * 1024)
        let fs = FaultInjectingFileSystem(memory)
        // A disk that is full with 4 KiB left (file systems keep some back).
        // While `holdSegments`, segments cannot be deleted either (nothing frees space behind the
        // test's back: a segment whose messages all got delivered would).
        let holdSegments = Atomic<Bool>(false)
        fs.setRule { call in
            if call.operation == .unlink, call.path.hasSuffix(".seg"), holdSegments.load(ordering: .relaxed) { return .fail(EBUSY) }
            return call.operation == .write && call.path.hasSuffix(".seg") && memory.freeBytes(dir)! < 4096 ? .fail(ENOSPC) : nil
        }
        var options = testOptions(segmentSize: 64 * 1024, reserve: 32 * 1024)
        options.retryInterval = 0.01
        let logged = Mutex<[String]>([])
        let spool = try Spool(directory: dir, options: options, fileSystem: fs)
        spool.log = { line in logged.withLock { $0.append(line) } }
        _ = try spool.recover()
        #expect(memory.contents("\(dir)/reserve")?.count == 32 * 1024)
        // Fill the disk.
        var stored: [UInt64] = []
        var id: UInt64 = 1
        for size in [20_000, 1000] {
            while store(spool, message(id, size: size)) == .stored {
                stored.append(id)
                id += 1
            }
            id += 1
        }
        #expect(stored.count > 5)
        // The disk is full: from now on mail is refused at once (at MAIL, before a body is sent).
        #expect(spool.condition == .full)
        guard case .refused(.full) = spool.accept(message(9998, size: 100), completion: { _ in }) else {
            Issue.record("a message accepted on a full disk")
            return
        }
        // Something else fills what is left (once the writer is idle: a write it cut back frees
        // bytes).
        #expect(spool.waitForWrites())
        memory.capacity = memory.capacity! - memory.freeBytes(dir)! + 2000
        holdSegments.store(true, ordering: .relaxed)
        // Deliver three: their statuses need room there is none of.
        for s in stored.suffix(3) { spool.record(SpoolStatus(id: s, delivery: 0, state: .delivered)) }
        #expect(!spool.pendingMessages.contains { stored.suffix(3).contains($0.id) }, "recorded in memory at once: not offered again")
        #expect(spool.waitForWrites(timeout: 10))
        #expect(logged.withLock { $0.contains { $0.contains("gave up the 32 KiB reserve") } }, "\(logged.withLock { $0 })")
        #expect(memory.contents("\(dir)/reserve") == nil)
        // Until the reserve is back, mail is refused.
        #expect(spool.condition == .full)
        guard case .refused(.full) = spool.accept(message(9999), completion: { _ in }) else {
            Issue.record("a message accepted while the reserve is given up")
            return
        }
        // Deliveries free their segments; the reserve comes back; mail is accepted again.
        holdSegments.store(false, ordering: .relaxed)
        for s in stored.dropLast(3) { spool.record(SpoolStatus(id: s, delivery: 0, state: .delivered)) }
        #expect(spool.waitForWrites(timeout: 10))
        #expect(waitUntil(10) { spool.condition == .ok }, "\(spool.condition); free \(memory.freeBytes(dir) ?? -1)")
        #expect(memory.contents("\(dir)/reserve")?.count == 32 * 1024)
        #expect(store(spool, message(10_001, size: 100)) == .stored)
        spool.close()
        let (again, report) = try openSpool(dir, fs: memory, options: options)
        #expect(pendingIDs(again) == [10_001], "every delivered message stays delivered")
        #expect(report.damage.isEmpty)
        again.close()
    }

    @Test("a message refused for want of space makes the spool full (MAIL is refused) until there is room again; one large message does not keep small ones out")
    func fullAfterNoSpace() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem(capacity: 3 << 20)
        let (spool, _) = try openSpool(dir, fs: memory, options: testOptions(segmentSize: 8 << 20))
        #expect(store(spool, message(1, size: 1_000_000)) == .stored)
        // 2 MB do not fit in what is left (about 2 MB): refused; small mail still fits and is taken.
        #expect(store(spool, message(2, size: 2_500_000)) == .failed(.full))
        #expect(spool.condition == .ok, "a 2.5 MB message that does not fit leaves room for others: \(memory.freeBytes(dir) ?? -1)")
        #expect(spool.hasRoom(for: 2_500_000) == false && spool.hasRoom(for: 100_000) == true, "what SIZE= at MAIL is checked against")
        var id: UInt64 = 3
        while store(spool, message(id, size: 200_000)) == .stored { id += 1 }
        #expect(id > 5)
        // Less than 200 KB left: smaller ones still go in, until even 20 KB do not.
        #expect(spool.condition == .ok, "\(memory.freeBytes(dir) ?? -1) bytes free")
        id += 1
        while spool.condition == .ok, store(spool, message(id, size: 20_000)) == .stored { id += 1 }
        #expect(spool.condition == .full, "the disk is full: refused at MAIL from now on")
        guard case .refused(.full) = spool.accept(message(100, size: 10), completion: { _ in }) else {
            Issue.record("accepted on a full disk")
            return
        }
        memory.capacity = 8 << 20
        #expect(spool.condition == .ok, "room again: taken again")
        #expect(store(spool, message(101, size: 10)) == .stored)
        spool.close()
    }

    @Test("while the statuses owed cannot be written, deliveries pause; once they are, everything resumes, and a restart agrees")
    func statusWriteFailure() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem()
        let fs = FaultInjectingFileSystem(memory)
        let (spool, _) = try openSpool(dir, fs: fs)
        for i in UInt64(1)...5 { #expect(store(spool, message(i)) == .stored) }
        let failing = Atomic<Bool>(true)
        fs.setRule { call in failing.load(ordering: .relaxed) && (call.operation == .write || call.operation == .sync) ? .fail(EIO) : nil }
        spool.record(SpoolStatus(id: 1, delivery: 0, state: .delivered))
        #expect(waitUntil { spool.deliveriesPaused })
        guard case .failing = spool.condition else {
            Issue.record("condition \(spool.condition)")
            return
        }
        if case .queued = spool.accept(message(50), completion: { _ in }) { Issue.record("accepted while statuses cannot be written") }
        #expect(pendingIDs(spool) == [2, 3, 4, 5])
        failing.store(false, ordering: .relaxed)
        #expect(waitUntil { !spool.deliveriesPaused && spool.condition == .ok })
        spool.close()
        let (again, _) = try openSpool(dir, fs: memory)
        #expect(pendingIDs(again) == [2, 3, 4, 5])
        again.close()
    }

    @Test("an fdatasync that fails: the messages it covered are refused and never delivered, the statuses it covered are written again")
    func failedSync() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem()
        let fs = FaultInjectingFileSystem(memory)
        let (spool, _) = try openSpool(dir, fs: fs)
        #expect(store(spool, message(1)) == .stored)
        let failing = Atomic<Bool>(true)
        fs.setRule { call in call.operation == .sync && failing.load(ordering: .relaxed) ? .fail(EIO) : nil }
        spool.record(SpoolStatus(id: 1, delivery: 0, state: .deferred, attempts: 1, nextAttempt: 77))
        let outcome = store(spool, message(2))
        #expect(outcome != .stored)
        failing.store(false, ordering: .relaxed)
        #expect(spool.waitForWrites())
        #expect(pendingIDs(spool) == [1], "message 2 was refused: it must never be delivered")
        spool.close()
        let (again, _) = try openSpool(dir, fs: memory)
        #expect(pendingIDs(again) == [1])
        #expect(again.pendingMessage(1)?.deliveries[0].attempts == 1 && again.pendingMessage(1)?.deliveries[0].nextAttempt == 77)
        again.close()
    }

    @Test("a disk that freezes while the writer frees space (punching a hole, deleting a segment) shows as stalled too")
    func freezeWhileFreeing() throws {
        for op in [FaultInjectingFileSystem.Operation.punchHole, .unlink] {
            let dir = "/spool"
            let memory = MemoryFileSystem()
            let fs = FaultInjectingFileSystem(memory)
            var options = testOptions(segmentSize: op == .unlink ? 200_000 : 64 << 20)
            options.stallAfter = 0.05
            let (spool, _) = try openSpool(dir, fs: fs, options: options)
            #expect(store(spool, message(1, size: 150_000)) == .stored)
            #expect(store(spool, message(2, size: 150_000)) == .stored)
            fs.setRule { $0.operation == op && $0.path.hasSuffix(".seg") ? .block : nil }
            spool.record(SpoolStatus(id: 1, delivery: 0, state: .delivered))
            #expect(waitUntil(10) { fs.blockedCalls == 1 }, "\(op) reached")
            #expect(waitUntil(10) {
                if case .stalled = spool.condition { return true }
                return false
            }, "\(op): \(spool.condition)")
            fs.setRule(nil)
            fs.release()
            #expect(waitUntil(10) { spool.condition == .ok })
            spool.close()
        }
    }

    @Test("a frozen disk: callers never wait, the condition says stalled, an abandoned message is withdrawn once the disk answers")
    func stalledDisk() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem()
        let fs = FaultInjectingFileSystem(memory)
        var options = testOptions()
        options.stallAfter = 0.05
        let (spool, _) = try openSpool(dir, fs: fs, options: options)
        #expect(store(spool, message(1)) == .stored)
        fs.setRule { $0.operation == .write ? .block : nil }
        let answered = Atomic<Bool>(false)
        let start = Date()
        guard case .queued(let ticket) = spool.accept(message(2), completion: { _ in answered.store(true, ordering: .relaxed) }) else {
            Issue.record("refused")
            return
        }
        spool.record(SpoolStatus(id: 1, delivery: 0, state: .delivered))
        #expect(Date().timeIntervalSince(start) < 0.5, "accept and record do not wait for the disk")
        #expect(waitUntil { fs.blockedCalls > 0 })
        #expect(waitUntil {
            if case .stalled = spool.condition { return true }
            return false
        })
        #expect(spool.abandon(ticket), "not stored yet: the client can be told no")
        fs.setRule(nil)
        fs.release()
        #expect(spool.waitForWrites())
        let gotAnswer = answered.load(ordering: .relaxed)
        #expect(!gotAnswer, "an abandoned message gets no answer")
        #expect(pendingIDs(spool).isEmpty, "the abandoned message is withdrawn, never delivered")
        #expect(spool.condition == .ok)
        spool.close()
        let (again, _) = try openSpool(dir, fs: memory, options: options)
        #expect(pendingIDs(again).isEmpty)
        again.close()
    }

    @Test("one flipped bit in the last segment after a clean shutdown loses only that message, named; the rest stays, the segment is kept aside")
    func flippedBitInLastSegment() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        let (spool, _) = try openSpool(dir, fs: fs)
        for i in UInt64(1)...20 { #expect(store(spool, message(i, size: 70_000)) == .stored) }
        let seg = spool.currentSegment
        spool.close()
        let path = SegmentFiles.path(dir, seg)
        let size = fs.contents(path)!.count
        fs.flipBit(path, bit: (size / 2) * 8 + 3)
        let (again, report) = try openSpool(dir, fs: fs)
        #expect(report.truncatedBytes == 0, "a clean shutdown leaves no torn tail to take damage for")
        #expect(report.lostMessages.count == 1 && report.damage.count == 1)
        let lost = try #require(report.lostMessages.first)
        #expect(pendingIDs(again) == Array(1...20).filter { $0 != lost })
        #expect(report.savedCopies == ["\(dir)/damaged/\(SegmentFiles.name(seg))"])
        // Once everything in it is delivered the segment leaves the spool, for damaged/.
        for i in pendingIDs(again) { again.record(SpoolStatus(id: i, delivery: 0, state: .delivered)) }
        #expect(again.waitForWrites())
        _ = store(again, message(500, size: 10))
        again.close()
        let (third, _) = try openSpool(dir, fs: fs)
        #expect(!third.segments().contains(seg))
        #expect(fs.contents("\(dir)/damaged/\(SegmentFiles.name(seg))") != nil)
        third.close()
    }

    @Test("damage in an older segment: recovery resynchronises and keeps every intact record after it")
    func flippedBitInOlderSegment() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        let options = testOptions(segmentSize: 40_000)
        let (spool, _) = try openSpool(dir, fs: fs, options: options)
        for i in UInt64(1)...8 { #expect(store(spool, message(i, size: 4000)) == .stored) }
        for i in UInt64(9)...40 { #expect(store(spool, message(i, size: 4000)) == .stored) }
        let first = spool.segments().first!
        spool.close()
        // The header of the second record of the first segment.
        let start = SpoolRecord.segmentStart(key: testKey, segment: 1).encoded(key: testKey).count
        let one = SpoolRecord.message(message(1, size: 4000)).encoded(key: testKey).count
        fs.flipBit(SegmentFiles.path(dir, first), bit: (start + one + 14) * 8)
        let (again, report) = try openSpool(dir, fs: fs, options: options)
        #expect(report.damage.count == 1 && report.unidentifiedDamage == 1)
        #expect(pendingIDs(again) == [1] + Array(3...40))
        again.close()
    }

    @Test("an older segment cut short (to nothing, to its start record, at a record boundary) is damage, reported and kept aside, never deleted in silence")
    func olderSegmentCutShort() throws {
        for cut in ["empty", "start record", "a record boundary"] {
            let dir = "/spool"
            let fs = MemoryFileSystem()
            let options = testOptions(segmentSize: 40_000)
            let (spool, _) = try openSpool(dir, fs: fs, options: options)
            for i in UInt64(1)...40 { #expect(store(spool, message(i, size: 4000)) == .stored) }
            let first = spool.segments().first!
            #expect(spool.segments().count > 2)
            spool.close()
            let path = SegmentFiles.path(dir, first)
            let start = SpoolRecord.segmentStart(key: testKey, segment: 1).encoded(key: testKey).count
            let one = SpoolRecord.message(message(1, size: 4000)).encoded(key: testKey).count
            let length = cut == "empty" ? 0 : cut == "start record" ? start : start + 2 * one
            let f = try fs.open(path, writable: true)
            try fs.truncate(f, to: length)
            fs.close(f)
            let (again, report) = try openSpool(dir, fs: fs, options: options)
            #expect(report.damage.contains { $0.segment == first && $0.cutShort }, "\(cut): \(report.damage)")
            #expect(report.savedCopies.contains("\(dir)/damaged/\(SegmentFiles.name(first))"), "\(cut): \(report.savedCopies)")
            #expect(report.damage.allSatisfy { $0.segment == first }, "only the cut segment is damaged: \(report.damage)")
            let kept = cut == "a record boundary" ? [1, 2] as [UInt64] : []
            let lostFromFirst = pendingIDs(again).filter { $0 <= 8 }
            #expect(lostFromFirst == kept, "\(cut)")
            #expect(pendingIDs(again).contains(40))
            // Once nothing in it is owed, it goes to damaged/, not away.
            for id in pendingIDs(again) { again.record(SpoolStatus(id: id, delivery: 0, state: .delivered)) }
            #expect(again.waitForWrites())
            #expect(waitUntil { fs.contents("\(dir)/damaged/\(SegmentFiles.name(first))") != nil }, "\(cut)")
            again.close()
            let (third, r3) = try openSpool(dir, fs: fs, options: options)
            #expect(r3.damage.isEmpty, "met once: \(r3.damage)")
            third.close()
        }
    }

    @Test("crashes and clean restarts in any order never make an older segment look cut short")
    func restartsLeaveEveryOlderSegmentClosed() throws {
        let dir = "/spool"
        var fs = MemoryFileSystem()
        let options = testOptions(segmentSize: 20_000)
        var g = SplitMix(seed: 7)
        var id: UInt64 = 0
        for round in 0..<12 {
            let (spool, report) = try openSpool(dir, fs: fs, options: options)
            #expect(report.damage.isEmpty, "round \(round): \(report.damage)")
            for _ in 0..<5 {
                id += 1
                #expect(store(spool, message(id, size: 3000)) == .stored)
            }
            if round % 3 == 0 {
                spool.close()
            } else {
                spool.halt()
                fs = fs.crashed(using: &g)
            }
        }
        let (last, report) = try openSpool(dir, fs: fs, options: options)
        #expect(report.damage.isEmpty)
        #expect(pendingIDs(last) == Array(1...id))
        last.close()
    }

    @Test("SPOOL/key missing and the first segment's start record damaged: the key is learnt from a later segment, nothing is lost")
    func keyFromLaterSegment() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        let options = testOptions(segmentSize: 40_000)
        let (spool, _) = try openSpool(dir, fs: fs, options: options)
        for i in UInt64(1)...30 { #expect(store(spool, message(i, size: 4000)) == .stored) }
        let first = spool.segments().first!
        spool.close()
        try fs.unlink("\(dir)/key")
        fs.flipBit(SegmentFiles.path(dir, first), bit: 33 * 8)
        let (again, report) = try openSpool(dir, fs: fs, options: options)
        #expect(pendingIDs(again) == Array(1...30), "\(report.damage)")
        #expect(report.lostMessages.isEmpty && report.unidentifiedDamage <= 1)
        again.close()
    }

    @Test("after a crash, a whole last record with a flipped bit is damage (named, kept), not a torn tail called never acknowledged")
    func damagedLastRecordAfterCrash() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem()
        let (spool, _) = try openSpool(dir, fs: memory)
        #expect(store(spool, message(1, size: 3000)) == .stored)
        #expect(store(spool, message(2, size: 3000)) == .stored)
        let seg = spool.currentSegment
        spool.halt()
        var g = SplitMix(seed: 3)
        let after = memory.crashed(using: &g)
        let path = SegmentFiles.path(dir, seg)
        let size = after.contents(path)!.count
        after.flipBit(path, bit: (size - 1000) * 8 + 2)
        let (again, report) = try openSpool(dir, fs: after)
        #expect(report.truncatedBytes == 0, "not cut as a torn tail")
        #expect(report.lostMessages == [2], "\(report.damage)")
        #expect(report.savedCopies.contains("\(dir)/damaged/\(SegmentFiles.name(seg))"))
        #expect(pendingIDs(again) == [1])
        again.close()
    }

    @Test("a clean stop while the disk stalls: deliveries pause once the stall is seen, and statuses owed are written when the disk answers, even after the close deadline")
    func closeDuringStall() throws {
        let dir = "/spool"
        let memory = MemoryFileSystem()
        let fs = FaultInjectingFileSystem(memory)
        var options = testOptions()
        options.stallAfter = 0.05
        let (spool, _) = try openSpool(dir, fs: fs, options: options)
        #expect(store(spool, message(1)) == .stored)
        #expect(!spool.deliveriesPaused)
        fs.setRule { $0.operation == .sync ? .block : nil }
        spool.record(SpoolStatus(id: 1, delivery: 0, state: .delivered))
        #expect(waitUntil(10) { fs.blockedCalls == 1 })
        #expect(waitUntil(10) { spool.deliveriesPaused }, "a stalled disk pauses deliveries")
        let closed = Atomic<Bool>(false)
        let closer = Thread {
            spool.close(grace: 0)
            closed.store(true, ordering: .relaxed)
        }
        closer.start()
        // Past the deadline (grace 0, so as soon as close has begun), the disk answers: the
        // status is still written.
        #expect(waitUntil(10) { spool.condition == .closed })
        fs.setRule(nil)
        fs.release()
        #expect(waitUntil(10) { closed.load(ordering: .relaxed) })
        let (again, _) = try openSpool(dir, fs: memory, options: options)
        #expect(pendingIDs(again).isEmpty, "the delivered status reached the disk")
        again.close()
    }

    @Test("one spool, one ternd: a second recover() on the same folder is refused, naming why; close() and halt() let go")
    func oneWriterPerSpool() throws {
        for memory in [true, false] {
            let dir = memory ? "/spool" : tempDir()
            defer { if !memory { try? FileManager.default.removeItem(atPath: dir) } }
            let fs: any SpoolFileSystem = memory ? MemoryFileSystem() : PosixFileSystem.shared
            let (first, _) = try openSpool(dir, fs: fs)
            #expect(store(first, message(1)) == .stored)
            do {
                let (second, _) = try openSpool(dir, fs: fs)
                second.close()
                Issue.record("a second spool on \(dir) recovered")
            } catch let e as SpoolError {
                #expect(e.errno == EWOULDBLOCK)
                #expect(e.description.contains("another ternd"), "\(e)")
            }
            #expect(try first.readMessage(1) == message(1), "the first is untouched")
            if !memory {
                // What is locked is the folder itself: no file in it to delete or replace.
                #expect(!FileManager.default.fileExists(atPath: "\(dir)/lock"))
                FileManager.default.createFile(atPath: "\(dir)/lock", contents: Data())
                try FileManager.default.removeItem(atPath: "\(dir)/lock")
                #expect(throws: SpoolError.self) { _ = try openSpool(dir, fs: fs) }
            }
            first.halt()
            let (again, _) = try openSpool(dir, fs: fs)
            #expect(pendingIDs(again) == [1])
            again.close()
            let (third, _) = try openSpool(dir, fs: fs)
            third.close()
        }
    }

    @Test("a long-deferred message does not keep its segment: compaction copies it forward, with its attempts")
    func compaction() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        let options = testOptions(segmentSize: 8192)
        var (spool, _) = try openSpool(dir, fs: fs, options: options)
        let old = message(1, size: 1000, deliveries: 2)
        #expect(store(spool, old) == .stored)
        recordDurably(spool, SpoolStatus(id: 1, delivery: 0, state: .delivered))
        recordDurably(spool, SpoolStatus(id: 1, delivery: 1, state: .deferred, attempts: 4, nextAttempt: 99, reason: "451 greylisted"))
        let firstSegment = spool.currentSegment
        for i in UInt64(2)...200 {
            #expect(store(spool, message(i, size: 500)) == .stored)
            recordDurably(spool, SpoolStatus(id: i, delivery: 0, state: .delivered))
        }
        #expect(spool.waitForWrites())
        #expect(waitUntil { !spool.segments().contains(firstSegment) }, "\(spool.segments())")
        #expect(waitUntil { spool.segments().count <= 4 }, "\(spool.segments())")
        #expect(try spool.readMessage(1) == old)
        spool.close()
        (spool, _) = try openSpool(dir, fs: fs, options: options)
        #expect(pendingIDs(spool) == [1])
        let p = try #require(spool.pendingMessage(1))
        #expect(p.deliveries[0].phase == .delivered && p.deliveries[1].attempts == 4 && p.deliveries[1].nextAttempt == 99)
        let listing = try QueueListing.read(directory: dir, fileSystem: fs)
        #expect(listing.messages.map(\.id) == [1] && listing.messages[0].pending[0].reason == "451 greylisted", "the last reason travels with the copy")
        spool.close()
    }
}

@Suite("Spool recovery: statuses before the copy")
struct StatusBeforeCopyTests {
    /// The newest status of each delivery wins wherever it lies: here a message's only live copy
    /// (segment 2) comes after its statuses (segment 1), with no snapshot after the copy, as a
    /// compaction copy written after them leaves it. Recovery used to take such statuses for a
    /// message already gone: a delivered recipient came back pending and was delivered again.
    @Test func statusesBeforeTheOnlyCopyCount() throws {
        let dir = "/spool"
        let fs = MemoryFileSystem()
        try fs.makeDirectories(dir)
        let m = message(77, deliveries: 3)
        func write(_ n: UInt64, _ records: [SpoolRecord]) throws {
            var out = SpoolRecord.segmentStart(key: testKey, segment: n).encoded(key: testKey)
            for r in records { r.encode(into: &out, key: testKey) }
            SpoolRecord.segmentEnd.encode(into: &out, key: testKey)
            let f = try fs.create(SegmentFiles.path(dir, n))
            let failed: SpoolError? = out.withUnsafeBytes { b in
                do throws(SpoolError) { try fs.write(f, b, at: 0) } catch { return error }
                return nil
            }
            if let failed { throw failed }
            fs.close(f)
        }
        try write(1, [
            .status(SpoolStatus(id: 77, delivery: 0, state: .delivered, attempts: 1, reason: "ok", version: 5)),
            .status(SpoolStatus(id: 77, delivery: 1, state: .deferred, attempts: 2, nextAttempt: 1_700_000_600, reason: "later", version: 6)),
            // An older status of delivery 0 after the newer one changes nothing.
            .status(SpoolStatus(id: 77, delivery: 0, state: .deferred, attempts: 0, nextAttempt: 1, reason: "old", version: 2)),
            // A status of a message that never comes: of one already gone.
            .status(SpoolStatus(id: 99, delivery: 0, state: .deferred, attempts: 1, nextAttempt: 1, reason: "gone", version: 7)),
        ])
        try write(2, [.message(m)])
        let (spool, report) = try openSpool(dir, fs: fs)
        defer { spool.close() }
        #expect(report.damage.isEmpty)
        let p = try #require(spool.pendingMessages.first { $0.id == 77 })
        #expect(spool.pendingMessages.map(\.id) == [77], "message 99 is not revived")
        #expect(p.deliveries[0].phase == .delivered && p.deliveries[0].attempts == 1, "\(p.deliveries[0])")
        #expect(p.deliveries[1].phase == .pending && p.deliveries[1].attempts == 2 && p.deliveries[1].nextAttempt == 1_700_000_600, "\(p.deliveries[1])")
        #expect(p.deliveries[2].phase == .pending && p.deliveries[2].attempts == 0)
        // Segment 1 holds statuses in force: it stays until compaction carries them forward.
        #expect(fs.contents(SegmentFiles.path(dir, 1)) != nil)
        let due = spool.takeDue(now: .max)
        #expect(due.map(\.id) == [77])
        #expect(due.first?.deliveries[0].phase == .delivered)
    }
}

@Suite("Spool folder moved while open")
struct SpoolFolderMovedTests {
    /// `mv spool spool.old; mkdir spool` while ternd runs (hostile round 3, H2): the lock stays on
    /// the old folder, so a second ternd could start on the new one while the first reads and
    /// creates files by path there. The spool notices within a second: new mail refused,
    /// delivery paused, logged; all is well once the folder is back.
    @Test func movedFolderRefusesAndPauses() throws {
        let dir = tempDir()
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: dir + ".old")
        }
        let (spool, _) = try openSpool(dir, fs: PosixFileSystem.shared)
        defer { spool.close() }
        let logged = Mutex<[String]>([])
        spool.log = { line in logged.withLock { $0.append(line) } }
        #expect(store(spool, message(1)) == .stored)
        #expect(spool.condition == .ok)
        #expect(rename(dir, dir + ".old") == 0 && mkdir(dir, 0o750) == 0)
        #expect(waitUntil(5) {
            if case .failing(let why) = spool.condition { return why.contains("moved or replaced") }
            return false
        }, "\(spool.condition)")
        #expect(spool.deliveriesPaused)
        #expect(logged.withLock { $0.contains { $0.contains("is no longer the folder this spool locked") } })
        // Back in place: mail and delivery go on.
        #expect(rmdir(dir) == 0 && rename(dir + ".old", dir) == 0)
        #expect(waitUntil(5) { spool.condition == .ok }, "\(spool.condition)")
        #expect(!spool.deliveriesPaused)
        #expect(store(spool, message(2)) == .stored)
    }

    /// Moved under load, with segments rolling (hostile verification, V1): no segment may be
    /// created in the folder now at the path, nothing stored is lost once the folder is back.
    @Test func movedWhileSegmentsRoll() throws {
        let dir = tempDir()
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: dir + ".old")
        }
        let options = testOptions(segmentSize: 8 * 1024)
        var (spool, _) = try openSpool(dir, fs: PosixFileSystem.shared, options: options)
        var stored: [UInt64] = []
        for id in UInt64(1)...5 where store(spool, message(id, size: 2000)) == .stored { stored.append(id) }
        #expect(stored.count == 5)
        #expect(rename(dir, dir + ".old") == 0 && mkdir(dir, 0o750) == 0)
        // At once, before the once-a-second check: these need new segments.
        for id in UInt64(6)...25 where store(spool, message(id, size: 2000)) == .stored { stored.append(id) }
        let strays = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".seg") }
        #expect(strays.isEmpty, "segments created in the folder now at the path: \(strays)")
        #expect(spool.deliveriesPaused)
        #expect(rmdir(dir) == 0 && rename(dir + ".old", dir) == 0)
        #expect(waitUntil(5) { spool.condition == .ok }, "\(spool.condition)")
        for id in UInt64(26)...35 where store(spool, message(id, size: 2000)) == .stored { stored.append(id) }
        #expect(stored.count >= 15)
        spool.close()
        (spool, _) = try openSpool(dir, fs: PosixFileSystem.shared, options: options)
        defer { spool.close() }
        #expect(pendingIDs(spool) == stored, "every message answered stored is there after a restart")
    }
}
