// Bodies streamed into the spool (Spool+Staging.swift): the record they make is byte for byte the
// one an in-memory body makes, survives a restart, and a disk that fails while the body is copied
// refuses that message alone. The checksum arithmetic is checked against the direct computation.
import Foundation
import Spool
import Synchronization
import TernTestSupport
import Testing

@Suite("Spool: streamed bodies")
struct SpoolStagingTests {
    @Test("combining checksums equals checksumming the concatenation, for any lengths and seeds")
    func combine() {
        var rng = SplitMix(seed: 17)
        for round in 0..<300 {
            let a = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Lengths around powers of two and large ones too.
            let n = round % 10 == 0 ? Int.random(in: 60_000...200_000, using: &rng) : Int.random(in: 0...2_100, using: &rng)
            let b = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let seed = UInt32.random(in: 0...UInt32.max, using: &rng)
            let first = a.withUnsafeBytes { CRC32C.checksum($0, seed: seed) }
            let direct = (a + b).withUnsafeBytes { CRC32C.checksum($0, seed: seed) }
            let second = b.withUnsafeBytes { CRC32C.checksum($0, seed: 0) }
            #expect(CRC32C.combine(first, second, length: b.count) == direct, "lengths \(a.count) + \(b.count)")
        }
    }

    func message(_ id: UInt64, body: [UInt8]) -> SpoolMessage {
        SpoolMessage(
            id: id, arrival: 1_700_000_000, sender: "s@example.test", body: body,
            deliveries: [SpoolDelivery(kind: .mailbox, recipient: "r@example.test", destination: "r@example.test")])
    }

    @Test("a streamed body makes the record an in-memory one makes, and is read back after a restart")
    func sameRecord() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var (spool, _) = try openSpool(dir)
        var rng = SplitMix(seed: 5)
        for (i, size) in [0, 1, 7, 8, 65_536, 3_000_001].enumerated() {
            let body = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let m = message(UInt64(100 + i), body: body)
            #expect(store(spool, m, staged: true) == .stored, "size \(size)")
            #expect(try spool.readMessage(m.id).body == body, "size \(size)")
        }
        spool.close()
        (spool, _) = try openSpool(dir)
        var rng2 = SplitMix(seed: 5)
        for (i, size) in [0, 1, 7, 8, 65_536, 3_000_001].enumerated() {
            let body = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng2) }
            #expect(try spool.readMessage(UInt64(100 + i)).body == body, "size \(size) after a restart")
        }
        spool.close()
        // Byte for byte: the staged encoding's head, body and tail are encodeMessage's record.
        let key = SpoolKey.random()
        for size in [0, 3, 8, 1001] {
            let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            var whole: [UInt8] = []
            SpoolRecord.encodeMessage(message(9, body: []), bodyParts: [Array("Received: x\r\n".utf8), body], into: &whole, key: key)
            let crc = body.withUnsafeBytes { CRC32C.checksum($0, seed: 0) }
            let (head, tail) = SpoolRecord.encodeMessage(message(9, body: []), bodyParts: [Array("Received: x\r\n".utf8)], staged: (body.count, crc), key: key)
            #expect(head + body + tail == whole, "size \(size)")
        }
    }

    @Test("a disk that fails while the body is copied refuses that message; the spool goes on and recovers clean")
    func copyFails() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = FaultInjectingFileSystem(PosixFileSystem.shared)
        var (spool, _) = try openSpool(dir, fs: fs)
        let body = [UInt8](repeating: 0x41, count: 200_000)
        // The staged body is written; the copy into the segment (a write to the segment) fails.
        let staged = try spool.stageBody()
        try staged.append(body)
        fs.setRule { $0.operation == .write && $0.path.hasSuffix(".seg") ? .fail(ENOSPC) : nil }
        let outcome = Mutex<AcceptOutcome?>(nil)
        let done = DispatchSemaphore(value: 0)
        var m = message(1, body: [])
        guard case .queued = spool.accept(m, bodyParts: [], staged: staged, completion: { o in
            outcome.withLock { $0 = o }
            done.signal()
        }) else {
            Issue.record("refused at once")
            return
        }
        done.wait()
        #expect(outcome.withLock { $0 } != .stored)
        fs.setRule(nil)
        // The disk is back (once the spool sees room again): the next message is stored.
        #expect(waitUntil(70) { spool.condition == .ok }, "\(spool.condition)")
        m = message(2, body: Array("hello\r\n".utf8))
        #expect(store(spool, m, staged: true) == .stored)
        spool.close()
        let report: RecoveryReport
        (spool, report) = try openSpool(dir)
        #expect(report.damage.isEmpty, "\(report.damage)")
        #expect(spool.pendingMessages.map(\.id) == [2])
        #expect(try spool.readMessage(2).body == Array("hello\r\n".utf8))
        spool.close()
    }

    @Test("staging leaves nothing in the spool's folder, whether the message is accepted or not")
    func nothingLeftBehind() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir)
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: dir))
        do {
            let dropped = try spool.stageBody()
            try dropped.append(Array(repeating: 1, count: 100_000))
            #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == before, "an unnamed file has no name")
        }
        #expect(store(spool, message(3, body: Array(repeating: 2, count: 50_000)), staged: true) == .stored)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)).subtracting(before).allSatisfy { $0.hasSuffix(".seg") }, "only segments are new")
        spool.close()
    }
}

