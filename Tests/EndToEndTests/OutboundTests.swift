import Foundation
import Glibc
import TernTestSupport
import Testing

/// DNS as ternd sees it in these tests: every MX is 127.0.0.1 (the receiver is told apart by
/// `outbound port`); null.example publishes a null MX; nowhere.example does not exist.
let outboundZone = """
    $ORIGIN remote.example.
    @     MX 10 mx.remote.example.
    mx    A 127.0.0.1
    $ORIGIN other.example.
    @     MX 10 mx.remote.example.
    $ORIGIN xn--bcher-kva.example.
    @     MX 10 mx.remote.example.
    $ORIGIN null.example.
    @     MX 0 .
    """

/// Aliases that send mail out: bob is a local user and the sender of the tests' messages, so
/// bounces land in his Maildir.
let outboundAliases = """
    fwd: a@remote.example, b@remote.example
    split: a@remote.example, c@other.example
    null: x@null.example
    nowhere: x@nowhere.example
    idn: x@bücher.example
    idnlocal: ñandú@bücher.example
    crowd: \((0..<120).map { "r\($0)@remote.example" }.joined(separator: ", ")), \((0..<30).map { "o\($0)@other.example" }.joined(separator: ", "))

    """

/// Polls `condition` for up to `seconds`.
@discardableResult
func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// ternd forwarding through `outboundAliases` to receivers on `port`, retrying every second.
func outboundTernd(port: Int, extra: String = "") throws -> TerndProcess {
    try TerndProcess(
        aliases: outboundAliases,
        extraConfig: "outbound port \(port)\nlimits {\nretry-interval 1s\nretry-max-interval 1s\n}\n\(extra)", zone: outboundZone)
}

/// A message from bob to `rcpt` through ternd; the queue ID.
@discardableResult
func submit(_ t: TerndProcess, to rcpts: [String], subject: String = "out", body: String = "hello") throws -> String {
    let rcptLines = rcpts.map { "RCPT TO:<\($0)>\r\n" }.joined()
    let out = try exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<bob@example.test>\r\n\(rcptLines)DATA\r\nSubject: \(subject)\r\n\r\n\(body)\r\n.\r\nQUIT\r\n".utf8))
    let text = String(decoding: out, as: UTF8.self)
    guard let line = text.components(separatedBy: "\r\n").first(where: { $0.contains("queued as") }) else {
        Issue.record("not queued: \(text)")
        return ""
    }
    return String(line.split(separator: " ").last!)
}

/// Log lines of one kind ("delivered=", "deferred", "failed").
func lines(_ t: TerndProcess, _ word: String) -> [String] {
    t.log.split(separator: "\n").filter { $0.contains(word) }.map(String.init)
}

@Suite("outbound delivery", .serialized)
struct OutboundTests {
    @Test("forwarded mail reaches the sink: a domain's recipients in one transaction, one connection reused for every message")
    func toSink() throws {
        let sink = try SinkProcess(["--report-every", "0.1"])
        defer { _ = sink.stop() }
        let t = try outboundTernd(port: sink.port)
        defer { t.cleanUp() }
        try t.start()
        for i in 0..<10 { try submit(t, to: ["fwd@example.test"], subject: "m\(i)") }
        #expect(waitFor(20) { lines(t, "delivered=").count == 20 }, "\(t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 10 }, "\(sink.counts)")
        #expect(sink.counts["recipients"] == 20)
        #expect(sink.counts["sessions"]! <= 2, "connections are reused: \(sink.counts)")
        #expect(lines(t, "delivered=a@remote.example mx.remote.example[127.0.0.1] said: 250").count == 10, "\(t.log)")
        // Two domains: two transactions (one per destination), both delivered.
        try submit(t, to: ["split@example.test"])
        #expect(waitFor(20) { lines(t, "delivered=").count == 22 }, "\(t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 12 }, "\(sink.counts)")
        #expect(lines(t, "deferred").isEmpty && lines(t, "failed").isEmpty, "\(t.log)")
    }

    @Test("150 recipients in two domains: at most 100 a transaction, more when a receiver's limit needs them, one connection per domain")
    func manyRecipients() throws {
        let sink = try SinkProcess(["--report-every", "0.1"])
        defer { _ = sink.stop() }
        let t = try outboundTernd(port: sink.port)
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["crowd@example.test"], subject: "to many")
        #expect(waitFor(20) { lines(t, "\(id): to=<crowd@example.test> delivered=").count == 150 }, "\(t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 3 && sink.counts["recipients"] == 150 }, "120 = 100 + 20, and 30: \(sink.counts)")
        #expect(lines(t, "delivered=r119@remote.example ").count == 1 && lines(t, "delivered=o29@other.example ").count == 1)
        #expect(lines(t, "deferred").isEmpty && lines(t, "failed").isEmpty, "\(t.log)")

