import Foundation
import Spool
import Synchronization
import Testing

func tempDir() -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)").path
    return d
}

func sample(_ id: UInt64, body: String = "Subject: hi\r\n\r\nbody\r\n") -> SpoolMessage {
    SpoolMessage(
        id: id, arrival: 1_700_000_000, sender: "jöran@bücher.example", body: Array(body.utf8),
        deliveries: [
            SpoolDelivery(kind: .mailbox, recipient: "Bob+x@example.test", destination: "bob@example.test", notify: 6, originalRecipient: "rfc822;Bob+x@example.test"),
            SpoolDelivery(kind: .pipe, recipient: "tubo@example.test", destination: "/bin/cat\u{0}-u"),
        ], envelopeID: "env-1", ret: 2, bodyFlags: 0x81)
}

/// A segment file's path, as the spool names it.
func segmentPath(_ dir: String, _ n: UInt64) -> String {
    "\(dir)/\(String(repeating: "0", count: 15))\(String(n, radix: 16)).seg"
}

/// Appends half of `record` to the segment at `path`, as a crash (or a write in flight) leaves it.
func appendHalf(of record: [UInt8], to path: String) throws {
    let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    h.seekToEndOfFile()
    h.write(Data(record[..<(record.count / 2)]))
    try h.close()
}

/// Flips a byte of the last record of the first segment in `dir`; that segment's path.
func damageFirstSegment(_ dir: String) throws -> String {
    let first = try #require(Spool(directory: dir).segments().first)
    let path = segmentPath(dir, first)
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    data[data.count - 20] ^= 0xFF
    try data.write(to: URL(fileURLWithPath: path))
    return path
}

@Suite("Spool records")
struct RecordTests {
    @Test("message and status records round-trip")
    func roundTrip() {
        for r in [SpoolRecord.message(sample(42)), .status(SpoolStatus(id: 42, delivery: 1, state: .deferred, attempts: 3, nextAttempt: 1_700_000_600, reason: "451 4.3.0 later"))] {
            let bytes = r.encoded
            let decoded = bytes.withUnsafeBytes { SpoolRecord.decode($0) }
            #expect(decoded == .record(r, length: bytes.count))
        }
    }

    @Test("every truncation is incomplete, every flipped byte is caught")
    func damage() {
        let bytes = SpoolRecord.message(sample(7)).encoded
        for k in 0..<bytes.count {
            let cut = Array(bytes[..<k])
            #expect(cut.withUnsafeBytes { SpoolRecord.decode($0) } == .incomplete, "cut at \(k)")
        }
        for k in 0..<bytes.count {
            var bad = bytes
            bad[k] ^= 0x20
            switch bad.withUnsafeBytes({ SpoolRecord.decode($0) }) {
            case .record(let r, _): Issue.record("flip at \(k) decoded as \(r)")
            default: break
            }
        }
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

@Suite("Spool log", .serialized)
struct SpoolLogTests {
    @Test("concurrent appends share fdatasyncs and all come back after a restart")
    func groupCommit() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        _ = try spool.recover { _, _ in }
        let acknowledged = Atomic<Int>(0)
        let threads = 16, perThread = 125
        // Each thread is a session: append, wait until durable, next message.
        let finished = DispatchGroup()
        for t in 0..<threads {
            finished.enter()
            Thread {
                let done = DispatchSemaphore(value: 0)
                for i in 0..<perThread {
                    let id = UInt64(t * 10_000 + i + 1)
                    let (_, pos) = try! spool.append(SpoolRecord.message(sample(id)).encoded)
                    spool.whenDurable(pos) { err in
                        #expect(err == nil)
                        acknowledged.add(1, ordering: .relaxed)
                        done.signal()
                    }
                    done.wait()
                }
                finished.leave()
            }.start()
        }
        finished.wait()
        #expect(acknowledged.load(ordering: .relaxed) == threads * perThread)
        #expect(spool.syncCount < threads * perThread, "group commit: \(spool.syncCount) fdatasyncs for \(threads * perThread) messages")
        spool.close()

        let again = try Spool(directory: dir)
        var ids: Set<UInt64> = []
        let report = try again.recover { r, _ in if case .message(let m) = r { ids.insert(m.id) } }
        #expect(ids.count == threads * perThread)
        #expect(report.truncatedBytes == 0 && report.corruptions.isEmpty)
        again.close()
    }

    @Test("a torn tail is cut, nothing before it is lost, and appending goes on")
    func tornTail() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        _ = try spool.recover { _, _ in }
        for i in 1...10 { _ = try spool.append(SpoolRecord.message(sample(UInt64(i))).encoded) }
        let seg = spool.currentSegment
        spool.close()
        // Half of an eleventh record, as a crash mid-write leaves it.
        let partial = SpoolRecord.message(sample(11)).encoded  // (recovery passes records without bodies)
        try appendHalf(of: partial, to: segmentPath(dir, seg))

        let again = try Spool(directory: dir)
        var ids: [UInt64] = []
        let report = try again.recover { r, _ in if case .message(let m) = r { ids.append(m.id) } }
        #expect(ids == Array(1...10))
        #expect(report.truncatedBytes == partial.count / 2)
        let (loc, _) = try again.append(SpoolRecord.message(sample(12)).encoded)
        #expect(try again.read(loc) == .message(sample(12)))
        again.close()
    }

