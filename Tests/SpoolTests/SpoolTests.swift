import Foundation
import Spool
import Synchronization
import TernTestSupport
import Testing

func tempDir() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)").path
}

let testKey = SpoolKey(header: 0x1234_5678, payload: 0x9ABC_DEF0)

func sample(_ id: UInt64, body: String = "Subject: hi\r\n\r\nbody\r\n") -> SpoolMessage {
    SpoolMessage(
        id: id, arrival: 1_700_000_000, sender: "jöran@bücher.example", body: Array(body.utf8),
        deliveries: [
            SpoolDelivery(kind: .mailbox, recipient: "Bob+x@example.test", destination: "bob@example.test", notify: 6, originalRecipient: "rfc822;Bob+x@example.test"),
            SpoolDelivery(kind: .pipe, recipient: "tubo@example.test", destination: "/bin/cat\u{0}-u"),
        ], envelopeID: "env-1", ret: 2, bodyFlags: 0x81)
}

/// A segment file's path, as the spool names it.
func segmentPath(_ dir: String, _ n: UInt64) -> String { SegmentFiles.path(dir, n) }

/// Options for tests: a small segment size, retries that do not keep a test waiting.
func testOptions(segmentSize: Int = 64 * 1024 * 1024, reserve: Int = 0) -> SpoolOptions {
    var o = SpoolOptions()
    o.segmentSize = segmentSize
    o.reserveBytes = reserve
    o.retryInterval = 0.002
    return o
}

/// Opens and recovers a spool.
func openSpool(_ dir: String, fs: any SpoolFileSystem = PosixFileSystem.shared, options: SpoolOptions = testOptions()) throws -> (Spool, RecoveryReport) {
    let spool = try Spool(directory: dir, options: options, fileSystem: fs)
    let report = try spool.recover()
    return (spool, report)
}

/// Stores a message as a session would: the outcome once the spool answers (nil: refused at once).
/// `staged`: its body streamed in as privilege separation does (Spool+Staging.swift).
func store(_ spool: Spool, _ m: SpoolMessage, staged: Bool = false) -> AcceptOutcome? {
    let done = DispatchSemaphore(value: 0)
    let outcome = Mutex<AcceptOutcome?>(nil)
    switch submit(spool, m, staged: staged, completion: { o in
        outcome.withLock { $0 = o }
        done.signal()
    }) {
    case .refused, nil: return nil
    case .queued: done.wait()
    }
    return outcome.withLock { $0 }
}

/// Hands a message to the spool, its body in memory or (`staged`) streamed: the first bytes as a
/// part in memory (as the trace fields are), the rest appended to a staged body in pieces of
/// uneven size. nil: staging failed (a full or failing disk), as a session's 452 would be.
func submit(_ spool: Spool, _ m: SpoolMessage, staged: Bool, completion: @escaping @Sendable (AcceptOutcome) -> Void) -> AcceptResult? {
    guard staged else { return spool.accept(m, completion: completion) }
    guard let body = try? spool.stageBody() else { return nil }
    let split = min(m.body.count, 40)
    var at = split
    var piece = 1
    while at < m.body.count {
        let n = min(m.body.count - at, piece)
        do { try body.append(Array(m.body[at..<(at + n)])) } catch { return nil }
        at += n
        piece = piece * 3 + 7
    }
    var envelope = m
    envelope.body = []
    return spool.accept(envelope, bodyParts: [Array(m.body[0..<split])], staged: body, completion: completion)
}

/// Records a status and waits until it is durable.
func recordDurably(_ spool: Spool, _ s: SpoolStatus) {
    let done = DispatchSemaphore(value: 0)
    spool.record(s) { done.signal() }
    done.wait()
}

/// Every delivery of a message delivered, durably.
func finish(_ spool: Spool, _ m: SpoolMessage) {
    for d in 0..<m.deliveries.count { recordDurably(spool, SpoolStatus(id: m.id, delivery: UInt32(d), state: .delivered)) }
}

