// The queue's channel to the courier process (issue 17), spoken to by a fake courier the way the
// real one speaks: jobs with their bodies come out, outcomes go back and are recorded. The
// courier is hostile to the queue as smtp is: outcomes for a job it was not given, or in the
// wrong number, close its channel; a TLS level for a name that is not a domain, or an MTA-STS
// policy that is not one (or names a path) is not kept; a courier that dies with a job
// unanswered leaves that delivery deferred, and the next courier gets it again.
import CTernSystem
import Config
import Foundation
import Glibc
import IPC
import SMTP
import Spool
import Testing

/// The queue process with an alias to a remote domain; retries every second.
func QueueWithRemoteUnderTest() throws -> RoleUnderTest {
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
            }
            limits {
                retry-interval 1s
                retry-max-interval 1s
            }
            """
        },
        setup: { dir in
            try RoleUnderTest.addAlice(dir)
            try FileManager.default.createDirectory(atPath: "\(dir)/mail", withIntermediateDirectories: true)
            if getuid() == 0, let pw = getpwnam("_ternq") { chown("\(dir)/mail", pw.pointee.pw_uid, pw.pointee.pw_gid) }
        })
}

@Suite("the queue's courier channel", .serialized)
struct CourierChannelTests {
    static let received = Array("Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Tern) with ESMTPSA".utf8)

    /// alice (authenticated, so she may relay) sends `body` to both addresses, through an smtp
    /// channel; the queue ID once stored.
    func relay(_ p: RoleUnderTest, _ smtp: TestChannel, _ t: UInt32, _ body: [UInt8], to rcpts: [String]) -> UInt64? {
        let token = UserToken.make(key: RoleUnderTest.tokenKey, user: "alice@example.test", now: Int64(time(nil)))
        let env = IPCEnvelope(sender: "alice@example.test", client: "192.0.2.7", user: "alice@example.test", userToken: token, recipients: rcpts.map { IPCRecipient(address: $0, destinations: [.remote($0)]) })
        smtp.send(.messageBegin(transaction: t, env))
        var at = 0
        while at < body.count {
            let n = min(IPCLimits.chunk, body.count - at)
            smtp.send(.messageChunk(transaction: t, bytes: Array(body[at..<(at + n)])))
            at += n
        }
        smtp.send(.messageEnd(transaction: t, trace: [], received: Self.received, sign: false))
        guard case .messageStored(t, let id)? = smtp.next(within: 30) else { return nil }
        return id
    }

    /// A fake courier's channel, greeted; the MTA-STS policies the queue hands it come first.
    func courier(_ p: RoleUnderTest) throws -> TestChannel {
        let c = try p.channel(tag: UInt8(ascii: "c"))
        c.send(.hello(version: IPCMessage.version, role: .courier))
        #expect(c.next() == .hello(version: IPCMessage.version, role: .queue))
        return c
    }

    /// The next job and its whole body.
    func job(_ c: TestChannel, within: Double = 20) -> (UInt32, IPCOutbound, [UInt8])? {
        guard case .deliver(let j, let o)? = c.next(within: within) else { return nil }
        var body: [UInt8] = []
        while body.count < Int(o.size) {
            guard case .messageChunk(j, let bytes)? = c.next() else { return nil }
            body += bytes
        }
        return (j, o, body)
    }

    @Test("a job carries the envelope and the body as spooled; outcomes are recorded per recipient; a courier that dies leaves its job deferred for the next")
    func jobsAndOutcomes() throws {
        let p = try QueueWithRemoteUnderTest()
        let smtp = try p.channel()
        smtp.send(.hello(version: IPCMessage.version, role: .smtp))
        #expect(smtp.next() == .hello(version: IPCMessage.version, role: .queue))
        let c = try courier(p)
        // 200 KB: the body comes in several chunks.
        let body = Array(("Subject: out\r\n\r\n" + String(repeating: "0123456789abcdefghijklmnopqrstuvwxyz\r\n", count: 5400)).utf8)
        let id = try #require(relay(p, smtp, 1, body, to: ["x@remote.example", "y@remote.example"]))
        let (j, o, sent) = try #require(job(c), "\(p.log)")
        #expect(o.id == id && o.domain == "remote.example" && o.sender == "alice@example.test")
        #expect(o.recipients == ["x@remote.example", "y@remote.example"] && o.size == UInt64(sent.count))
        #expect(o.historyKey == "remote.example" && o.tlsFloor == 0)
        let text = String(decoding: sent, as: UTF8.self)
        #expect(text.hasPrefix(String(decoding: Self.received, as: UTF8.self)) && sent.suffix(body.count).elementsEqual(body), "the spooled message, whole")
        // One delivered, one refused for good: each recorded as such.
        c.send(.delivered(job: j, outcomes: [IPCOutcome(.delivered, status: "2.0.0", text: "mx said: 250 ok"), IPCOutcome(.permanent, status: "5.1.1", text: "mx said: 550 5.1.1 no such user")]))
        #expect(waitFor(10) { p.log.contains("\(QueueID.text(id)): to=<x@remote.example> delivered=") && p.log.contains("\(QueueID.text(id)): to=<y@remote.example> failed") }, "\(p.log)")
        // A level it reached is recorded in the TLS history (only up).
        c.send(.tlsReached(domain: "Remote.Example", level: 2))
        #expect(waitFor(10) { ((try? String(contentsOfFile: "\(p.dir)/spool/tls-history/remote.example", encoding: .utf8)) ?? "").contains("outgoing tls-verified") })

        // The next message: the courier dies with its job. Deferred, and the next courier gets it.
        let second = try #require(relay(p, smtp, 2, Array("Subject: again\r\n\r\nhello\r\n".utf8), to: ["x@remote.example"]))
        let (_, o2, _) = try #require(job(c))
        #expect(o2.id == second && o2.tlsFloor == 2, "the floor the history holds now comes with the job")
        c.hangUp()
        #expect(waitFor(10) { p.log.contains("\(QueueID.text(second)): to=<x@remote.example> deferred") && p.log.contains("the courier process ended before it reported") }, "\(p.log)")
        let c2 = try courier(p)
        let (j3, o3, _) = try #require(job(c2, within: 20), "retried with the new courier: \(p.log)")
        #expect(o3.id == second)
        c2.send(.delivered(job: j3, outcomes: [IPCOutcome(.delivered, status: "2.0.0", text: "mx said: 250 ok")]))
        #expect(waitFor(10) { p.log.contains("\(QueueID.text(second)): to=<x@remote.example> delivered=") }, "\(p.log)")
        #expect(p.stop() == 0)
    }

    @Test("a hostile courier: outcomes it was not asked for, the wrong number of them, a bad level or policy; its channel is closed or the claim dropped, the queue goes on")
    func hostileCourier() throws {
        let p = try QueueWithRemoteUnderTest()
        let smtp = try p.channel()
        smtp.send(.hello(version: IPCMessage.version, role: .smtp))
        #expect(smtp.next() == .hello(version: IPCMessage.version, role: .queue))
        // Outcomes for a job that was never sent.
        let a = try courier(p)
        a.send(.delivered(job: 99, outcomes: [IPCOutcome(.delivered, status: "2.0.0", text: "ok")]))
        #expect(a.closedByPeer(), "outcomes of a job not given close the channel")
        // The wrong number of outcomes.
        let b = try courier(p)
        let id = try #require(relay(p, smtp, 1, Array("Subject: x\r\n\r\nhi\r\n".utf8), to: ["x@remote.example", "y@remote.example"]))
        let (j, _, _) = try #require(job(b))
        b.send(.delivered(job: j, outcomes: [IPCOutcome(.delivered, status: "2.0.0", text: "ok")]))
        #expect(b.closedByPeer(), "one outcome for two recipients")
        #expect(waitFor(10) { p.log.contains("\(QueueID.text(id)): to=<x@remote.example> deferred") }, "nothing it said counts: \(p.log)")
        // A status of the wrong class, a reply text with a line break: refused at decoding.
        let c = try courier(p)
        let (j2, _, _) = try #require(job(c, within: 20))
        var frame = IPCMessage.delivered(job: j2, outcomes: [IPCOutcome(.delivered, status: "5.1.1", text: "ok"), IPCOutcome(.delivered, status: "2.0.0", text: "ok")]).encoded()
        c.sendRaw(frame)
        #expect(c.closedByPeer(), "a delivered outcome with a 5.x.x status")
        let d = try courier(p)
        let (j3, _, _) = try #require(job(d, within: 20))
        frame = IPCMessage.delivered(job: j3, outcomes: [IPCOutcome(.delivered, status: "2.0.0", text: "ok\r\nX-Injected: 1"), IPCOutcome(.delivered, status: "2.0.0", text: "ok")]).encoded()
        d.sendRaw(frame)
        #expect(d.closedByPeer(), "a line break in an outcome's text")
        // Claims that are dropped, the channel kept: a level for a name that is no domain, a
        // policy under a path, a policy that does not parse.
        let e = try courier(p)
        e.send(.tlsReached(domain: "../../etc/passwd", level: 2))
        e.send(.mtaSTSPolicy(domain: "../evil", id: "1", fetched: 1, text: Array("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400\n".utf8)))
        e.send(.mtaSTSPolicy(domain: "remote.example", id: "2", fetched: 1, text: Array("not a policy".utf8)))
        e.send(.mtaSTSPolicy(domain: "good.example", id: "abc1", fetched: 1_700_000_000, text: Array("version: STSv1\nmode: testing\nmx: mx.good.example\nmax_age: 86400\n".utf8)))
        #expect(waitFor(10) { FileManager.default.fileExists(atPath: "\(p.dir)/spool/mta-sts/good.example") }, "\(p.log)")
        #expect(!FileManager.default.fileExists(atPath: "\(p.dir)/evil") && !FileManager.default.fileExists(atPath: "\(p.dir)/spool/evil"))
        #expect(!FileManager.default.fileExists(atPath: "\(p.dir)/spool/mta-sts/remote.example"))
        #expect(p.log.contains("an MTA-STS policy from the courier for '../evil' is not one; not kept"), "\(p.log)")
        // Still served: the message is handed over again and delivered.
        let (j4, o4, _) = try #require(job(e, within: 20), "\(p.log)")
        #expect(o4.id == id)
        e.send(.delivered(job: j4, outcomes: o4.recipients.map { _ in IPCOutcome(.delivered, status: "2.0.0", text: "ok") }))
        #expect(waitFor(10) { p.log.contains("\(QueueID.text(id)): to=<y@remote.example> delivered=") }, "\(p.log)")
        // A courier that starts gets the policies kept.
        let f = try p.channel(tag: UInt8(ascii: "c"))
        f.send(.hello(version: IPCMessage.version, role: .courier))
        #expect(f.next() == .hello(version: IPCMessage.version, role: .queue))
        guard case .mtaSTSPolicy("good.example", "abc1", 1_700_000_000, let text)? = f.next() else {
            Issue.record("the kept policy is not handed to a new courier")
            return
        }
        #expect(String(decoding: text, as: UTF8.self).contains("mode: testing"))
        #expect(p.stop() == 0)
    }
}