    @Test("segments rotate; records are read back from any of them; damage is reported")
    func rotation() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir, segmentSize: 2000)
        _ = try spool.recover { _, _ in }
        var locations: [UInt64: RecordLocation] = [:]
        for i in 1...30 {
            let (loc, _) = try spool.append(SpoolRecord.message(sample(UInt64(i))).encoded)
            locations[UInt64(i)] = loc
        }
        #expect(Set(locations.values.map(\.segment)).count > 3)
        for (id, loc) in locations { #expect(try spool.read(loc) == .message(sample(id))) }
        spool.close()
        // Damage a record in the middle of the first segment.
        _ = try damageFirstSegment(dir)
        let again = try Spool(directory: dir, segmentSize: 2000)
        var count = 0
        let report = try again.recover { r, _ in if case .message = r { count += 1 } }
        #expect(report.corruptions.count == 1)
        #expect(count == 29)
        again.close()
    }
}

@Suite("Queue index")
struct QueueIndexTests {
    @Test("a message taken but only partly attempted is due again once rescheduled")
    func reschedule() {
        var q = QueueIndex()
        let loc = RecordLocation(segment: 1, offset: 0, length: 10)
        q.apply(.message(sample(1)), at: loc)
        q.apply(.status(SpoolStatus(id: 1, delivery: 1, state: .deferred, attempts: 1, nextAttempt: 100)), at: loc)
        _ = q.takeDue(now: 0)
        _ = q.takeDue(now: 100)  // taken (say, by a worker that then skips it): no entry is left
        q.apply(.status(SpoolStatus(id: 1, delivery: 0, state: .delivered)), at: loc)
        let lost = q.takeDue(now: 200)
        #expect(lost.isEmpty)
        q.reschedule(1)
        let again = q.takeDue(now: 200)
        #expect(again.map(\.id) == [1])
    }

    @Test("a replayed log schedules each message once, at its next attempt")
    func replay() {
        var q = QueueIndex()
        let loc = RecordLocation(segment: 1, offset: 0, length: 10)
        for id in UInt64(1)...1000 {
            q.apply(.message(sample(id)), at: loc, schedule: false)
            q.apply(.status(SpoolStatus(id: id, delivery: 0, state: .deferred, attempts: 1, nextAttempt: 5000 + Int64(id))), at: loc, schedule: false)
            q.apply(.status(SpoolStatus(id: id, delivery: 1, state: .delivered)), at: loc, schedule: false)
        }
        q.scheduleAll()
        let none = q.takeDue(now: 5000)
        #expect(none.isEmpty)
        let next = q.nextDue()
        #expect(next == 5001)
        let some = q.takeDue(now: 5010)
        #expect(some.map(\.id).sorted() == Array(1...10))
    }

    @Test("deliveries finish a message; an emptied segment is reported; deferred ones come due")
    func lifecycle() {
        var q = QueueIndex()
        let loc1 = RecordLocation(segment: 1, offset: 0, length: 10)
        q.apply(.message(sample(1)), at: loc1)
        q.apply(.message(sample(2)), at: RecordLocation(segment: 1, offset: 10, length: 10))
        #expect(q.count == 2)
        let first = q.takeDue(now: 0)  // (mutating calls stay outside #expect, which may work on a copy)
        #expect(first.map(\.id).sorted() == [1, 2])
        let e1 = q.apply(.status(SpoolStatus(id: 1, delivery: 0, state: .delivered)), at: loc1)
        let e2 = q.apply(.status(SpoolStatus(id: 1, delivery: 1, state: .failed, reason: "exit 1")), at: loc1)
        #expect(e1 == [] && e2 == [])
        #expect(q.count == 1)
        q.apply(.status(SpoolStatus(id: 2, delivery: 0, state: .deferred, attempts: 1, nextAttempt: 500)), at: loc1)
        q.apply(.status(SpoolStatus(id: 2, delivery: 1, state: .delivered)), at: loc1)
        let next = q.nextDue()
        #expect(next == 500)
        let early = q.takeDue(now: 499)
        #expect(early.isEmpty)
        let due = q.takeDue(now: 500)
        #expect(due.map(\.id) == [2])
        let emptied = q.apply(.status(SpoolStatus(id: 2, delivery: 0, state: .delivered)), at: loc1)
        #expect(emptied == [1])
        #expect(q.count == 0)
        #expect(q.emptySegments(among: [1, 2]) == [1, 2])
    }
}