/// The ids the spool still owes.
func pendingIDs(_ spool: Spool) -> [UInt64] { spool.pendingMessages.map(\.id) }

@Suite("Spool records")
struct RecordTests {
    @Test("segment file names: only numbers Tern could write; a stray ffffffffffffffff.seg is not one (its successor would overflow)")
    func segmentNames() {
        #expect(SegmentFiles.number("0000000000000001.seg") == 1)
        #expect(SegmentFiles.number(SegmentFiles.name(0x1234)) == 0x1234)
        #expect(SegmentFiles.number("ffffffffffffffff.seg") == nil)
        #expect(SegmentFiles.number("0000000000000000.seg") == nil)
        #expect(SegmentFiles.number("000000000000000g.seg") == nil)
    }

    @Test("message, status and segment records round-trip, padded to multiples of 8")
    func roundTrip() {
        let records: [SpoolRecord] = [
            .message(sample(42)), .status(SpoolStatus(id: 42, delivery: 1, state: .deferred, attempts: 3, nextAttempt: 1_700_000_600, reason: "451 4.3.0 later")),
            .status(SpoolStatus(id: 42, delivery: 0, state: .removed)), .segmentStart(key: testKey, segment: 7), .segmentEnd,
        ]
        for r in records {
            let bytes = r.encoded(key: testKey)
            #expect(bytes.count % 8 == 0)
            let decoded = bytes.withUnsafeBytes { SpoolRecord.decode($0, key: testKey) }
            #expect(decoded == .record(r, length: bytes.count))
        }
    }

    @Test("every truncation is incomplete; every flipped bit outside the state word is caught, in the header with no length trusted")
    func damage() {
        let bytes = SpoolRecord.message(sample(7)).encoded(key: testKey)
        for k in 0..<bytes.count {
            let cut = Array(bytes[..<k])
            #expect(cut.withUnsafeBytes { SpoolRecord.decode($0, key: testKey) } == .incomplete, "cut at \(k)")
        }
        for bit in 0..<(bytes.count * 8) {
            var bad = bytes
            bad[bit / 8] ^= UInt8(1 << (bit % 8))
            let result = bad.withUnsafeBytes { SpoolRecord.decode($0, key: testKey) }
            let inState = (SpoolRecord.stateOffset..<(SpoolRecord.stateOffset + 4)).contains(bit / 8)
            switch result {
            case .record(let r, _):
                #expect(inState && r == .message(sample(7)), "flip of bit \(bit) decoded")
                guard case .header(let h) = bad.withUnsafeBytes({ SpoolRecord.header($0, key: testKey) }) else { continue }
                #expect(h.stateDamaged, "a damaged state word is noticed")
            case .corrupt(_, let header):
                #expect(!inState)
                if bit / 8 < 24 { #expect(header == nil, "flip of header bit \(bit): the header is not trusted") }
            default:
                Issue.record("flip of bit \(bit): \(result)")
            }
        }
    }

    @Test("records are checked with the spool's key: the same bytes under another key are not records")
    func keyed() {
        let bytes = SpoolRecord.status(SpoolStatus(id: 1, delivery: 0, state: .delivered)).encoded(key: testKey)
        let other = SpoolKey(header: 1, payload: 2)
        #expect(bytes.withUnsafeBytes { SpoolRecord.header($0, key: other) } == .invalid("header checksum mismatch"))
        // The segment start is readable without the key: it carries it.
        let start = SpoolRecord.segmentStart(key: testKey, segment: 3).encoded(key: testKey)
        #expect(start.withUnsafeBytes { SpoolRecord.decode($0, key: other) } == .record(.segmentStart(key: testKey, segment: 3), length: start.count))
    }

    @Test("the dead mark: only the state word changes, and the record reads as a finished message's")
    func dead() {
        var bytes = SpoolRecord.message(sample(9)).encoded(key: testKey)
        let d = SpoolRecord.deadState
        for k in 0..<4 { bytes[SpoolRecord.stateOffset + k] = UInt8(truncatingIfNeeded: d >> (8 * k)) }
        #expect(bytes.withUnsafeBytes { SpoolRecord.decode($0, key: testKey) } == .dead(id: 9, length: bytes.count))
        // The body of a dead record is not read (it may have been freed).
        for k in SpoolRecord.headerSize..<bytes.count { bytes[k] = 0 }
        #expect(bytes.withUnsafeBytes { SpoolRecord.decode($0, key: testKey) } == .dead(id: 9, length: bytes.count))
    }

    @Test("CRC-32C known answer")
    func crc() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        "123456789".utf8.withContiguousStorageIfAvailable { #expect(CRC32C.software(UnsafeRawBufferPointer($0)) == 0xE306_9283) }
    }

    @Test("the CPU instruction and the tables agree at every length, alignment and seed")
    func crcPaths() {
        var g = SystemRandomNumberGenerator()
        let data = (0..<4099).map { _ in UInt8.random(in: 0...255, using: &g) }
        data.withUnsafeBytes { all in
            for offset in 0..<9 {
                for length in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4090] {
                    let b = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
                    let seed = UInt32(truncatingIfNeeded: length &* 2_654_435_761)
                    #expect(CRC32C.checksum(b, seed: seed) == CRC32C.software(b, seed: seed), "offset \(offset) length \(length)")
                }
            }
            // Seeding chains: the checksum of a whole is the checksum of its second half seeded with the first.
            let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[0..<1000]))
            #expect(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[1000..<4099]), seed: first) == CRC32C.checksum(all))
        }
    }
}

