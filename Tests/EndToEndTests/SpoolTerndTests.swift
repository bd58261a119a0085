// ternd's spool under the failures issue 15 reported, end to end: many sessions of large
// messages, a full disk, restarts while a receiver defers one domain, a frozen disk, a flipped
// bit, a Maildir that cannot be written. Every acknowledged message is checked by its Message-ID.
import Foundation
import Glibc
import Synchronization
import Testing

/// The Message-ID of a delivered message (from its first 16 KiB).
func messageID(ofFile path: String) -> String? {
    guard let h = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? h.close() }
    let head = String(decoding: h.readData(ofLength: 16 * 1024), as: UTF8.self)
    for line in head.components(separatedBy: "\r\n") {
        if line.lowercased().hasPrefix("message-id:") {
            return line.dropFirst("message-id:".count).trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "<>"))
        }
        if line.isEmpty { break }
    }
    return nil
}

/// Takes delivered messages out of a Maildir's new/ as they arrive, counting each Message-ID
/// (so a long run of large messages does not fill the disk).
final class MaildirConsumer: @unchecked Sendable {
    let dir: String
    let seen = Mutex<[String: Int]>([:])
    let stopping = Atomic<Bool>(false)
    var thread: Thread?

    init(dir: String) { self.dir = dir }

    func start() {
        let t = Thread { [self] in
            while !stopping.load(ordering: .relaxed) {
                if drain() == 0 { usleep(20_000) }
            }
            _ = drain()
        }
        thread = t
        t.start()
    }

    @discardableResult
    func drain() -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for n in names {
            let path = "\(dir)/\(n)"
            let id = messageID(ofFile: path) ?? "(none)"
            seen.withLock { $0[id, default: 0] += 1 }
            unlink(path)
        }
        return names.count
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        while let t = thread, !t.isFinished { usleep(10_000) }
    }

    var counts: [String: Int] { seen.withLock { $0 } }
}