@Suite("Queue listing (ternctl queue)")
struct QueueListingTests {
    func message(_ id: UInt64, arrival: Int64, deliveries: Int) -> SpoolMessage {
        SpoolMessage(
            id: id, arrival: arrival, sender: "bob@example.test", body: [],
            deliveries: (0..<deliveries).map { SpoolDelivery(kind: .remote, recipient: "team@example.test", destination: "r\($0)@far.example") })
    }

    @Test("only deliveries still owed are listed, with their latest state and reason; finished messages are left out, oldest first")
    func listing() {
        let at = RecordLocation(segment: 1, offset: 0, length: 300)
        let records: [(SpoolRecord, RecordLocation)] = [
            (.message(message(2, arrival: 200, deliveries: 3)), at),
            (.message(message(1, arrival: 100, deliveries: 1)), at),
            (.message(message(3, arrival: 50, deliveries: 1)), at),
            (.status(SpoolStatus(id: 2, delivery: 0, state: .delivered)), at),
            (.status(SpoolStatus(id: 2, delivery: 1, state: .deferred, attempts: 1, nextAttempt: 260, reason: "first reason")), at),
            (.status(SpoolStatus(id: 2, delivery: 1, state: .deferredWarned, attempts: 2, nextAttempt: 380, reason: "mx said: 451 later")), at),
            (.status(SpoolStatus(id: 3, delivery: 0, state: .failed, reason: "550")), at),
            (.status(SpoolStatus(id: 9, delivery: 0, state: .deferred, nextAttempt: 1)), at),  // its message was removed
            (.status(SpoolStatus(id: 2, delivery: 7, state: .delivered)), at),  // no such delivery
        ]
        let l = QueueListing(records: records)
        #expect(l.messages.map(\.id) == [1, 2], "oldest first; message 3 is finished")
        #expect(l.pendingDeliveries == 3)
        let two = l.messages[1]
        #expect(two.spooledBytes == 300 && two.sender == "bob@example.test" && two.arrival == 200)
        #expect(two.pending.map(\.delivery.destination) == ["r1@far.example", "r2@far.example"])
        #expect(two.pending[0].state == .deferredWarned && two.pending[0].attempts == 2 && two.pending[0].nextAttempt == 380)
        #expect(two.pending[0].reason == "mx said: 451 later")
        #expect(two.pending[1].state == nil && two.pending[1].attempts == 0, "not tried yet")
        #expect(QueueListing(records: []).messages.isEmpty)
    }

    @Test("the read-only scan sees what recovery sees, changes nothing, takes a tail being written for a write in flight, and reports damage")
    func scan() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir, segmentSize: 2000)
        _ = try spool.recover { _, _ in }
        for i in 1...20 { _ = try spool.append(SpoolRecord.message(sample(UInt64(i))).encoded) }
        _ = try spool.append(SpoolRecord.status(SpoolStatus(id: 1, delivery: 0, state: .delivered)).encoded)
        _ = try spool.append(SpoolRecord.status(SpoolStatus(id: 1, delivery: 1, state: .delivered)).encoded)
        _ = try spool.append(SpoolRecord.status(SpoolStatus(id: 2, delivery: 1, state: .deferred, attempts: 1, nextAttempt: 99, reason: "busy")).encoded)
        let last = spool.currentSegment
        // Half of a record, as a writer in the middle of a write leaves it (ternd still running).
        let path = segmentPath(dir, last)
        try appendHalf(of: SpoolRecord.message(sample(21)).encoded, to: path)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int

        let l = try QueueListing.read(directory: dir)
        #expect(l.damage.isEmpty, "\(l.damage)")
        #expect(l.messages.map(\.id) == Array(2...20))
        #expect(l.messages[0].pending.count == 2 && l.messages[0].pending[1].reason == "busy")
        #expect(l.messages[0].pending[0].delivery == sample(2).deliveries[0])
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == size, "the torn tail is left to its writer")
        spool.close()

        // Damage before the end of an older segment is reported; what follows it there is not read.
        let firstPath = try damageFirstSegment(dir)
        let damaged = try QueueListing.read(directory: dir)
        #expect(damaged.damage.count == 1 && damaged.damage[0].contains(firstPath), "\(damaged.damage)")
        #expect(damaged.messages.count == 18)
        #expect(try QueueListing.read(directory: dir + "-none").messages.isEmpty, "no spool: nothing owed")
    }
}