@Suite("Segment decoding")
struct SegmentDecodingTests {
    /// A segment as the spool writes it: its start record, records, and (closed) its end record.
    func segment(_ records: [SpoolRecord], closed: Bool) -> [UInt8] {
        var out = SpoolRecord.segmentStart(key: testKey, segment: 1).encoded(key: testKey)
        for r in records { r.encode(into: &out, key: testKey) }
        if closed { SpoolRecord.segmentEnd.encode(into: &out, key: testKey) }
        return out
    }

    func decode(_ b: [UInt8], last: Bool, key: SpoolKey? = nil) -> (ids: [UInt64], SegmentDecoding) {
        var ids: [UInt64] = []
        let d = b.withUnsafeBytes { SegmentDecoder.decode($0, segment: 1, knownKey: key, tornTailPossible: last) { r in
            if case .live(.message(let m), _) = r { ids.append(m.id) }
        } }
        return (ids, d)
    }

    @Test("a flipped bit in a body is damage with the message named, and every record after it is read")
    func resyncAfterBody() {
        let records = (1...8).map { SpoolRecord.message(sample(UInt64($0))) }
        var b = segment(records, closed: true)
        let third = segment(Array(records[0..<2]), closed: false).count
        b[third + 60] ^= 0x04
        for last in [true, false] {
            let (ids, d) = decode(b, last: last)
            #expect(ids == [1, 2, 4, 5, 6, 7, 8])
            #expect(d.damage.count == 1 && d.damage[0].lostMessage == 3 && d.damage[0].offset == third, "\(d.damage)")
            #expect(d.tornTail == nil && d.closed)
        }
    }

    @Test("a flipped bit in a header: resynchronised at the next record, the region not identified")
    func resyncAfterHeader() {
        let records = (1...8).map { SpoolRecord.message(sample(UInt64($0))) }
        var b = segment(records, closed: false)
        let fifth = segment(Array(records[0..<4]), closed: false).count
        b[fifth + 5] ^= 0x80  // the length field
        let (ids, d) = decode(b, last: true)
        #expect(ids == [1, 2, 3, 4, 6, 7, 8], "the records after the damage are kept, even in the last segment")
        #expect(d.damage.count == 1 && d.damage[0].header == nil && d.tornTail == nil)
    }

