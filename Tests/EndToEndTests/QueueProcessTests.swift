// `ternd --role queue` as a real process, spoken to the way the smtp process will: channels passed
// over its control socket, a message streamed in chunks. What it stores is checked where it lands
// (the Maildir, byte for byte); what a hostile smtp end claims — recipients the tables do not
// give, destinations of its own, a Received start hiding another field, chunks out of order — is
// refused or closes that one channel; a channel that goes away mid-message leaves nothing behind.
import CTernSystem
import Config
import Foundation
import Glibc
import IPC
import SMTP
import Spool
import Testing

/// The queue process: example.test with alice (users file) and a DKIM key (Ed25519, selector
/// s1); Maildirs under DIR/mail, which `queue-user` may write (local delivery still runs in the
/// queue process: docs/security.md).
func QueueUnderTest() throws -> RoleUnderTest {
    try RoleUnderTest(
        role: "queue",
        config: { dir in
            """
            hostname mx.example.test
            spool \(dir)/spool
            listen smtp 127.0.0.1:2525
            deliver maildir \(dir)/mail/%{domain}/%{user}
            domain example.test {
                users \(dir)/example.test.users
                dkim s1 \(dir)/s1.pem
            }
            """
        },
        setup: { dir in
            try RoleUnderTest.addAlice(dir)
            let k = try run("/bin/sh", ["-c", "cd '\(dir)' && '\(ternctlPath)' dkim keygen example.test --selector s1 --algo ed25519 --key s1.pem > s1.txt"])
            guard k.status == 0 else { throw POSIXError(.EINVAL) }
            try FileManager.default.createDirectory(atPath: "\(dir)/mail", withIntermediateDirectories: true)
            if getuid() == 0, let pw = getpwnam("_ternq") { chown("\(dir)/mail", pw.pointee.pw_uid, pw.pointee.pw_gid) }
        })
}

extension RoleUnderTest {
    /// The files delivered to a mailbox of example.test.
    func mailbox(_ user: String) -> [String] {
        let new = "\(dir)/mail/example.test/\(user)/new"
        return ((try? FileManager.default.contentsOfDirectory(atPath: new)) ?? []).sorted().map { "\(new)/\($0)" }
    }
}

@Suite("the queue process over IPC", .serialized)
struct QueueProcessTests {
    static let alice = Destination.mailbox(user: "alice", domain: try! Domain("example.test"))
    static let received = Array("Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Tern) with ESMTP".utf8)

    func greet(_ c: TestChannel) {
        c.send(.hello(version: IPCMessage.version, role: .smtp))
        #expect(c.next() == .hello(version: IPCMessage.version, role: .queue))
        // Then the spool's state, first thing.
        _ = waitFor(10) { c.available().isEmpty && !c.spoolStates.isEmpty }
        guard case .spoolState(nil, _, let room)? = c.spoolStates.first else {
            Issue.record("no spool state after hello: \(c.spoolStates)")
            return
        }
        #expect(room > 1_000_000)
    }

    /// With `user`, lookup's token for that user comes along (as smtp sends it), unless `token`
    /// says otherwise.
    func envelope(_ recipients: [IPCRecipient], user: String = "", token: [UInt8]? = nil) -> IPCEnvelope {
        let t = token ?? (user.isEmpty ? [] : UserToken.make(key: RoleUnderTest.tokenKey, user: user, now: Int64(time(nil))))
        return IPCEnvelope(sender: "bob@remote.test", client: "192.0.2.7", user: user, userToken: t, recipients: recipients)
    }

    /// Sends a whole message in chunks of `chunk` bytes.
    func send(_ c: TestChannel, _ t: UInt32, _ message: [UInt8], _ env: IPCEnvelope, trace: [UInt8] = [], sign: Bool = false, chunk: Int = IPCLimits.chunk, deadline: UInt64 = 0) {
        c.send(.messageBegin(transaction: t, env))
        var at = 0
        while at < message.count {
            let n = min(chunk, message.count - at)
            c.send(.messageChunk(transaction: t, bytes: Array(message[at..<(at + n)])))
            at += n
        }
        c.send(.messageEnd(transaction: t, trace: trace, received: Self.received, sign: sign, deadline: deadline))
    }