@Suite("Spool: body streams", .serialized)
struct BodyStreamTests {
    func finish(_ s: BodyStream) -> Result<StreamedBody, SpoolError> {
        let done = DispatchSemaphore(value: 0)
        let out = Mutex<Result<StreamedBody, SpoolError>?>(nil)
        s.finish { r in
            out.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return out.withLock { $0! }
    }

    func write(_ s: BodyStream, _ bytes: [UInt8]) { bytes.withUnsafeBytes { s.write($0) } }

    @Test("a small body stays in memory; a large one is staged whole, in order")
    func smallAndLarge() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir)
        let small = BodyStream(spool: spool, inlineLimit: 1000)
        write(small, Array(repeating: 1, count: 600))
        write(small, Array(repeating: 2, count: 400))
        guard case .success(.inMemory(let b)) = finish(small) else {
            Issue.record("not in memory")
            return
        }
        #expect(b == Array(repeating: 1, count: 600) + Array(repeating: 2, count: 400))
        let large = BodyStream(spool: spool, inlineLimit: 1000)
        var want: [UInt8] = []
        for i in 0..<300 {
            let piece = (0..<(i * 37 % 5000)).map { UInt8(truncatingIfNeeded: $0 &+ i) }
            want += piece
            write(large, piece)
        }
        guard case .success(.staged(let staged)) = finish(large) else {
            Issue.record("not staged")
            return
        }
        #expect(staged.length == want.count)
        #expect(try staged.read(at: 0, count: want.count) == want)
        spool.close()
    }

    @Test("past its floor a stream stays in memory only while the spool's streams hold less than the budget together")
    func inlineBudget() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir)
        // 100 KB bodies, floor 64 KiB, limit 256 KiB: in memory while the budget lasts.
        var held: [BodyStream] = []
        for _ in 0..<(spool.inlineBudget / (100 * 1024)) {
            let s = BodyStream(spool: spool)
            write(s, Array(repeating: 7, count: 100 * 1024))
            held.append(s)
        }
        #expect(spool.inlineBytes <= spool.inlineBudget)
        #expect(spool.inlineBytes > spool.inlineBudget - 200 * 1024)
        // The budget is used up: the next 100 KB body goes to a file past its floor…
        let over = BodyStream(spool: spool)
        write(over, Array(repeating: 8, count: 100 * 1024))
        guard case .success(.staged(let staged)) = finish(over) else {
            Issue.record("kept in memory over the budget")
            return
        }
        #expect(staged.length == 100 * 1024)
        // …but a body under the floor always stays in memory.
        let small = BodyStream(spool: spool)
        write(small, Array(repeating: 9, count: 60 * 1024))
        guard case .success(.inMemory(let b)) = finish(small) else {
            Issue.record("a small body went to a file")
            return
        }
        #expect(b.count == 60 * 1024)
        // Streams that finish or go away give their share back.
        for s in held.prefix(10) { _ = finish(s) }
        held.removeAll()
        #expect(spool.inlineBytes == 0)
        let again = BodyStream(spool: spool)
        write(again, Array(repeating: 1, count: 200 * 1024))
        guard case .success(.inMemory(let c)) = finish(again) else {
            Issue.record("not in memory once the budget is free")
            return
        }
        #expect(c.count == 200 * 1024)
        spool.close()
    }

    @Test("the spool's staging backlog counts every stream's bytes owed to the disk, and its waiters run once it falls")
    func backlogOverStreams() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = FaultInjectingFileSystem(PosixFileSystem.shared)
        let (spool, _) = try openSpool(dir, fs: fs)
        fs.setRule { $0.path.hasSuffix("(unnamed)") ? .block : nil }
        let a = BodyStream(spool: spool, inlineLimit: 10), b = BodyStream(spool: spool, inlineLimit: 10)
        for _ in 0..<5 {
            write(a, Array(repeating: 1, count: 10_000))
            write(b, Array(repeating: 2, count: 10_000))
        }
        #expect(waitUntil(10) { fs.blockedCalls > 0 })
        #expect(spool.backlog.current >= 90_000 && spool.backlog.current <= 100_000, "\(spool.backlog.current)")
        let low = DispatchSemaphore(value: 0), zero = DispatchSemaphore(value: 0)
        spool.backlog.whenBelow(25_000) { low.signal() }
        spool.backlog.whenBelow(0) { zero.signal() }
        #expect(low.wait(timeout: .now() + 0.2) == .timedOut, "not while the disk is frozen")
        fs.setRule(nil)
        fs.release()
        #expect(low.wait(timeout: .now() + 10) == .success)
        #expect(zero.wait(timeout: .now() + 10) == .success)
        #expect(spool.backlog.current == 0)
        _ = finish(a)
        _ = finish(b)
        spool.close()
    }

    @Test("under its floor a stream stays in memory only within the budget and the floor allowance")
    func floorAllowance() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir)
        // Streams at their floor (60 KiB each) until budget + allowance is used up.
        var held: [BodyStream] = []
        let each = 60 * 1024
        for _ in 0..<((spool.inlineBudget + spool.floorAllowance) / each) {
            let s = BodyStream(spool: spool)
            write(s, Array(repeating: 3, count: each))
            held.append(s)
        }
        #expect(spool.inlineBytes <= spool.inlineBudget + spool.floorAllowance)
        let over = BodyStream(spool: spool)
        write(over, Array(repeating: 4, count: each))
        guard case .success(.staged(let staged)) = finish(over) else {
            Issue.record("kept in memory past the floor allowance")
            return
        }
        #expect(staged.length == each)
        for s in held { _ = finish(s) }
        spool.close()
    }

    @Test("every drain waiter is called, each at its own bound: a second waiter does not replace the first")
    func everyDrainWaiterIsCalled() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = FaultInjectingFileSystem(PosixFileSystem.shared)
        let (spool, _) = try openSpool(dir, fs: fs)
        fs.setRule { $0.path.hasSuffix("(unnamed)") ? .block : nil }
        let s = BodyStream(spool: spool, inlineLimit: 10)
        for _ in 0..<10 { write(s, Array(repeating: 7, count: 10_000)) }
        #expect(waitUntil(10) { fs.blockedCalls > 0 })
        let first = DispatchSemaphore(value: 0), second = DispatchSemaphore(value: 0), third = DispatchSemaphore(value: 0)
        s.whenDrained(below: 50_000) { first.signal() }
        s.whenDrained(below: 0) { second.signal() }
        s.whenDrained(below: 1_000_000) { third.signal() }
        #expect(third.wait(timeout: .now()) == .success, "a bound already met is called at once")
        fs.setRule(nil)
        fs.release()
        #expect(first.wait(timeout: .now() + 10) == .success)
        #expect(second.wait(timeout: .now() + 10) == .success)
        #expect(s.buffered == 0)
        _ = finish(s)
        spool.close()
    }

    @Test("a frozen disk holds the stager, not the writer: buffered grows, the spool says stalled, and it drains after the thaw")
    func frozenDisk() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = FaultInjectingFileSystem(PosixFileSystem.shared)
        var options = testOptions()
        options.stallAfter = 0.2
        let (spool, _) = try openSpool(dir, fs: fs, options: options)
        fs.setRule { $0.path.hasSuffix("(unnamed)") ? .block : nil }
        let s = BodyStream(spool: spool, inlineLimit: 10)
        let started = Date()
        for _ in 0..<50 { write(s, Array(repeating: 7, count: 10_000)) }
        #expect(Date().timeIntervalSince(started) < 5, "write returned at once though the disk is frozen")
        #expect(waitUntil(10) { fs.blockedCalls > 0 })
        #expect(s.buffered >= 490_000)
        #expect(waitUntil(10) { if case .stalled = spool.condition { return true }; return false }, "\(spool.condition)")
        let drained = DispatchSemaphore(value: 0)
        s.whenDrained(below: 0) { drained.signal() }
        fs.setRule(nil)
        fs.release()
        drained.wait()
        guard case .success(.staged(let staged)) = finish(s) else {
            Issue.record("not staged")
            return
        }
        #expect(staged.length == 500_000)
        #expect(waitUntil(10) { spool.condition == .ok })
        spool.close()
    }
}