    @Test("the torn tail of the last segment is cut; the same bytes anywhere else are damage")
    func tornTail() {
        let records = (1...5).map { SpoolRecord.message(sample(UInt64($0))) }
        let whole = segment(records, closed: false)
        let cut = Array(whole[..<(whole.count - 30)])
        let (ids, d) = decode(cut, last: true)
        #expect(ids == [1, 2, 3, 4])
        #expect(d.tornTail == segment(Array(records[0..<4]), closed: false).count && d.damage.isEmpty)
        let (older, d2) = decode(cut, last: false)
        #expect(older == [1, 2, 3, 4] && d2.tornTail == nil && d2.damage.count == 1)
        // A segment closed in good order has no torn tail: bytes after its end are not possible,
        // and damage before it is damage.
        var closed = segment(records, closed: true)
        closed[closed.count - 50] ^= 1
        let (_, d3) = decode(closed, last: true)
        #expect(d3.tornTail == nil && d3.damage.count == 1 && d3.closed)
    }

    @Test("records inside a message body never pass for records, whatever the body holds")
    func forgedRecordsInABody() {
        // A body made of spool records under another key, and even under the spool's own key
        // (which no sender knows): after damage to the message's header, resynchronisation must
        // not take the forged ones (other key) as records.
        var forged: [UInt8] = []
        for i in 100..<110 { SpoolRecord.message(SpoolMessage(id: UInt64(i), arrival: 0, sender: "x@y", body: [], deliveries: [SpoolDelivery(kind: .pipe, recipient: "a@b", destination: "/bin/sh\u{0}-c\u{0}evil")])).encode(into: &forged, key: SpoolKey(header: 0, payload: 0)) }
        let evil = SpoolMessage(id: 50, arrival: 0, sender: "x@y", body: forged, deliveries: [SpoolDelivery(kind: .mailbox, recipient: "a@b", destination: "a@b")])
        var b = segment([.message(sample(1)), .message(evil), .message(sample(2))], closed: true)
        let at = segment([.message(sample(1))], closed: false).count
        b[at + 2] ^= 0x01  // the evil message's magic
        let (ids, d) = decode(b, last: false)
        #expect(ids == [1, 2], "\(ids)")
        #expect(d.damage.count == 1)
    }

    @Test("a segment whose start record is damaged is read with the key known from elsewhere")
    func damagedStart() {
        var b = segment((1...3).map { SpoolRecord.message(sample(UInt64($0))) }, closed: true)
        b[13] ^= 0x10  // in its header
        let (none, d0) = decode(b, last: false)
        #expect(none.isEmpty && d0.damage.count == 1, "no key: nothing can be trusted")
        let (ids, d) = decode(b, last: false, key: testKey)
        #expect(ids == [1, 2, 3] && d.damage.count == 1 && d.damage[0].offset == 0)
    }
}