    @Test("a streamed message is stored, answered after the commit and delivered intact; ours Authentication-Results removed")
    func storesAndDelivers() throws {
        let p = try QueueUnderTest()
        let a = try p.channel()
        greet(a)
        a.send(.mailCheck(request: 1, sender: "bob@remote.test", size: 400_000, tls: 0))
        #expect(a.next() == .mailAnswer(request: 1, nil))
        // 300 KB of body (past what a stream keeps in memory), sent in chunks of 7 KiB and less.
        var rng = SystemRandomNumberGenerator()
        let lines = (0..<5000).map { i in "line \(i) " + String((0..<48).map { _ in "abcdefghijklmnopqrstuvwxyz".randomElement(using: &rng)! }) + "\r\n" }
        let body = Array(lines.joined().utf8)
        let head = Array("Authentication-Results: mx.example.test; spf=pass (forged)\r\nFrom: bob@remote.test\r\nSubject: big\r\n\r\n".utf8)
        let trace = Array("Authentication-Results: mx.example.test; spf=none smtp.mailfrom=remote.test\r\n".utf8)
        send(a, 7, head + body, envelope([IPCRecipient(address: "alice+tag@example.test", destinations: [Self.alice])]), trace: trace, chunk: 7 * 1024)
        let reply = a.next(within: 60)
        guard case .messageStored(7, let id)? = reply else {
            Issue.record("not stored: \(String(describing: reply)) \(p.log)")
            return
        }
        #expect(waitFor(30) { p.mailbox("alice").count == 1 }, "\(p.log)")
        let file = try #require(p.mailbox("alice").first)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let text = String(decoding: bytes, as: UTF8.self)
        // After the Maildir's Return-Path and Delivered-To: the trace smtp sent, our Received
        // finished by the queue (its id, the recipient, a date), then the header without the
        // forged Authentication-Results, then the body as sent.
        let expectedStart = String(decoding: trace + Self.received, as: UTF8.self) + " id \(QueueID.text(id))\r\n\tfor <alice+tag@example.test>;\r\n\t"
        #expect(text.hasPrefix("Return-Path: <bob@remote.test>\r\nDelivered-To: alice@example.test\r\n" + expectedStart), "\(text.prefix(400))")
        let rest = Array("From: bob@remote.test\r\nSubject: big\r\n\r\n".utf8) + body
        let intact = bytes.count > rest.count && bytes.suffix(rest.count).elementsEqual(rest)
        #expect(intact, "the header and body arrive as sent")
        #expect(!text.contains("(forged)"))
        #expect(p.stop() == 0)
    }