func acknowledged(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

/// The pid of ternd when it runs behind a launcher (`unshare … sh -c '… exec ternd'` keeps one).
extension TerndProcess {
    var pid: Int32 { process?.processIdentifier ?? 0 }
    /// A path as ternd sees it (inside its mount namespace).
    func inside(_ path: String) -> String { "/proc/\(pid)/root\(path)" }
}

@Suite("ternd spool: losses and duplicates", .serialized)
struct SpoolTerndTests {
    @Test("30 sessions of 5 MB messages for 20 s: every acknowledged message is delivered exactly once, and a restart delivers none again")
    func concurrentLargeMessages() throws {
        let t = try TerndProcess(users: ["rcpt"], aliases: "")
        defer { t.cleanUp() }
        try t.start()
        let consumer = MaildirConsumer(dir: "\(t.dir)/mail/example.test/rcpt/new")
        consumer.start()
        defer { consumer.stop() }
        let ids = "\(t.dir)/acknowledged.txt"
        let r = try run(ternbenchPath, [
            "send", "--server", "127.0.0.1:\(t.port)", "--sessions", "30", "--size", "5000000", "--duration", "20",
            "--to", "rcpt@example.test", "--message-ids", ids, "--json", "--timeout", "120",
        ], timeout: 400)
        let acked = acknowledged(ids)
        #expect(acked.count >= 60, "\(r.out) \(r.err)")
        #expect(Set(acked).count == acked.count, "Message-IDs are unique")
        #expect(waitFor(300) { Set(consumer.counts.keys).isSuperset(of: acked) }, "delivered \(consumer.counts.count) of \(acked.count)")
        let counts = consumer.counts
        let missing = acked.filter { counts[$0] == nil }
        let twice = counts.filter { $0.value > 1 }
        #expect(missing.isEmpty, "acknowledged, never delivered: \(missing.prefix(10))")
        #expect(twice.isEmpty, "delivered more than once: \(twice.prefix(10))")
        let stray = Set(counts.keys).subtracting(acked)
        #expect(stray.isEmpty, "delivered without an acknowledgement: \(stray.prefix(10))")
        #expect(!t.log.contains("cannot read message"), "\(t.log.suffix(2000))")
        print("spool e2e: \(acked.count) messages of 5 MB acknowledged by 30 sessions in 20 s, each delivered once")
        #expect(t.stop() == 0)
        // A restart owes nothing and delivers nothing again.
        try t.start()
        #expect(t.log.contains(" 0 messages pending"), "\(t.log.suffix(1500))")
        #expect(t.stop() == 0)
        consumer.drain()
        #expect(consumer.counts.values.allSatisfy { $0 == 1 })
    }

    @Test("a full disk: a delivery's status still gets written (the reserve), it is delivered once, mail is refused with 452 4.3.1 until there is room again")
    func diskFullWithReserve() throws {
        let t = try TerndProcess(extraConfig: "limits {\nretry-interval 1s\nretry-max-interval 1s\n}")
        defer { t.cleanUp() }
        let tmp = "\(t.dir)/mail/example.test/bob/tmp"
        // Bob's Maildir is broken (a file where tmp/ should be): his mail waits, deferred.
        try FileManager.default.removeItem(atPath: tmp)
        FileManager.default.createFile(atPath: tmp, contents: Data())
        try t.start(spoolLimitKiB: 96 * 1024)
        // A hundred messages wait (their statuses will need more room than the last page of a
        // segment has to spare).
        var ids: [String] = []
        for i in 0..<100 { ids.append(try submit(t, to: ["bob@example.test"], subject: "waits for the disk \(i)")) }
        #expect(waitFor(20) { ids.allSatisfy { t.log.contains("\($0): to=<bob@example.test> deferred") } }, "\(t.log.suffix(2000))")
        #expect(t.log.contains("Not a directory"), "a broken Maildir is a temporary failure")
        // Fill the spool's file system to the last byte (as ternd sees it).
        let filler = t.inside("\(t.dir)/spool/filler")
        let fd = open(filler, O_WRONLY | O_CREAT, 0o600)
        #expect(fd >= 0)
        let block = [UInt8](repeating: 0x55, count: 1 << 20)
        while block.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        while block.withUnsafeBytes({ write(fd, $0.baseAddress, 512) }) > 0 {}
        close(fd)
        // Mend the Maildir: the next retries deliver, and their statuses must be written anyway.
        try FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: false)
        giveToQueueUser(tmp)  // (deliveries run as the queue user)
        #expect(waitFor(30) { t.mailbox("bob").count == 100 }, "\(t.mailbox("bob").count)")
        #expect(waitFor(30) { t.log.contains("gave up the 1024 KiB reserve") && t.log.contains("the statuses owed are written") }, "\(t.log.suffix(3000))")
        // Refused while the reserve is given up, at MAIL.
        let refused = String(decoding: try exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n".utf8)), as: UTF8.self)
        #expect(refused.contains("452 4.3.1"), "\(refused)")
        // Room again: the reserve comes back, mail is taken, and each waiting message was delivered once.
        unlink(filler)
        #expect(waitFor(30) { t.log.contains("reserve is in place again") }, "\(t.log.suffix(2000))")
        let second = try submit(t, to: ["bob@example.test"], subject: "after the disk had room")
        #expect(waitFor(20) { t.log.contains("\(second): to=<bob@example.test> delivered=") })
        for id in ids { #expect(lines(t, "\(id): to=<bob@example.test> delivered=").count == 1, "\(id)") }
        #expect(t.mailbox("bob").count == 101)
        #expect(t.stop() == 0)
    }

    @Test(
        "restarts while a receiver defers one domain (at RCPT, or at the end of the data): what was delivered is not delivered again, attempts are not forgotten, nothing bounces",
        arguments: ["rcpt", "data"])
    func restartsWithDeferringReceiver(deferAt: String) throws {
        let port = freePort()
        let received = FileManager.default.temporaryDirectory.appendingPathComponent("received-\(UUID().uuidString)").path
        defer { unlink(received) }
        // Deferred at RCPT, the next transaction on the connection needs an RSET first (aiosmtpd
        // answers a MAIL without it "503 Error: nested MAIL command").
        let receiver = try startSMTPPeer("deferring_receiver.py", port: port, [String(port), received, "other.example", deferAt])
        defer { stopPeer(receiver) }
        let t = try outboundTernd(port: port)
        defer { t.cleanUp() }
        try t.start()
        var ids: [String] = []
        for i in 0..<8 {
            // One message to both domains: a@remote.example is taken, c@other.example deferred.
            let mid = "restart-\(i)@test.example"
            let out = try exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<split@example.test>\r\nDATA\r\nMessage-ID: <\(mid)>\r\nSubject: r\(i)\r\n\r\nhi\r\n.\r\nQUIT\r\n".utf8))
            #expect(String(decoding: out, as: UTF8.self).contains("250 2.0.0 Ok: queued as"))
            ids.append(mid)
        }
        func deliveries() -> [String: Int] {
            var c: [String: Int] = [:]
            for line in ((try? String(contentsOfFile: received, encoding: .utf8)) ?? "").split(separator: "\n") { c[String(line), default: 0] += 1 }
            return c
        }
        func attempts() throws -> [Int] {
            let q = try run(ternctlPath, ["queue", "--config", "\(t.dir)/tern.conf"]).out
            return q.components(separatedBy: "\n").compactMap { line -> Int? in
                guard let r = line.range(of: "deferred, ") else { return nil }
                return Int(line[r.upperBound...].prefix { $0.isNumber })
            }
        }
        #expect(waitFor(30) { deliveries().count == 8 }, "\(deliveries())")
        #expect(waitFor(30) { (try? attempts())?.count == 8 && (try? attempts())!.allSatisfy { $0 >= 2 } }, "\((try? attempts()) ?? [])")
        for round in 0..<2 {
            let before = try attempts()
            #expect(t.stop() == 0)
            try t.start()
            #expect(waitFor(30) {
                guard let now = try? attempts(), now.count == 8 else { return false }
                return now.min()! > before.max()!
            }, "round \(round): attempts go on from where they were: before \(before), now \((try? attempts()) ?? [])")
        }
        let d = deliveries()
        #expect(d.count == 8 && d.values.allSatisfy { $0 == 1 }, "each message reached a@remote.example exactly once: \(d)")
        #expect(Set(d.keys) == Set(ids.map { "<\($0)> a@remote.example" }), "\(d)")
        #expect(t.mailbox("bob").isEmpty, "nothing bounced to the sender")
        #expect(!t.log.contains("said: 503"), "every transaction after a refused one began with RSET: \(lines(t, "said: 503").prefix(3))")
        #expect(t.stop() == 0)
    }

    @Test("a frozen spool disk: new sessions are greeted at once, a message waiting for the disk gets 451 4.3.0 and is never delivered, MAIL is refused while it lasts, and all is well after")
    func frozenDisk() throws {
        let t = try TerndProcess(extraConfig: "limits {\nspool-timeout 2s\n}")
        defer { t.cleanUp() }
        let mount = "\(t.dir)/spool"
        guard try mountLoopImage(at: mount) else { return }
        defer {
            _ = try? run("/sbin/fsfreeze", ["-u", mount])
            _ = t.stop()
            _ = try? run("/bin/umount", [mount])
        }
        try t.start()
        let first = try submit(t, to: ["bob@example.test"], subject: "before the freeze")
        #expect(waitFor(10) { t.mailbox("bob").count == 1 })
        #expect(try run("/sbin/fsfreeze", ["-f", mount]).status == 0)
        var thawed = false
        defer { if !thawed { _ = try? run("/sbin/fsfreeze", ["-u", mount]) } }

        // A message in flight: its 250 cannot come; the spool-timeout answers instead.
        let stalled = Mutex<String>("")
        let start = Date()
        let port = t.port
        let sender = Thread {
            let out = (try? exchange(port: port, send: Array("EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: during the freeze\r\n\r\nlost?\r\n.\r\nQUIT\r\n".utf8), timeout: 30)) ?? []
            stalled.withLock { $0 = String(decoding: out, as: UTF8.self) }
        }
        sender.start()
        // Meanwhile new sessions are greeted within a second.
        for _ in 0..<3 {
            let t0 = Date()
            let greeting = String(decoding: try exchange(port: t.port, send: Array("QUIT\r\n".utf8), timeout: 5), as: UTF8.self)
            #expect(greeting.hasPrefix("220 ") && Date().timeIntervalSince(t0) < 1, "greeted in \(Date().timeIntervalSince(t0)) s: \(greeting)")
        }
        while !sender.isFinished { usleep(10_000) }
        let reply = stalled.withLock { $0 }
        #expect(reply.contains("451 4.3.0"), "\(reply)")
        #expect(Date().timeIntervalSince(start) < 10, "answered after the spool timeout, not after the freeze")
        // While the disk stays frozen, MAIL says so at once.
        #expect(waitFor(10) {
            String(decoding: (try? exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n".utf8), timeout: 5)) ?? [], as: UTF8.self).contains("451 4.3.0")
        })
        #expect(try run("/sbin/fsfreeze", ["-u", mount]).status == 0)
        thawed = true
        // Mail is taken again; the message that got 451 is never delivered (withdrawn).
        var after = ""
        #expect(waitFor(20) {
            let out = String(decoding: (try? exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: after the thaw\r\n\r\nhi\r\n.\r\nQUIT\r\n".utf8))) ?? [], as: UTF8.self)
            after = out
            return out.contains("250 2.0.0 Ok: queued as")
        }, "\(after)")
        #expect(waitFor(20) { t.mailbox("bob").count == 2 }, "\(t.mailbox("bob"))")
        #expect(t.stop() == 0)
        try t.start()
        #expect(t.log.contains(" 0 messages pending"), "the withdrawn message is not owed: \(t.log.suffix(1500))")
        let subjects = t.mailbox("bob").map { (try? String(contentsOfFile: $0, encoding: .utf8)) ?? "" }
        #expect(subjects.filter { $0.contains("Subject: during the freeze") }.isEmpty, "a message answered 451 was delivered")
        #expect(subjects.filter { $0.contains("Subject: before the freeze") }.count == 1, "\(first) delivered once")
        #expect(t.stop() == 0)
    }

    @Test("one flipped bit in the last segment after a clean shutdown: only that message is lost, named in the log; the rest is delivered; the segment is kept in damaged/")
    func flippedBit() throws {
        let t = try TerndProcess(extraConfig: "limits {\nretry-interval 1s\nretry-max-interval 1s\n}")
        defer { t.cleanUp() }
        let tmp = "\(t.dir)/mail/example.test/bob/tmp"
        try FileManager.default.removeItem(atPath: tmp)
        FileManager.default.createFile(atPath: tmp, contents: Data())
        try t.start()
        var ids: [String] = []
        let body = Array(repeating: String(repeating: "z", count: 76), count: 260).joined(separator: "\r\n")
        for i in 0..<20 { ids.append(try submit(t, to: ["bob@example.test"], subject: "m\(i)", body: body)) }
        #expect(t.stop() == 0)
        let segments = try FileManager.default.contentsOfDirectory(atPath: "\(t.dir)/spool").filter { $0.hasSuffix(".seg") }.sorted()
        let last = try #require(segments.last)
        let path = "\(t.dir)/spool/\(last)"
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        // A bit in the middle of a message body.
        let zs = Data(repeating: UInt8(ascii: "z"), count: 64)
        let at = try #require(data.range(of: zs, in: (data.count / 2)..<data.count)).lowerBound + 10
        data[at] ^= 0x10
        try data.write(to: URL(fileURLWithPath: path))
        try t.start()
        let lost = ids.filter { t.log.contains("message(s) lost: \($0)") }
        #expect(lost.count == 1, "the log names the lost message: \(t.log.suffix(3000))")
        #expect(t.log.contains("spool damage: segment \(last) at byte"), "\(t.log.suffix(3000))")
        #expect(t.log.contains("\(t.dir)/spool/damaged/\(last)"))
        let listing = try run(ternctlPath, ["queue", "--config", "\(t.dir)/tern.conf"]).out
        #expect(ids.filter { listing.contains($0) }.count == 19, "\(listing)")
        try FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: false)
        giveToQueueUser(tmp)  // (deliveries run as the queue user)
        #expect(waitFor(30) { t.mailbox("bob").count == 19 }, "\(t.mailbox("bob").count)")
        #expect(waitFor(30) { FileManager.default.fileExists(atPath: "\(t.dir)/spool/damaged/\(last)") }, "kept once nothing in it is owed")
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(t.stop() == 0)
    }

    @Test("a Maildir that cannot be written (a file where a folder should be, a read-only mount) keeps the message: retried, delivered once it can be, never bounced")
    func unwritableMaildir() throws {
        let t = try TerndProcess(users: ["bob", "carol"], extraConfig: "limits {\nretry-interval 1s\nretry-max-interval 1s\n}")
        defer { t.cleanUp() }
        let bobTmp = "\(t.dir)/mail/example.test/bob/tmp"
        try FileManager.default.removeItem(atPath: bobTmp)
        FileManager.default.createFile(atPath: bobTmp, contents: Data())
        // Carol's Maildir is a read-only mount in ternd's own mount namespace.
        let carol = "\(t.dir)/mail/example.test/carol"
        try t.start(launcher: ["/usr/bin/unshare", "-m", "/bin/sh", "-c", "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && exec \"$@\"", carol])
        let toBob = try submit(t, to: ["bob@example.test"], subject: "to bob")
        let toCarol = try submit(t, to: ["carol@example.test"], subject: "to carol")
        #expect(waitFor(20) { t.log.contains("\(toBob): to=<bob@example.test> deferred (attempt 2") }, "\(t.log)")
        #expect(waitFor(20) { t.log.contains("\(toCarol): to=<carol@example.test> deferred (attempt 2") }, "\(t.log)")
        #expect(t.log.contains("Not a directory") && t.log.contains("Read-only file system"), "\(t.log)")
        #expect(!t.log.contains("failed:"), "nothing failed for good: \(t.log)")
        // Mend both.
        try FileManager.default.removeItem(atPath: bobTmp)
        try FileManager.default.createDirectory(atPath: bobTmp, withIntermediateDirectories: false)
        giveToQueueUser(bobTmp)  // (deliveries run as the queue user)
        let remount = try run("/usr/bin/nsenter", ["-t", String(t.pid), "-m", "/bin/mount", "-o", "remount,bind,rw", carol])
        #expect(remount.status == 0, "\(remount)")
        #expect(waitFor(20) { t.mailbox("bob").count == 1 && t.mailbox("carol").count == 1 }, "\(t.log)")
        // The Maildir file appears before the delivery is logged: wait for the log too.
        #expect(waitFor(20) { lines(t, "delivered=").count == 2 }, "\(t.log)")
        #expect(!t.log.contains("bounce"), "no report to the sender: \(t.log)")
        #expect(t.stop() == 0)
    }

    @Test("one recipient's broken Maildir defers only that recipient: the others of the message, and other messages of the batch, are delivered once")
    func oneBrokenMaildir() throws {
        let t = try TerndProcess(users: ["alice", "bob"], extraConfig: "limits {\nretry-interval 1s\nretry-max-interval 1s\n}")
        defer { t.cleanUp() }
        // bob's new/ is a mount of its own in ternd's mount namespace: writing into tmp/ works,
        // the rename into new/ fails (EXDEV).
        let bobNew = "\(t.dir)/mail/example.test/bob/new"
        try t.start(launcher: ["/usr/bin/unshare", "-m", "/bin/sh", "-c", "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && exec \"$@\"", bobNew])
        let both = try submit(t, to: ["alice@example.test", "bob@example.test"], subject: "to both")
        let aliceOnly = try submit(t, to: ["alice@example.test"], subject: "to alice")
        #expect(waitFor(20) { t.mailbox("alice").count == 2 }, "\(t.log)")
        #expect(waitFor(20) { t.log.contains("\(both): to=<bob@example.test> deferred (attempt 2") }, "\(t.log)")
        #expect(t.log.contains("\(aliceOnly): to=<alice@example.test> delivered="), "\(t.log)")
        #expect(t.mailbox("alice").count == 2, "retries never deliver alice's copy again")
        #expect(t.log.contains("Invalid cross-device link"), "the rename into another mount fails: \(t.log)")
        let remount = try run("/usr/bin/nsenter", ["-t", String(t.pid), "-m", "/bin/umount", bobNew])
        #expect(remount.status == 0, "\(remount)")
        #expect(waitFor(20) { t.mailbox("bob").count == 1 }, "\(t.log)")
        #expect(waitFor(20) { lines(t, "delivered=").count == 3 }, "\(t.log)")
        #expect(t.mailbox("alice").count == 2 && t.mailbox("bob").count == 1)
        #expect(t.stop() == 0)
    }

    @Test("two ternd on one spool: the second refuses to start, naming why, and the first loses nothing")
    func oneTerndPerSpool() throws {
        let t = try TerndProcess(users: ["bob"])
        defer { t.cleanUp() }
        try t.start()
        let first = try submit(t, to: ["bob@example.test"], subject: "before")
        let second = try run(TerndProcess.terndPath, ["--config", "\(t.dir)/tern.conf"], timeout: 30)
        #expect(second.status != 0)
        #expect((second.out + second.err).contains("another ternd"), "\(second)")
        let after = try submit(t, to: ["bob@example.test"], subject: "after")
        #expect(waitFor(20) { t.mailbox("bob").count == 2 }, "\(t.log)")
        #expect(waitFor(20) { lines(t, "delivered=").count == 2 })
        #expect(t.log.contains(first) && t.log.contains(after))
        #expect(t.stop() == 0)
        // Once the first has stopped, the spool is free.
        try t.start()
        #expect(t.stop() == 0)
    }

    @Test("SIGTERM while a message waits for the disk: it gets its 250 (then 421), never a 421 for a message that is then delivered; delivered once")
    func sigtermWhileStoring() throws {
        // The disk stays frozen past the drain's grace (10 s), and thaws before spool-timeout.
        let t = try TerndProcess(users: ["bob"], extraConfig: "limits {\nspool-timeout 30s\n}")
        defer { t.cleanUp() }
        let mount = "\(t.dir)/spool"
        guard try mountLoopImage(at: mount) else { return }
        var thawed = true
        defer {
            if !thawed { _ = try? run("/sbin/fsfreeze", ["-u", mount]) }
            _ = t.stop()
            _ = try? run("/bin/umount", [mount])
        }
        try t.start()
        #expect(try run("/sbin/fsfreeze", ["-f", mount]).status == 0)
        thawed = false
        let answer = Mutex<String>("")
        let port = t.port
        let sender = Thread {
            let out = (try? exchange(port: port, send: Array("EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: stored at shutdown\r\n\r\nonce\r\n.\r\nQUIT\r\n".utf8), timeout: 30)) ?? []
            answer.withLock { $0 = String(decoding: out, as: UTF8.self) }
        }
        sender.start()
        // The writer is stuck on that message once MAIL is refused as stalled.
        #expect(waitFor(15) {
            String(decoding: (try? exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n".utf8), timeout: 5)) ?? [], as: UTF8.self).contains("451 4.3.0")
        })
        let terminated = t.process!
        terminated.terminate()
        #expect(waitFor(20) { t.log.contains("session(s) still open; closing them") }, "\(t.log)")
        #expect(try run("/sbin/fsfreeze", ["-u", mount]).status == 0)
        thawed = true
        while !sender.isFinished { usleep(10_000) }
        terminated.waitUntilExit()
        t.process = nil
        let reply = answer.withLock { $0 }
        #expect(reply.contains("250 2.0.0 Ok: queued as"), "\(reply)")
        if let queued = reply.range(of: "250 2.0.0"), let closing = reply.range(of: "421 4.3.2") {
            #expect(queued.lowerBound < closing.lowerBound, "the 250 comes before the 421: \(reply)")
        }
        #expect(terminated.terminationStatus == 0)
        try t.start()
        #expect(waitFor(20) { t.mailbox("bob").count == 1 }, "\(t.log)")
        #expect(waitFor(20) { lines(t, "delivered=").count == 1 })
        #expect(t.mailbox("bob").count == 1, "delivered once")
        #expect(t.stop() == 0)
    }
}

/// A 64 MB ext4 image loop-mounted at `mount` (a disk of its own, to freeze or fill); false,
/// with the failure recorded, when it cannot be made.
func mountLoopImage(at mount: String) throws -> Bool {
    let image = mount + ".img"
    try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
    #expect(try run("/usr/bin/truncate", ["-s", "64M", image]).status == 0)
    #expect(try run("/sbin/mkfs.ext4", ["-q", "-F", image]).status == 0)
    let mounted = try run("/bin/mount", ["-o", "loop", image, mount])
    #expect(mounted.status == 0, "\(mounted)")
    return mounted.status == 0
}