@Suite("Spool log", .serialized)
struct SpoolLogTests {
    @Test("concurrent sessions share fdatasyncs, and every message comes back after a restart")
    func groupCommit() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir)
        let stored = Atomic<Int>(0)
        let threads = 16, perThread = 125
        let finished = DispatchGroup()
        for t in 0..<threads {
            finished.enter()
            Thread {
                for i in 0..<perThread {
                    if store(spool, sample(UInt64(t * 10_000 + i + 1))) == .stored { stored.add(1, ordering: .relaxed) }
                }
                finished.leave()
            }.start()
        }
        finished.wait()
        #expect(stored.load(ordering: .relaxed) == threads * perThread)
        #expect(spool.syncCount < threads * perThread, "group commit: \(spool.syncCount) fdatasyncs for \(threads * perThread) messages")
        #expect(spool.pendingCount == threads * perThread)
        spool.close()

        let (again, report) = try openSpool(dir)
        #expect(report.pendingMessages == threads * perThread)
        #expect(report.truncatedBytes == 0 && report.damage.isEmpty)
        #expect(pendingIDs(again).count == threads * perThread)
        let one = try again.readMessage(UInt64(5 * 10_000 + 7))
        #expect(one == sample(UInt64(5 * 10_000 + 7)), "read back whole, body included")
        again.close()
    }

    @Test("a crash in the middle of a write leaves a torn tail: cut, nothing before it lost, not damage, and writing goes on")
    func tornTail() throws {
        var cuts = 0
        for seed in UInt64(1)...24 {
            let dir = "/spool"
            let memory = MemoryFileSystem()
            let fs = FaultInjectingFileSystem(memory)
            let (spool, _) = try openSpool(dir, fs: fs)
            for i in 1...10 { #expect(store(spool, sample(UInt64(i), body: String(repeating: "x", count: 3000))) == .stored) }
            // The eleventh is written and its fdatasync hangs when the power goes: some of it, or
            // all, or none reached the disk.
            fs.setRule { $0.operation == .sync ? .block : nil }
            _ = spool.accept(sample(11, body: String(repeating: "y", count: 3000))) { _ in }
            #expect(waitUntil { fs.blockedCalls == 1 })
            var g = SplitMix(seed: seed)
            let after = memory.crashed(using: &g)
            fs.setRule(nil)
            fs.release()
            spool.close(grace: 0)
            let (again, report) = try openSpool(dir, fs: after)
            #expect(pendingIDs(again).filter { $0 <= 10 } == Array(1...10))
            #expect(report.damage.isEmpty, "a torn write is not damage: \(report.damage)")
            if report.truncatedBytes > 0 { cuts += 1 }
            #expect(store(again, sample(12)) == .stored)
            again.close()
            let (third, r3) = try openSpool(dir, fs: after)
            #expect(r3.truncatedBytes == 0 && r3.damage.isEmpty && pendingIDs(third).contains(12))
            third.close()
        }
        #expect(cuts > 0, "some crash cut a record in the middle")
    }

    @Test("segments rotate; records are read back from any of them; damage in an older one is reported and kept aside")
    func rotation() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (spool, _) = try openSpool(dir, options: testOptions(segmentSize: 2000))
        for i in 1...30 { #expect(store(spool, sample(UInt64(i))) == .stored) }
        #expect(spool.segments().count > 3)
        for i in 1...30 { #expect(try spool.readMessage(UInt64(i)) == sample(UInt64(i))) }
        spool.close()
        // A flipped bit in the body of the second message of the first segment.
        let first = try #require(Spool(directory: dir).segments().first)
        var data = try Data(contentsOf: URL(fileURLWithPath: segmentPath(dir, first)))
        let firstRecord = SpoolRecord.message(sample(1)).encoded(key: testKey).count
        data[40 + firstRecord + 100] ^= 0x01
        try data.write(to: URL(fileURLWithPath: segmentPath(dir, first)))
        let (again, report) = try openSpool(dir, options: testOptions(segmentSize: 2000))
        #expect(report.damage.count == 1, "\(report.damage)")
        #expect(report.lostMessages == [2])
        #expect(pendingIDs(again) == [1] + Array(3...30))
        #expect(report.savedCopies == ["\(dir)/damaged/\(SegmentFiles.name(first))"])
        // Once nothing in it is owed, the damaged segment leaves the spool for damaged/.
        for id in pendingIDs(again) { finish(again, sample(id)) }
        #expect(again.waitForWrites())
        #expect(waitUntil { FileManager.default.fileExists(atPath: "\(dir)/damaged/\(SegmentFiles.name(first))") })
        #expect(!again.segments().contains(first))
        again.close()
    }
}

/// Record format 1 (what ternd wrote before format 2), for the take-over test.
enum FormatOne {
    static func put32(_ out: inout [UInt8], _ v: UInt32) { for k in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
    static func put64(_ out: inout [UInt8], _ v: UInt64) { put32(&out, UInt32(truncatingIfNeeded: v)); put32(&out, UInt32(truncatingIfNeeded: v >> 32)) }
    static func putString(_ out: inout [UInt8], _ s: String) { put32(&out, UInt32(s.utf8.count)); out += Array(s.utf8) }

    static func record(type: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var body = [type] + payload
        var out: [UInt8] = []
        put32(&out, 0x314E_5254)
        put32(&out, UInt32(12 + body.count))
        put32(&out, body.withUnsafeBytes { CRC32C.checksum($0) })
        out += body
        body.removeAll()
        return out
    }

    static func message(_ m: SpoolMessage) -> [UInt8] {
        var p: [UInt8] = []
        put64(&p, m.id)
        put64(&p, UInt64(bitPattern: m.arrival))
        putString(&p, m.sender)
        putString(&p, m.envelopeID)
        p.append(m.ret)
        p.append(m.bodyFlags)
        put32(&p, UInt32(m.deliveries.count))
        for d in m.deliveries {
            p.append(d.kind.rawValue)
            putString(&p, d.recipient)
            putString(&p, d.destination)
            p.append(d.notify)
            putString(&p, d.originalRecipient)
        }
        put64(&p, UInt64(m.body.count))
        p += m.body
        return record(type: 1, p)
    }

    static func status(_ s: SpoolStatus) -> [UInt8] {
        var p: [UInt8] = []
        put64(&p, s.id)
        put32(&p, s.delivery)
        p.append(s.state.rawValue)
        put32(&p, s.attempts)
        put64(&p, UInt64(bitPattern: s.nextAttempt))
        putString(&p, s.reason)
        return record(type: 2, p)
    }
}

@Suite("Spool: taking over format 1", .serialized)
struct FormatOneTests {
    @Test("a spool of format 1 is taken over: what is owed is written again with its state, the old segments go, restarts agree")
    func takeOver() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var seg = FormatOne.message(sample(1)) + FormatOne.message(sample(2)) + FormatOne.message(sample(3))
        seg += FormatOne.status(SpoolStatus(id: 1, delivery: 0, state: .delivered)) + FormatOne.status(SpoolStatus(id: 1, delivery: 1, state: .delivered))
        seg += FormatOne.status(SpoolStatus(id: 2, delivery: 0, state: .deferred, attempts: 1, nextAttempt: 100, reason: "first"))
        seg += FormatOne.status(SpoolStatus(id: 2, delivery: 0, state: .deferred, attempts: 2, nextAttempt: 200, reason: "451 second"))
        seg += FormatOne.status(SpoolStatus(id: 2, delivery: 1, state: .delivered))
        try Data(seg).write(to: URL(fileURLWithPath: segmentPath(dir, 1)))
        var (spool, report) = try openSpool(dir)
        #expect(report.migratedMessages == 2)
        #expect(!spool.segments().contains(1), "the old segment is gone")
        #expect(pendingIDs(spool) == [2, 3])
        #expect(spool.pendingMessage(2)?.deliveries[0].attempts == 2 && spool.pendingMessage(2)?.deliveries[0].nextAttempt == 200)
        #expect(spool.pendingMessage(2)?.deliveries[1].phase == .delivered)
        #expect(try spool.readMessage(2) == sample(2) && spool.readMessage(3) == sample(3))
        let listing = try QueueListing.read(directory: dir)
        #expect(listing.messages.map(\.id) == [2, 3] && listing.messages[0].pending[0].reason == "451 second")
        // New statuses win over the migrated ones, across a restart.
        recordDurably(spool, SpoolStatus(id: 2, delivery: 0, state: .delivered, attempts: 3))
        spool.close()
        (spool, report) = try openSpool(dir)
        #expect(report.migratedMessages == 0 && report.damage.isEmpty)
        #expect(pendingIDs(spool) == [3])
        spool.close()
    }
}