@Suite("Spool: what streamed bodies hold", .serialized)
struct StagedResourceTests {
    func openFiles() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0 }

    @Test("a stream dropped before its end (the client left) closes its staged file at once, not after later traffic")
    func droppedStreamLetsGo() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir)
        // The stager thread exists and is idle.
        var warm: BodyStream? = BodyStream(spool: spool, inlineLimit: 0)
        Array(repeating: UInt8(1), count: 10).withUnsafeBytes { warm!.write($0) }
        warm!.whenDrained(below: 0) {}
        #expect(waitUntil(10) { warm!.buffered == 0 })
        warm = nil
        #expect(waitUntil(10) { openFiles() == openFiles() })
        let before = openFiles()
        for _ in 0..<4 {
            let s = BodyStream(spool: spool, inlineLimit: 1000)
            let chunk = [UInt8](repeating: 9, count: 100_000)
            for _ in 0..<5 { chunk.withUnsafeBytes { s.write($0) } }
            #expect(waitUntil(10) { s.buffered == 0 })
        }
        // (Each stream is gone; so must its unnamed file be.)
        #expect(waitUntil(10) { openFiles() <= before }, "\(openFiles()) descriptors open, \(before) before")
        spool.close()
    }

    @Test("streamed bodies waiting for the writer do not count as memory: a frozen sync does not refuse them")
    func stagedBytesAreNotMemory() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fs = FaultInjectingFileSystem(PosixFileSystem.shared)
        var options = testOptions()
        options.maxQueuedBytes = 100_000
        options.stallAfter = 60
        let (spool, _) = try openSpool(dir, fs: fs, options: options)
        fs.setRule { $0.operation == .sync && $0.path.hasSuffix(".seg") ? .block : nil }
        var queued = 0
        for i in 0..<4 {
            let staged = try spool.stageBody()
            try staged.append([UInt8](repeating: 3, count: 300_000))
            let m = SpoolMessage(id: UInt64(10 + i), arrival: 1, sender: "s@example.test", body: [], deliveries: [SpoolDelivery(kind: .mailbox, recipient: "r@example.test", destination: "r@example.test")])
            if case .queued = spool.accept(m, bodyParts: [], staged: staged, completion: { _ in }) { queued += 1 }
        }
        #expect(queued == 4, "staged messages refused as if their bodies were in memory")
        // An in-memory body of that size is still bounded.
        let big = SpoolMessage(id: 99, arrival: 1, sender: "s@example.test", body: [UInt8](repeating: 4, count: 300_000), deliveries: [SpoolDelivery(kind: .mailbox, recipient: "r@example.test", destination: "r@example.test")])
        let a = spool.accept(big, completion: { _ in })
        let b = spool.accept(SpoolMessage(id: 100, arrival: 1, sender: "s@example.test", body: [UInt8](repeating: 4, count: 300_000), deliveries: big.deliveries), completion: { _ in })
        if case .queued = a, case .queued = b { Issue.record("two 300 KB in-memory bodies over a 100 KB bound were both queued") }
        fs.setRule(nil)
        fs.release()
        #expect(spool.waitForWrites(timeout: 30))
        spool.close()
    }
}