        // A receiver that takes 30 a transaction (452 4.5.3 after that): the rest go at once in
        // more transactions on the same connection, nothing waits for a retry.
        let strict = try SinkProcess(["--report-every", "0.1", "--max-recipients", "30"])
        defer { _ = strict.stop() }
        let u = try outboundTernd(port: strict.port)
        defer { u.cleanUp() }
        try u.start()
        let second = try submit(u, to: ["crowd@example.test"], subject: "to many, thirty at a time")
        #expect(waitFor(20) { lines(u, "\(second): to=<crowd@example.test> delivered=").count == 150 }, "\(u.log)")
        #expect(waitFor(5) { strict.counts["messages"] == 5 && strict.counts["recipients"] == 150 }, "120 = 4 × 30, and 30: \(strict.counts)")
        #expect(strict.counts["sessions"] == 3, "one connection per domain, and the harness's probe: \(strict.counts)")
        #expect(lines(u, "deferred").isEmpty && lines(u, "failed").isEmpty, "\(u.log)")
    }

    @Test("a receiver's 4xx defers with a retry on schedule; the retry delivers once it accepts")
    func tempfailThenRetry() throws {
        let failing = try SinkProcess(["--report-every", "0.1", "--tempfail-rate", "1"])
        let t = try outboundTernd(port: failing.port)
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> deferred (attempt 2").count == 2 }, "\(t.log)")
        let deferred = lines(t, "deferred (attempt 1")
        #expect(deferred.count == 2 && deferred.allSatisfy { $0.contains("next in 1 s") && $0.contains("said: 451 4.3.0") }, "\(deferred)")
        #expect(waitFor(2) { (failing.counts["tempfailed"] ?? 0) >= 2 }, "\(failing.counts)")
        // ternctl queue shows the message waiting, and why, while ternd runs.
        func queue() throws -> String {
            let r = try run(ternctlPath, ["queue", "--config", "\(t.dir)/tern.conf"])
            #expect(r.status == 0 && r.err.isEmpty, "\(r)")
            return r.out
        }
        let listed = try queue()
        #expect(listed.hasPrefix("\(id)  20") && listed.contains(" UTC  <bob@example.test>  "), "\(listed)")
        for rcpt in ["a@remote.example", "b@remote.example"] {
            #expect(listed.contains("\n    <\(rcpt)> (for <fwd@example.test>)  deferred, "), "\(listed)")
        }
        #expect(listed.contains("\n        mx.remote.example[127.0.0.1] said: 451 4.3.0 "), "\(listed)")
        #expect(listed.hasSuffix("\n1 message, 2 deliveries owed\n"), "\(listed)")
        _ = failing.stop()
        let sink = try SinkProcess(["--report-every", "0.1"], port: failing.port)
        defer { _ = sink.stop() }
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> delivered=").count == 2 }, "\(t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 1 && sink.counts["recipients"] == 2 }, "\(sink.counts)")
        #expect(t.mailbox("bob").isEmpty, "no bounce for a message that was delivered")
        #expect(try queue() == "queue is empty\n")
    }

    @Test("still deferred after delay-warning: the sender is warned once (Action: delayed), retries go on")
    func delayWarning() throws {
        let failing = try SinkProcess(["--report-every", "0.1", "--tempfail-rate", "1"])
        defer { _ = failing.stop() }
        let t = try outboundTernd(port: failing.port, extra: "limits {\ndelay-warning 2s\n}")
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"], subject: "slow")
        #expect(waitFor(20) { t.mailbox("bob").count == 1 }, "\(t.log)")
        let warning = try String(contentsOfFile: t.mailbox("bob")[0], encoding: .utf8)
        #expect(warning.contains("Subject: Delayed Mail (still being retried)"), "\(warning)")
        #expect(warning.contains("Action: delayed") && !warning.contains("Action: failed"))
        #expect(warning.contains("Status: 4.3.0") && warning.contains("Will-Retry-Until: "), "\(warning)")
        #expect(warning.contains("Subject: slow"), "the original headers")
        #expect(lines(t, "\(id): delay warning").count == 1, "\(t.log)")
        // Later deferrals warn no more, across a restart too.
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> deferred (attempt 5").count == 2 }, "\(t.log)")
        _ = t.stop()
        try t.start()
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> deferred (attempt 7").count == 2 }, "\(t.log)")
        #expect(t.mailbox("bob").count == 1)
        #expect(lines(t, "\(id): delay warning").count == 1)
    }

    @Test("still deferred after queue-lifetime: the recipients fail with 4.4.7 and the sender gets one failure report")
    func expiry() throws {
        let failing = try SinkProcess(["--report-every", "0.1", "--tempfail-rate", "1"])
        defer { _ = failing.stop() }
        let t = try outboundTernd(port: failing.port, extra: "limits {\nqueue-lifetime 3s\ndelay-warning off\n}")
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"], subject: "too slow")
        #expect(waitFor(30) { lines(t, "\(id): to=<fwd@example.test> expired after").count == 2 }, "\(t.log)")
        #expect(waitFor(10) { t.mailbox("bob").count == 1 }, "\(t.log)")
        let report = try String(contentsOfFile: try #require(t.mailbox("bob").first), encoding: .utf8)
        // Each forwarded address is reported, expanded from the address the sender used, with the
        // receiver's last words as an SMTP diagnostic.
        for rcpt in ["a@remote.example", "b@remote.example"] {
            #expect(report.contains("<\(rcpt)> (expanded from <fwd@example.test>): delivery time expired: mx.remote.example[127.0.0.1] said: 451 4.3.0 "), "\(report)")
            #expect(report.contains("""
                Final-Recipient: rfc822; \(rcpt)\r
                Original-Recipient: rfc822;fwd@example.test\r
                Action: failed\r
                Status: 4.4.7\r
                Remote-MTA: dns; mx.remote.example\r
                Diagnostic-Code: smtp; 451 4.3.0 Temporary failure (injected by ternbench sink)\r

                """), "\(report)")
        }
        #expect(report.contains("Subject: too slow"))
        // Nothing is retried after expiry. (The sink reports its counts every 0.1 s: let the last
        // attempt's count arrive before taking it.)
        usleep(500_000)
        let attempts = (failing.counts["tempfailed"] ?? 0)
        usleep(2_500_000)
        #expect((failing.counts["tempfailed"] ?? 0) == attempts, "no attempt after the message expired")
        #expect(!lines(t, "\(id): to=<fwd@example.test> deferred (attempt").isEmpty)
    }

    @Test("a receiver's 5xx bounces to the sender with the receiver's status and reply, DKIM-signed; dkimpy verifies it")
    func permfailBounces() throws {
        let keys = NSTemporaryDirectory() + "tern-dsn-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: keys) }
        let k = try run("/bin/sh", ["-c", "cd '\(keys)' && '\(ternctlPath)' dkim keygen example.test --selector dsn --algo rsa2048 --key dsn.pem > dsn.txt"])
        #expect(k.status == 0, "\(k)")
        let sink = try SinkProcess(["--report-every", "0.1", "--permfail-rate", "1"])
        defer { _ = sink.stop() }
        let t = try outboundTernd(port: sink.port)
        defer { t.cleanUp() }
        var conf = try String(contentsOfFile: "\(t.dir)/tern.conf", encoding: .utf8)
        conf = conf.replacingOccurrences(of: "    aliases aliases\n", with: "    aliases aliases\n    dkim dsn \(keys)/dsn.pem\n")
        try conf.write(toFile: "\(t.dir)/tern.conf", atomically: true, encoding: .utf8)
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"], subject: "will bounce")
        #expect(waitFor(20) { t.mailbox("bob").count == 1 }, "\(t.log)")
        let dsn = try String(contentsOfFile: t.mailbox("bob")[0], encoding: .utf8)
        for rcpt in ["a@remote.example", "b@remote.example"] {
            #expect(dsn.contains("Final-Recipient: rfc822; \(rcpt)\r\nOriginal-Recipient: rfc822;fwd@example.test\r\nAction: failed\r\nStatus: 5.3.0\r\n"), "\(dsn)")
            #expect(dsn.contains("<\(rcpt)> (expanded from <fwd@example.test>): mx.remote.example[127.0.0.1] said: 554 5.3.0"), "\(dsn)")
        }
        #expect(dsn.components(separatedBy: "Remote-MTA: dns; mx.remote.example\r\nDiagnostic-Code: smtp; 554 5.3.0 ").count == 3, "\(dsn)")
        #expect(dsn.contains("Subject: will bounce"), "the original headers are returned")
        #expect(lines(t, "\(id): bounce").count == 1, "one DSN for both recipients: \(t.log)")
        // Signed for example.test (the host name mx.example.test's domain); dkimpy agrees.
        #expect(dsn.contains("DKIM-Signature: v=1;") && dsn.contains("d=example.test"), "\(dsn)")
        let verify = """
            import dkim, re
            line = open("\(keys)/dsn.txt").read()
            rec = "".join(re.findall(r'"([^"]*)"', line)).encode()
            print(dkim.DKIM(open("\(t.mailbox("bob")[0])", "rb").read()).verify(dnsfunc=lambda n, timeout=5: rec if n.decode().rstrip(".") == "dsn._domainkey.example.test" else None))
            """
        let v = try run("/usr/bin/python3", ["-c", verify])
        #expect(v.out == "True\n", "\(v)")
        #expect(lines(t, "to=<fwd@example.test> failed").count == 2)
    }

    @Test("null MX and a domain that does not exist bounce at once with 5.1.10 and 5.1.2")
    func unroutable() throws {
        let t = try outboundTernd(port: freePort())
        defer { t.cleanUp() }
        try t.start()
        try submit(t, to: ["null@example.test"], subject: "null mx")
        try submit(t, to: ["nowhere@example.test"], subject: "no domain")
        #expect(waitFor(20) { t.mailbox("bob").count == 2 }, "\(t.log)")
        let texts = try t.mailbox("bob").map { try String(contentsOfFile: $0, encoding: .utf8) }
        #expect(texts.contains { $0.contains("Status: 5.1.10") && $0.contains("null MX") && $0.contains("Subject: null mx") }, "\(texts)")
        #expect(texts.contains { $0.contains("Status: 5.1.2") && $0.contains("NXDOMAIN") && $0.contains("Subject: no domain") }, "\(texts)")
    }

    @Test("an authenticated sender's address literals go straight to the address, without DNS; one Tern cannot reach bounces with 5.1.2")
    func addressLiterals() throws {
        let sink = try SinkProcess(["--report-every", "0.1"])
        defer { _ = sink.stop() }
        let sink6 = try SinkProcess(["--report-every", "0.1"], port: sink.port, host: "::1")
        defer { _ = sink6.stop() }
        // The test zone knows no names at all: an address literal needs none.
        let a = try AuthTernd(limits: "outbound port \(sink.port)")
        defer { a.t.cleanUp() }
        let swaks = try #require(which("swaks"))
        let sent = try run(swaks, [
            "--server", "127.0.0.1:\(a.submission)", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", AuthTernd.password,
            "--from", "alice@example.test", "--to", "x@[127.0.0.1],y@[IPv6:::1],z@[x-tag:nowhere]", "--helo", "laptop.example",
            "--header", "Subject: to addresses", "--suppress-data",
        ])
        #expect(sent.status == 0 && sent.out.contains("250 2.0.0 Ok: queued as"), "\(sent.out)")
        #expect(waitFor(20) { lines(a.t, "delivered=").filter { $0.contains("@[") }.count == 2 }, "\(a.t.log)")
        #expect(lines(a.t, "to=<x@[127.0.0.1]> delivered=x@[127.0.0.1] [127.0.0.1] said: 250").count == 1, "\(a.t.log)")
        #expect(lines(a.t, "to=<y@[IPv6:::1]> delivered=y@[IPv6:::1] [ipv6:::1] said: 250").count == 1, "\(a.t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 1 && sink6.counts["messages"] == 1 }, "\(sink.counts) \(sink6.counts)")
        #expect(waitFor(20) { a.t.mailbox("alice").count == 1 }, "\(a.t.log)")
        let dsn = try String(contentsOfFile: a.t.mailbox("alice")[0], encoding: .utf8)
        #expect(dsn.contains("Final-Recipient: rfc822; z@[x-tag:nowhere]\r\nAction: failed\r\nStatus: 5.1.2\r\n"), "\(dsn)")
        #expect(dsn.contains("[x-tag:nowhere]: not an IPv4 or IPv6 address literal"), "\(dsn)")
    }

    @Test("nobody listening: deferred (the destination backs off), delivered once a receiver is there")
    func unreachable() throws {
        let port = freePort()
        let t = try outboundTernd(port: port)
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> deferred").count >= 2 }, "\(t.log)")
        #expect(lines(t, "deferred").allSatisfy { $0.contains("Connection refused") || $0.contains("not tried again") }, "\(t.log)")
        let sink = try SinkProcess(["--report-every", "0.1"], port: port)
        defer { _ = sink.stop() }
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> delivered=").count == 2 }, "\(t.log)")
    }

    @Test("STARTTLS whenever offered; a receiver that stops offering it gets nothing until `ternctl tls reset`")
    func downgradeRefused() throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("outbound-certs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try TestCertificates.make(in: certs, [("mx", ["mx.remote.example"])])
        let tls = try SinkProcess(["--report-every", "0.1", "--tls-cert", "\(certs)/mx.pem", "--tls-key", "\(certs)/mx.key"])
        let t = try outboundTernd(port: tls.port)
        defer { t.cleanUp() }
        try t.start()
        let first = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(first): to=<fwd@example.test> delivered=").count == 2 }, "\(t.log)")
        #expect(t.log.contains("remote.example: TLS level raised to tls-unverified"), "\(t.log)")
        let show = try run(AuthTernd.ternctl, ["tls", "show", "remote.example", "--config", "\(t.dir)/tern.conf"])
        #expect(show.out.contains("outgoing tls-unverified"), "\(show)")
        _ = tls.stop()

        // The same receiver without STARTTLS: held, never sent in clear.
        let plain = try SinkProcess(["--report-every", "0.1"], port: tls.port)
        defer { _ = plain.stop() }
        let second = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(second): to=<fwd@example.test> deferred").count >= 2 }, "\(t.log)")
        #expect(lines(t, "\(second): to=<fwd@example.test> deferred").allSatisfy { $0.contains("offers plain but remote.example reached tls-unverified before") || $0.contains("not tried again") }, "\(t.log)")
        usleep(500_000)
        #expect(plain.counts["messages"] == 0, "nothing was sent in clear: \(plain.counts)")
        #expect(lines(t, "\(second): to=<fwd@example.test> delivered=").isEmpty)

        // The operator accepts the change: the next retry delivers.
        let before = t.log.count
        let reset = try run(AuthTernd.ternctl, ["tls", "reset", "remote.example", "--config", "\(t.dir)/tern.conf"])
        #expect(reset.status == 0, "\(reset)")
        #expect(waitFor(20) { lines(t, "\(second): to=<fwd@example.test> delivered=").count == 2 }, "\(t.log)")
        #expect(waitFor(5) { plain.counts["messages"] == 1 }, "\(plain.counts)")
        // The reset counts at the next attempt: the destination's back-off does not hold it one
        // attempt more (at most an attempt already under way when the reset came is deferred).
        let after = String(t.log.dropFirst(before))
        #expect(after.components(separatedBy: "\(second): to=<fwd@example.test> deferred").count - 1 <= 1, "\(after)")
        #expect(!t.log.contains("not tried again for 0 s"), "\(t.log)")
    }

    @Test("SIGTERM while a receiver takes longer than the grace to answer the final dot: ternd waits for the reply, records the delivery, and does not send the message again after the restart")
    func slowReplyAtStop() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("slow-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = freePort()
        // It commits each message, then answers 14 s later: past ternd's 10 s drain grace.
        let receiver = try startSMTPPeer("deferring_receiver.py", port: port, [String(port), "\(dir)/received", "none.example", "slow=14"])
        defer { stopPeer(receiver) }
        let t = try outboundTernd(port: port)
        defer { t.cleanUp() }
        try t.start()
        // fwd@example.test: a@ and b@remote.example, one transaction.
        let id = try submit(t, to: ["fwd@example.test"], subject: "slow")
        func received() -> [Substring] { ((try? String(contentsOfFile: "\(dir)/received", encoding: .utf8)) ?? "").split(separator: "\n") }
        #expect(waitFor(20) { received().count == 2 }, "\(t.log)")
        // The receiver has the message; its 250 is 14 s away.
        #expect(t.stop() == 0)
        #expect(lines(t, "\(id): to=<fwd@example.test> delivered=").count == 2, "\(t.log.suffix(1500))")
        #expect(t.log.contains("connection(s) still in a transaction; waiting up to"), "\(t.log.suffix(1500))")
        #expect(!t.log.contains("may arrive twice"))
        try t.start()
        #expect(waitFor(20) { (try? run(ternctlPath, ["queue", "--config", "\(t.dir)/tern.conf"]).out.hasPrefix("queue is empty")) == true })
        #expect(t.stop() == 0)
        #expect(received().count == 2, "sent once: \(received())")
    }

    @Test("NOTIFY=SUCCESS: Action: delivered for a local delivery, Action: relayed for a next hop without DSN, nothing when the next hop has DSN; ENVID and ORCPT kept, headers only")
    func successReports() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dsn-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = freePort()
        // aiosmtpd offers no DSN.
        let receiver = try startSMTPPeer("deferring_receiver.py", port: port, [String(port), "\(dir)/received", "none.example"])
        defer { stopPeer(receiver) }
        let t = try outboundTernd(port: port)
        defer { t.cleanUp() }
        try t.start()
        let session = """
            EHLO c.test\r
            MAIL FROM:<bob@example.test> RET=FULL ENVID=env7+0D+0AInjected:+20yes\r
            RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;Alice@example.test\r
            RCPT TO:<fwd@example.test> NOTIFY=SUCCESS,FAILURE\r
            RCPT TO:<split@example.test> NOTIFY=FAILURE\r
            DATA\r
            Subject: tell me\r
            \r
            secret body\r
            .\r
            QUIT\r

            """
        let replies = String(decoding: try exchange(port: t.port, send: Array(session.utf8)), as: UTF8.self)
        #expect(replies.contains("Ok: queued as"), "\(replies)")
        #expect(waitFor(20) { t.mailbox("bob").count == 2 }, "\(t.log)")
        let reports = try t.mailbox("bob").map { try String(contentsOfFile: $0, encoding: .utf8) }
        let delivered = reports.first { $0.contains("Action: delivered") } ?? ""
        let relayed = reports.first { $0.contains("Action: relayed") } ?? ""
        #expect(delivered.contains("Subject: Successful Mail Delivery Report"), "\(reports)")
        #expect(delivered.contains("Final-Recipient: rfc822; alice@example.test\r\nOriginal-Recipient: rfc822;Alice@example.test\r\nAction: delivered\r\nStatus: 2.0.0"), "\(delivered)")
        #expect(delivered.contains("Original-Envelope-Id: env7+0D+0AInjected:+20yes\r\n"), "the client's CR LF stay xtext: \(delivered)")
        #expect(!delivered.contains("\nInjected:"))
        #expect(delivered.contains("Content-Type: text/rfc822-headers") && !delivered.contains("secret body"), "headers only, whatever RET says")
        #expect(!delivered.contains("/new/"), "no mailbox path in the report: \(delivered)")
        #expect(relayed.contains("Final-Recipient: rfc822; a@remote.example\r\nOriginal-Recipient: rfc822;fwd@example.test\r\nAction: relayed\r\nStatus: 2.0.0"), "\(relayed)")
        #expect(relayed.contains("<b@remote.example> (expanded from <fwd@example.test>): relayed to a server that sends no delivery reports"), "\(relayed)")
        #expect(!reports.joined().contains("c@other.example"), "NOTIFY=FAILURE alone: no report of its success")
        #expect(t.stop() == 0)

        // A next hop with DSN was given the NOTIFY and reports itself: no report from us.
        let sink = try SinkProcess(["--report-every", "0.1"])
        defer { _ = sink.stop() }
        let u = try outboundTernd(port: sink.port)
        defer { u.cleanUp() }
        try u.start()
        let told = try exchange(port: u.port, send: Array("EHLO c.test\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<fwd@example.test> NOTIFY=SUCCESS\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n".utf8))
        #expect(String(decoding: told, as: UTF8.self).contains("Ok: queued as"))
        let marker = try submit(u, to: ["split@example.test"])
        #expect(waitFor(20) { lines(u, "\(marker): to=<split@example.test> delivered=").count == 2 }, "\(u.log)")
        #expect(!u.log.contains("success report"), "\(u.log)")
        #expect(u.mailbox("bob").isEmpty)
        #expect(u.stop() == 0)
    }

    @Test("every TLS session to a strict receiver (no unexpected EOF allowed) ends with close_notify")
    func closeNotifyOutbound() throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("outbound-certs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try TestCertificates.make(in: certs, [("mx", ["mx.remote.example"])])
        let port = freePort()
        let log = "\(certs)/sessions.log"
        let receiver = try startSMTPPeer("strict_tls.py", port: port, ["server", String(port), "\(certs)/mx.pem", "\(certs)/mx.key", log])
        defer { stopPeer(receiver) }
        let t = try outboundTernd(port: port)
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> delivered=").count == 2 }, "\(t.log)")
        // Cached connections are closed with QUIT at shutdown at the latest.
        #expect(t.stop() == 0)
        func sessions() -> [String] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init).filter { $0 != "no TLS" }
        }
        #expect(waitFor(10) { !sessions().isEmpty })
        #expect(!sessions().isEmpty && sessions().allSatisfy { $0 == "close_notify" }, "\(sessions())")
    }

    @Test("a certificate from a trusted CA with the MX's name is recorded as tls-verified")
    func verified() throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("outbound-certs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try TestCertificates.make(in: certs, [("mx", ["mx.remote.example"]), ("wrong", ["other.name.example"])])
        let good = try SinkProcess(["--report-every", "0.1", "--tls-cert", "\(certs)/mx.pem", "--tls-key", "\(certs)/mx.key"])
        let t = try outboundTernd(port: good.port, extra: "outbound ca-file \(certs)/ca.pem")
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(id): to=<fwd@example.test> delivered=").count == 2 }, "\(t.log)")
        #expect(t.log.contains("remote.example: TLS level raised to tls-verified"), "\(t.log)")
        _ = good.stop()
        // A certificate for another name is only tls-unverified: below what was reached, held.
        let wrong = try SinkProcess(["--report-every", "0.1", "--tls-cert", "\(certs)/wrong.pem", "--tls-key", "\(certs)/wrong.key"], port: good.port)
        defer { _ = wrong.stop() }
        let second = try submit(t, to: ["fwd@example.test"])
        #expect(waitFor(20) { lines(t, "\(second): to=<fwd@example.test> deferred").count >= 2 }, "\(t.log)")
        #expect(lines(t, "offers tls-unverified but remote.example reached tls-verified before").count >= 1, "\(t.log)")
        #expect(waitFor(2) { wrong.counts["messages"] != nil })
        #expect(wrong.counts["messages"] == 0, "\(wrong.counts) \(wrong.err)")
    }

    @Test("SIGTERM during outbound delivery: the transaction in flight finishes, the rest stays queued and goes out after the restart")
    func drainDuringDelivery() throws {
        let slow = try SinkProcess(["--report-every", "0.1", "--delay", "1500"])
        let t = try outboundTernd(port: slow.port)
        defer { t.cleanUp() }
        try t.start()
        var ids: [String] = []
        for i in 0..<4 { ids.append(try submit(t, to: ["fwd@example.test"], subject: "d\(i)")) }
        #expect(waitFor(10) { (slow.counts["open"] ?? 0) >= 1 }, "a delivery is under way: \(slow.counts)")
        #expect(t.stop() == 0)
        #expect(t.log.contains("outbound: 1 transactions over 1 connections since the start"), "\(t.log)")
        #expect(t.log.contains("stopped; 3 messages stay queued"), "\(t.log)")
        #expect(waitFor(5) { slow.counts["messages"] == 1 }, "the transaction in flight was finished: \(slow.counts)")
        #expect(lines(t, "deferred").isEmpty, "nothing was deferred by the shutdown: \(t.log)")
        _ = slow.stop()
        let sink = try SinkProcess(["--report-every", "0.1"], port: slow.port)
        defer { _ = sink.stop() }
        try t.start()
        #expect(waitFor(30) { ids.allSatisfy { lines(t, "\($0): to=<fwd@example.test> delivered=").count == 2 } }, "\(t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 3 }, "\(sink.counts)")
    }

    @Test("kill -9 in the middle of outbound delivery: after a restart every message is delivered")
    func killDuringDelivery() throws {
        let slow = try SinkProcess(["--report-every", "0.1", "--delay", "3000"])
        let t = try outboundTernd(port: slow.port)
        defer { t.cleanUp() }
        try t.start()
        var ids: [String] = []
        for i in 0..<5 { ids.append(try submit(t, to: ["fwd@example.test"], subject: "k\(i)")) }
        #expect(waitFor(10) { (slow.counts["open"] ?? 0) >= 1 }, "a delivery is under way: \(slow.counts)")
        t.kill9()
        _ = slow.stop()
        let sink = try SinkProcess(["--report-every", "0.1"], port: slow.port)
        defer { _ = sink.stop() }
        try t.start()
        #expect(t.log.contains("5 messages pending"), "\(t.log)")
        #expect(waitFor(30) { ids.allSatisfy { lines(t, "\($0): to=<fwd@example.test> delivered=").count == 2 } }, "\(t.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 5 }, "\(sink.counts)")
    }
}

@Suite("outbound delivery to a real Postfix", .serialized, .enabled(if: PostfixReceiver.available, "needs Debian's postfix and root"))
struct OutboundPostfixTests {
    @Test("Postfix receives over STARTTLS with a verified certificate: every recipient, one connection for all messages")
    func starttls() throws {
        let certs = FileManager.default.temporaryDirectory.appendingPathComponent("pf-certs-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try TestCertificates.make(in: certs, [("mx", ["mx.remote.example"])])
        let pf = try PostfixReceiver(domains: ["remote.example", "other.example"], certificate: ("\(certs)/mx.pem", "\(certs)/mx.key"))
        defer { pf.cleanUp() }
        try pf.start()
        let before = pf.connections
        let t = try outboundTernd(port: pf.port, extra: "outbound ca-file \(certs)/ca.pem")
        defer { t.cleanUp() }
        try t.start()
        for i in 0..<5 { try submit(t, to: ["fwd@example.test"], subject: "pf\(i)") }
        #expect(waitFor(30) { lines(t, "delivered=").count == 10 }, "\(t.log)\n\(pf.log)")
        #expect(waitFor(10) { pf.messages.count == 10 }, "\(pf.log)")
        let got = pf.messages
        #expect(got.filter { $0.contains("Delivered-To: a@remote.example") }.count == 5)
        #expect(got.filter { $0.contains("Delivered-To: b@remote.example") }.count == 5)
        #expect(got.allSatisfy { $0.contains("with ESMTPS") }, "over TLS: \(got.first ?? "")")
        #expect((0..<5).allSatisfy { i in got.contains { $0.contains("Subject: pf\(i)") } })
        #expect(t.log.contains("remote.example: TLS level raised to tls-verified"), "\(t.log)")
        // Connection reuse: one connection from ternd for the five messages (ten recipients).
        #expect(pf.connections - before == 1, "\(pf.log)")
    }

    @Test("Postfix refuses one recipient of two: that one bounces with Postfix's 5.1.1 and its words, the other is delivered")
    func perRecipient() throws {
        let pf = try PostfixReceiver(domains: ["remote.example"], mailboxes: ["a@remote.example"])
        defer { pf.cleanUp() }
        try pf.start()
        let t = try outboundTernd(port: pf.port)
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["fwd@example.test"], subject: "half")
        #expect(waitFor(30) { t.mailbox("bob").count == 1 }, "\(t.log)\n\(pf.log)")
        #expect(lines(t, "\(id): to=<fwd@example.test> delivered=a@remote.example").count == 1, "\(t.log)")
        #expect(lines(t, "\(id): to=<fwd@example.test> failed: mx.remote.example[127.0.0.1] said: 550 5.1.1").count == 1, "\(t.log)")
        let dsn = try String(contentsOfFile: t.mailbox("bob")[0], encoding: .utf8)
        #expect(dsn.contains("Status: 5.1.1") && dsn.contains("b@remote.example") && dsn.contains("User unknown"), "\(dsn)")
        #expect(waitFor(10) { pf.messages.count == 1 })
        #expect(pf.messages.first?.contains("Delivered-To: a@remote.example") == true)
    }

    @Test("Postfix taking 20 recipients a transaction gets all 150 of a message's: 120 in six transactions on one connection, 30 in two on another")
    func recipientLimit() throws {
        let pf = try PostfixReceiver(domains: ["remote.example", "other.example"], extra: "smtpd_recipient_limit = 20")
        defer { pf.cleanUp() }
        try pf.start()
        let before = pf.connections
        let t = try outboundTernd(port: pf.port)
        defer { t.cleanUp() }
        try t.start()
        let id = try submit(t, to: ["crowd@example.test"], subject: "twenty at a time")
        #expect(waitFor(30) { lines(t, "\(id): to=<crowd@example.test> delivered=").count == 150 }, "\(t.log)\n\(pf.log)")
        #expect(lines(t, "deferred").isEmpty && lines(t, "failed").isEmpty, "\(t.log)")
        #expect(waitFor(10) { pf.messages.count == 150 }, "\(pf.log)")
        #expect(pf.log.components(separatedBy: "nrcpt=20 (queue active)").count - 1 == 7, "\(pf.log)")
        #expect(pf.log.components(separatedBy: "nrcpt=10 (queue active)").count - 1 == 1, "\(pf.log)")
        // Postfix's session summaries (after ternd's QUIT) count the RCPTs: 100 + 100 (80 refused
        // for their number, then the last 20) + 80 + 60 + 40 + 20, and 30 + 10.
        #expect(waitFor(15) { pf.log.components(separatedBy: "]: disconnect from").count - 1 == before + 2 }, "\(pf.log)")
        #expect(pf.log.contains(" mail=6 rcpt=400 bdat=6 ") && pf.log.contains(" mail=2 rcpt=40 bdat=2 "), "\(pf.log)")
        #expect(pf.connections - before == 2, "one per domain: \(pf.log)")
    }

    @Test("Postfix without SMTPUTF8: the domain goes as A-labels; a UTF-8 local part bounces with 5.6.7")
    func punycode() throws {
        let pf = try PostfixReceiver(domains: ["xn--bcher-kva.example"], smtpUTF8: false)
        defer { pf.cleanUp() }
        try pf.start()
        let t = try outboundTernd(port: pf.port)
        defer { t.cleanUp() }
        try t.start()
        try submit(t, to: ["idn@example.test"], subject: "to punycode")
        #expect(waitFor(30) { pf.messages.count == 1 }, "\(t.log)\n\(pf.log)")
        #expect(pf.messages.first?.contains("Delivered-To: x@xn--bcher-kva.example") == true, "\(pf.messages)")
        try submit(t, to: ["idnlocal@example.test"], subject: "utf8 local part")
        #expect(waitFor(30) { t.mailbox("bob").count == 1 }, "\(t.log)")
        let dsn = try String(contentsOfFile: t.mailbox("bob")[0], encoding: .utf8)
        #expect(dsn.contains("Status: 5.6.7"), "\(dsn)")
        #expect(dsn.contains("SMTPUTF8"), "\(dsn)")
        #expect(pf.messages.count == 1)
    }

    @Test("Postfix with SMTPUTF8 gets the address in UTF-8")
    func utf8() throws {
        let pf = try PostfixReceiver(domains: ["bücher.example"], smtpUTF8: true)
        defer { pf.cleanUp() }
        try pf.start()
        let t = try outboundTernd(port: pf.port)
        defer { t.cleanUp() }
        try t.start()
        try submit(t, to: ["idnlocal@example.test"], subject: "utf8")
        #expect(waitFor(30) { pf.messages.count == 1 }, "\(t.log)\n\(pf.log)")
        #expect(pf.messages.first?.contains("Delivered-To: ñandú@bücher.example") == true, "\(pf.messages)")
    }
}

/// As root: `path` and everything in it become the queue user's (`_ternq`), as a Maildir tree
/// made while ternd runs must be.
func giveToQueueUser(_ path: String) {
    guard getuid() == 0, getpwnam("_ternq") != nil else { return }
    _ = try? run("/bin/chown", ["-R", "_ternq:_ternq", path])
}

@Suite("outbound through a relay host", .serialized)
struct SmarthostTests {
    /// B: a ternd with a submission port (STARTTLS, AUTH) and a domain b.test holding carol.
    func relayHost() throws -> AuthTernd {
        let b = try AuthTernd(limits: "domain b.test {\n}")
        for sub in ["new", "cur", "tmp"] {
            try FileManager.default.createDirectory(atPath: "\(b.t.dir)/mail/b.test/carol/\(sub)", withIntermediateDirectories: true)
        }
        // A Maildir made while ternd runs must be the queue user's, who delivers into it (the
        // ones there at the start are given to it then).
        giveToQueueUser("\(b.t.dir)/mail/b.test")
        return b
    }

    /// A: forwards far@example.test to carol@b.test through `relay`, finding mx.example.test at 127.0.0.1.
    func sender(_ relay: String, password: String, extra: String = "") throws -> TerndProcess {
        let a = try TerndProcess(
            aliases: "far: carol@b.test\n", extraConfig: "\(relay)\nlimits {\nretry-interval 1s\nretry-max-interval 1s\n}\n\(extra)",
            zone: "$ORIGIN example.test.\nmx A 127.0.0.1\nmx2 A 127.0.0.1\n")
        try password.write(toFile: "\(a.dir)/relay-password", atomically: true, encoding: .utf8)
        return a
    }

    func carol(_ b: AuthTernd) -> [String] {
        let d = "\(b.t.dir)/mail/b.test/carol/new"
        return ((try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []).map { "\(d)/\($0)" }
    }

    @Test("smtp+starttls with AUTH to a submission port, as the route for one domain and as the default route", arguments: ["b.test", "*"])
    func authenticated(_ domain: String) throws {
        let b = try relayHost()
        defer { b.t.cleanUp() }
        let a = try sender(
            "relay \(domain) via smtp+starttls://alice%40example.test@mx.example.test:\(b.submission) auth relay-password",
            password: AuthTernd.password + (domain == "*" ? "\r\n" : "\n"), extra: "outbound ca-file \(b.t.dir)/ca.pem")
        defer { a.cleanUp() }
        try a.start()
        #expect(a.log.contains("relay: mail for \(domain == "*" ? "every other domain" : "b.test accepted from anyone and") sent via smtp+starttls://alice@example.test@mx.example.test:\(b.submission)"), "\(a.log)")
        let id = try submit(a, to: ["far@example.test"], subject: "via relay host")
        #expect(waitFor(20) { carol(b).count == 1 }, "\(a.log)\n\(b.t.log)")
        #expect(lines(a, "\(id): to=<far@example.test> delivered=carol@b.test mx.example.test[127.0.0.1] said: 250").count == 1, "\(a.log)")
        #expect(b.t.log.contains("auth: alice@example.test logged in"), "\(b.t.log)")
        // (A failed test above must not crash the whole run here.)
        let delivered = try #require(carol(b).first)
        let got = try String(contentsOfFile: delivered, encoding: .utf8)
        #expect(got.contains("with ESMTPSA"), "\(got)")
        #expect(got.contains("Subject: via relay host"))
    }

    @Test("a wrong password or an unverified certificate defers (nothing bounces, nothing is sent unauthenticated)")
    func refused() throws {
        let b = try relayHost()
        defer { b.t.cleanUp() }
        let wrong = try sender(
            "relay b.test via smtp+starttls://alice%40example.test@mx.example.test:\(b.submission) auth relay-password",
            password: "not the password\n", extra: "outbound ca-file \(b.t.dir)/ca.pem")
        defer { wrong.cleanUp() }
        try wrong.start()
        let id = try submit(wrong, to: ["far@example.test"])
        #expect(waitFor(20) { lines(wrong, "\(id): to=<far@example.test> deferred").count >= 2 }, "\(wrong.log)")
        #expect(lines(wrong, "\(id): to=<far@example.test> deferred").first?.contains("535") == true, "\(wrong.log)")
        #expect(wrong.mailbox("bob").isEmpty && carol(b).isEmpty)

        // The system trust store does not know B's test CA: no AUTH is sent.
        let untrusted = try sender(
            "relay b.test via smtp+starttls://alice%40example.test@mx.example.test:\(b.submission) auth relay-password",
            password: AuthTernd.password + "\n")
        defer { untrusted.cleanUp() }
        try untrusted.start()
        let second = try submit(untrusted, to: ["far@example.test"])
        #expect(waitFor(20) { lines(untrusted, "\(second): to=<far@example.test> deferred").count >= 1 }, "\(untrusted.log)")
        #expect(lines(untrusted, "\(second): to=<far@example.test> deferred").first?.contains("does not verify") == true, "\(untrusted.log)")
        #expect(carol(b).isEmpty)
    }

    @Test("SIGHUP replaces relay routes: a fixed password is used by the next message at once; a new relay host takes what follows")
    func reloadRoutes() throws {
        let b = try relayHost()
        defer { b.t.cleanUp() }
        // Retries and the destination's back-off every 5 s: long enough to tell a message that
        // took the new route from one held by the old destination.
        let a = try sender(
            "relay b.test via smtp+starttls://alice%40example.test@mx.example.test:\(b.submission) auth relay-password",
            password: "not the password\n", extra: "outbound ca-file \(b.t.dir)/ca.pem\nlimits {\nretry-interval 5s\nretry-max-interval 5s\n}")
        defer { a.cleanUp() }
        try a.start()
        let first = try submit(a, to: ["far@example.test"], subject: "before the fix")
        #expect(waitFor(20) { lines(a, "\(first): to=<far@example.test> deferred").count == 1 }, "\(a.log)")
        #expect(lines(a, "\(first): to=<far@example.test> deferred").first?.contains("535") == true, "\(a.log)")

        // The operator fixes the password and reloads; a message sent now goes at once with it,
        // though the old route's destination is still backing off.
        try (AuthTernd.password + "\n").write(toFile: "\(a.dir)/relay-password", atomically: true, encoding: .utf8)
        kill(a.process!.processIdentifier, SIGHUP)
        #expect(waitFor(10) { a.log.contains("outbound: relay routes replaced") }, "\(a.log)")
        let second = try submit(a, to: ["far@example.test"], subject: "after the fix")
        #expect(waitFor(20) { lines(a, "\(second): to=<far@example.test> delivered=carol@b.test").count == 1 }, "\(a.log)")
        #expect(lines(a, "\(second): to=<far@example.test> deferred").isEmpty, "the new route at the first attempt: \(a.log)")
        #expect(waitFor(20) { lines(a, "\(first): to=<far@example.test> delivered=carol@b.test").count == 1 }, "the deferred one at its retry: \(a.log)")
        #expect(waitFor(10) { carol(b).count == 2 })

        // Another relay host for b.test, without TLS. Under the same name (mx.example.test, seen
        // with a verified certificate) that is a downgrade: held. Under a new name it is taken.
        let sink = try SinkProcess(["--report-every", "0.1"])
        defer { _ = sink.stop() }
        func route(_ line: String, replacing old: String, reloads: Int) throws {
            let conf = try String(contentsOfFile: "\(a.dir)/tern.conf", encoding: .utf8)
            #expect(conf.contains(old))
            try conf.replacingOccurrences(of: old, with: line).write(toFile: "\(a.dir)/tern.conf", atomically: true, encoding: .utf8)
            kill(a.process!.processIdentifier, SIGHUP)
            #expect(waitFor(10) { a.log.components(separatedBy: "outbound: relay routes replaced").count == reloads + 1 }, "\(a.log)")
        }
        let authenticated = "relay b.test via smtp+starttls://alice%40example.test@mx.example.test:\(b.submission) auth relay-password"
        try route("relay b.test via smtp://mx.example.test:\(sink.port)", replacing: authenticated, reloads: 2)
        let third = try submit(a, to: ["far@example.test"], subject: "to the new relay host")
        #expect(waitFor(20) { lines(a, "\(third): to=<far@example.test> deferred").count == 1 }, "\(a.log)")
        #expect(lines(a, "\(third): to=<far@example.test> deferred").first?.contains("reached tls-verified before") == true, "\(a.log)")
        try route("relay b.test via smtp://mx2.example.test:\(sink.port)", replacing: "relay b.test via smtp://mx.example.test:\(sink.port)", reloads: 3)
        #expect(waitFor(20) { lines(a, "\(third): to=<far@example.test> delivered=carol@b.test").count == 1 }, "at its retry: \(a.log)")
        #expect(waitFor(5) { sink.counts["messages"] == 1 }, "\(sink.counts)")
        #expect(carol(b).count == 2)
        #expect(!a.log.contains("take effect at the next start"), "nothing else changed: \(a.log)")
    }

    @Test("relay host settings that cannot work are refused at start with file and line")
    func badSettings() throws {
        let a = try sender("relay b.test via smtp+starttls://u@mx.example.test auth missing-file", password: "x")
        defer { a.cleanUp() }
        let r = try run(TerndProcess.terndPath, ["--config", "\(a.dir)/tern.conf", "--check"])
        #expect(r.status != 0)
        #expect(r.out.contains("\(a.dir)/tern.conf:10: cannot read the relay password file \(a.dir)/missing-file"), "\(r)")
        let local = try sender("relay example.test", password: "x")
        defer { local.cleanUp() }
        let s = try run(TerndProcess.terndPath, ["--config", "\(local.dir)/tern.conf", "--check"])
        #expect(s.status != 0)
        #expect(s.out.contains("\(local.dir)/tern.conf:10: 'example.test' is a local domain (domain block): it cannot also be relayed"), "\(s)")
    }
}

@Suite("relayed domains under load", .serialized)
struct RelayLoadTests {
    @Test("ternbench --domains spreads mail over relayed domains; each domain's mail rides reused connections")
    func spread() throws {
        let sink = try SinkProcess(["--report-every", "0.1"])
        defer { _ = sink.stop() }
        let n = 10
        let zone = outboundZone + "\n" + (0..<n).map { "$ORIGIN d\($0).relay.example.\n@ MX 10 mx.remote.example.\n" }.joined()
        let t = try TerndProcess(
            extraConfig: "outbound port \(sink.port)\n" + (0..<n).map { "relay d\($0).relay.example" }.joined(separator: "\n"), zone: zone)
        defer { t.cleanUp() }
        try t.start()
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(t.port)", "--sessions", "8", "--messages", "400", "--to", "rcpt@relay.example", "--domains", "\(n)"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(waitFor(30) { lines(t, "delivered=").count == 400 }, "\(t.log)")
        for k in 0..<n { #expect(lines(t, "delivered=rcpt@d\(k).relay.example ").count == 40, "domain d\(k)") }
        #expect(waitFor(5) { sink.counts["messages"] == 400 })
        let sessions = sink.counts["sessions"] ?? 0
        #expect(sessions >= n && sessions <= 4 * n, "at least one connection per domain, and reused: \(sink.counts)")
        // Another domain is still refused: relaying is per domain, never open.
        #expect(try t.rcptReply("<x@relay.example>").hasPrefix("554 5.7.1"))
        #expect(try t.rcptReply("<x@d10.relay.example>").hasPrefix("554 5.7.1"))
    }
}