    @Test("what smtp claims is checked: a relay without AUTH, destinations of its own, a Received hiding a field")
    func refusesWhatSmtpCannotClaim() throws {
        let p = try QueueUnderTest()
        let a = try p.channel()
        greet(a)
        let message = Array("From: bob@remote.test\r\n\r\nhello\r\n".utf8)
        // A remote recipient without an authenticated user: the relay guard refuses it here too.
        send(a, 1, message, envelope([IPCRecipient(address: "x@elsewhere.test", destinations: [.remote("x@elsewhere.test")])]))
        guard case .messageRefused(1, let r1)? = a.next() else { Issue.record("relay not refused"); return }
        #expect(r1.code == 451 && r1.status == EnhancedStatus(4, 3, 0), "\(r1)")
        // A local recipient smtp says goes to a command: the queue's tables say otherwise.
        send(a, 2, message, envelope([IPCRecipient(address: "alice@example.test", destinations: [.pipe(["/bin/sh", "-c", "touch \(p.dir)/pwned"])])]))
        guard case .messageRefused(2, let r2)? = a.next() else { Issue.record("lying destination not refused"); return }
        #expect(r2.code == 451, "\(r2)")
        // An unknown user.
        send(a, 3, message, envelope([IPCRecipient(address: "nobody@example.test", destinations: [.mailbox(user: "nobody", domain: try Domain("example.test"))])]))
        guard case .messageRefused(3, _)? = a.next() else { Issue.record("unknown user not refused"); return }
        // With a user (smtp says the session authenticated), relaying is allowed: stored.
        send(a, 4, message, envelope([IPCRecipient(address: "x@elsewhere.test", destinations: [.remote("x@elsewhere.test")])], user: "alice@example.test"))
        guard case .messageStored(4, _)? = a.next() else { Issue.record("authenticated relay not stored: \(p.log)"); return }
        // Loop detection on the bytes that reach the spool.
        let looping = Array((String(repeating: "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n", count: 60) + "\r\nbody\r\n").utf8)
        send(a, 5, looping, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])]))
        guard case .messageRefused(5, let r5)? = a.next() else { Issue.record("loop not refused"); return }
        #expect(r5.code == 554, "\(r5)")
        // An aborted message, then its transaction id used again.
        a.send(.messageBegin(transaction: 6, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])])))
        a.send(.messageChunk(transaction: 6, bytes: message))
        a.send(.messageAbort(transaction: 6))
        send(a, 6, message, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])]))
        guard case .messageStored(6, _)? = a.next() else { Issue.record("not stored after an abort: \(p.log)"); return }
        // An end that comes after smtp's own deadline (it waited in smtp's channel): smtp said
        // 451 by itself, so the queue refuses it and stores nothing.
        send(a, 7, Array("From: late@remote.test\r\n\r\nlate\r\n".utf8), envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])]), deadline: tern_monotonic_ns() - 1_000_000)
        guard case .messageRefused(7, let r7)? = a.next() else { Issue.record("a late end not refused: \(p.log)"); return }
        #expect(r7.code == 451 && r7.status == EnhancedStatus(4, 3, 0), "\(r7)")
        #expect(p.log.contains("the end of data came after smtp's deadline"), "\(p.log)")

        // A Received start that hides a second header field: the channel is closed.
        let b = try p.channel()
        greet(b)
        b.send(.messageBegin(transaction: 1, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])])))
        b.send(.messageChunk(transaction: 1, bytes: message))
        b.send(.messageEnd(transaction: 1, trace: [], received: Array("Received: x\r\nX-Injected: yes".utf8), sign: false))
        #expect(b.closedByPeer(), "a Received start with a field of its own closes the channel")
        // A trace that does not end its line (it would join our Received field).
        let c = try p.channel()
        greet(c)
        send(c, 1, message, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])]), trace: Array("X-Trace: no line end".utf8))
        #expect(c.closedByPeer(), "a trace that is not whole fields closes the channel")
        // A chunk before its begin; a store answer sent by smtp; an oversized frame.
        let d = try p.channel()
        greet(d)
        d.send(.messageChunk(transaction: 9, bytes: message))
        #expect(d.closedByPeer())
        let e = try p.channel()
        greet(e)
        e.send(.messageStored(transaction: 1, queueID: 1))
        #expect(e.closedByPeer())
        let f = try p.channel()
        greet(f)
        f.sendRaw([0xff, 0xff, 0xff, 0xff, 12])
        #expect(f.closedByPeer())
        // A session that says it authenticated, without lookup's token for that user: no token,
        // alice's token for bob, a token made with another key. Each closes its channel before
        // anything relays.
        let now = Int64(time(nil))
        let relay = [IPCRecipient(address: "x@elsewhere.test", destinations: [.remote("x@elsewhere.test")])]
        for token in [[], UserToken.make(key: RoleUnderTest.tokenKey, user: "alice@example.test", now: now), UserToken.make(key: UserToken.newKey(), user: "bob@example.test", now: now)] {
            let h = try p.channel()
            greet(h)
            send(h, 1, message, envelope(relay, user: "bob@example.test", token: token))
            #expect(h.closedByPeer(), "a user without lookup's token closes the channel")
        }
        #expect(p.log.components(separatedBy: "transaction 1: user bob@example.test without a token lookup issued").count - 1 == 3, "\(p.log)")

        // A channel that goes away mid-message: nothing of it is stored.
        let g = try p.channel()
        greet(g)
        g.send(.messageBegin(transaction: 1, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])])))
        g.send(.messageChunk(transaction: 1, bytes: Array("From: gone@remote.test\r\n\r\n".utf8) + [UInt8](repeating: 65, count: 200_000)))
        shutdown(g.fd, Int32(SHUT_RDWR))
        #expect(waitFor(10) { p.log.contains("message(s) coming in") }, "\(p.log)")

        // The first channel goes on; exactly the two stored messages were delivered, no command ran.
        send(a, 8, message, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])]))
        guard case .messageStored(8, _)? = a.next() else { Issue.record("the first channel broke: \(p.log)"); return }
        #expect(waitFor(30) { p.mailbox("alice").count == 2 }, "\(p.log)")
        #expect(!FileManager.default.fileExists(atPath: "\(p.dir)/pwned"))
        #expect(!p.mailbox("alice").contains { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").contains("gone@remote.test") })
        #expect(!p.mailbox("alice").contains { ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").contains("late@remote.test") })
        #expect(p.isRunning)
        #expect(p.log.components(separatedBy: "closed a channel from smtp").count - 1 >= 3, "\(p.log)")
        #expect(p.log.contains("closing a channel from smtp: transaction 1: trace fields"), "\(p.log)")
        #expect(p.stop() == 0)
    }

    @Test("mail smtp marks for signing is signed with the From domain's key; dkimpy verifies it")
    func signs() throws {
        let p = try QueueUnderTest()
        let a = try p.channel()
        greet(a)
        let message = Array("From: Alice <alice@example.test>\r\nTo: alice@example.test\r\nSubject: signed\r\n\r\nSigned  in the queue\r\n".utf8)
        send(a, 1, message, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])], user: "alice@example.test"), sign: true)
        guard case .messageStored(1, _)? = a.next(within: 30) else { Issue.record("not stored: \(p.log)"); return }
        #expect(waitFor(30) { p.mailbox("alice").count == 1 }, "\(p.log)")
        let file = try #require(p.mailbox("alice").first)
        let verify = """
            import dkim, re
            line = [l for l in open("\(p.dir)/s1.txt").read().splitlines() if "DKIM1" in l][0]
            rec = "".join(re.findall(r'"([^"]*)"', line)).encode()
            msg = open("\(file)", "rb").read()
            print(dkim.DKIM(msg).verify(dnsfunc=lambda n, timeout=5: rec))
            """
        let v = try run("/usr/bin/python3", ["-c", verify])
        #expect(v.out == "True\n", "\(v) \((try? String(contentsOfFile: file, encoding: .utf8)) ?? "")")
        // Not asked to sign: no signature.
        send(a, 2, message, envelope([IPCRecipient(address: "alice@example.test", destinations: [Self.alice])]))
        guard case .messageStored(2, _)? = a.next(within: 30) else { Issue.record("not stored: \(p.log)"); return }
        #expect(waitFor(30) { p.mailbox("alice").count == 2 })
        let unsigned = p.mailbox("alice").compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.filter { !$0.contains("DKIM-Signature") }
        #expect(unsigned.count == 1)
        #expect(p.stop() == 0)
    }

    @Test("as root it gives the spool to queue-user and runs as that user, with no_new_privs and its title")
    func confined() throws {
        guard getuid() == 0, let pw = getpwnam("_ternq") else { return }
        let p = try QueueUnderTest()
        let a = try p.channel()
        greet(a)
        try p.expectConfined(as: pw.pointee.pw_uid)
        let uid = pw.pointee.pw_uid
        var st = stat()
        #expect(stat("\(p.dir)/spool", &st) == 0 && st.st_uid == uid && st.st_mode & 0o777 == 0o700)
        // Every file in the spool is the queue user's.
        let files = (FileManager.default.enumerator(atPath: "\(p.dir)/spool")?.allObjects as? [String]) ?? []
        for f in files {
            var s = stat()
            #expect(lstat("\(p.dir)/spool/\(f)", &s) == 0 && s.st_uid == uid, "\(f)")
        }
        #expect(p.stop() == 0)
    }
}
