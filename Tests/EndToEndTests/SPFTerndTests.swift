import Foundation
import Testing

/// SPF at MAIL FROM in ternd, from 127.0.0.2 (mail from the host itself, 127.0.0.1, is not
/// checked), against a static zone: no query leaves the test.
@Suite("ternd: SPF at MAIL FROM", .serialized)
struct SPFTerndTests {
    static let zone = """
        $ORIGIN example.org.
        pass     TXT "v=spf1 ip4:127.0.0.2 -all"
        fail     TXT "v=spf1 ip4:192.0.2.0/24 -all exp=why.example.org"
        why      TXT "%{i} is not a mail server of %{d}"
        helo     TXT "v=spf1 a -all"
        helo     A   127.0.0.2
        """

    /// Sends one message with Python's smtplib from 127.0.0.2; returns
    /// the MAIL reply code and text, and whether the message was accepted.
    func send(port: Int, from: String, helo: String = "client.example.org", source: String = "127.0.0.2") throws -> (code: Int, text: String, accepted: Bool) {
        let script = """
            import smtplib, sys
            s = smtplib.SMTP("127.0.0.1", \(port), local_hostname="\(helo)", source_address=("\(source)", 0), timeout=20)
            s.ehlo()
            code, text = s.mail("\(from)")
            ok = False
            if code == 250:
                s.rcpt("bob@example.test")
                c2, _ = s.data(b"Authentication-Results: MX.example.test; dkim=pass forged\\r\\nAuthentication-Results: other.example; spf=none\\r\\nSubject: spf\\r\\n\\r\\nhello\\r\\n")
                ok = c2 == 250
            print(code)
            print(text.decode())
            print("accepted" if ok else "refused")
            s.quit()
            """
        let r = try run("/usr/bin/python3", ["-c", script], timeout: 60)
        let lines = r.out.split(separator: "\n").map(String.init)
        guard lines.count >= 3, let code = Int(lines[0]) else { throw SPFTestError(message: "\(r)") }
        return (code, lines[1], lines[2] == "accepted")
    }

    struct SPFTestError: Error { let message: String }

    @Test("pass: accepted with a Received-SPF header above ours; fail: 550 5.7.23 with the exp= text; the local host is not checked")
    func rejectPolicy() throws {
        let t = try TerndProcess(zone: Self.zone)
        defer { t.cleanUp() }
        try t.start()
        let pass = try send(port: t.port, from: "alice@pass.example.org")
        #expect(pass.code == 250 && pass.accepted, "\(pass)")
        let fail = try send(port: t.port, from: "alice@fail.example.org")
        #expect(fail.code == 550 && fail.text == "5.7.23 SPF fail: 127.0.0.2 is not a mail server of fail.example.org", "\(fail)")
        #expect(!fail.accepted)
        // The null sender: the HELO name is checked.
        let bounce = try send(port: t.port, from: "", helo: "helo.example.org")
        #expect(bounce.code == 250 && bounce.accepted, "\(bounce)")
        var files: [String] = []
        for _ in 0..<200 where files.count < 2 {
            files = t.mailbox("bob")
            usleep(50_000)
        }
        #expect(files.count == 2)
        let texts = files.compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }
        let passed = try #require(texts.first { $0.contains("envelope-from=\"alice@pass.example.org\"") })
        // Below the delivery's Return-Path and Delivered-To and our Authentication-Results (no From
        // field: DMARC has no domain to judge), above our Received (RFC 7208 §9.1); a forged
        // Authentication-Results in our name is gone.
        #expect(passed.hasPrefix("Return-Path: <alice@pass.example.org>\r\nDelivered-To: bob@example.test\r\nAuthentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=alice@pass.example.org;\r\n\tdkim=none;\r\n\tdmarc=permerror\r\nReceived-SPF: pass (mx.example.test: domain of alice@pass.example.org designates 127.0.0.2 as permitted sender)\r\n"), "\(passed)")
        #expect(!passed.contains("dkim=pass forged") && passed.contains("Authentication-Results: other.example; spf=none\r\n"), "\(passed)")
        #expect(passed.contains("identity=mailfrom\r\nReceived: from client.example.org ([127.0.0.2])"), "\(passed)")
        #expect(texts.contains { $0.contains("\r\nReceived-SPF: pass (mx.example.test: domain of postmaster@helo.example.org designates") && $0.contains("identity=helo") && $0.contains("spf=pass smtp.helo=helo.example.org") })
        #expect(t.log.contains("SPF fail"))
        // The host itself (127.0.0.1) is not checked: accepted, no Received-SPF.
        let local = try send(port: t.port, from: "alice@fail.example.org", source: "127.0.0.1")
        #expect(local.code == 250 && local.accepted, "\(local)")
        for _ in 0..<200 where t.mailbox("bob").count < 3 { usleep(50_000) }
        let localText = t.mailbox("bob").compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.first { $0.contains("([127.0.0.1])") }
        #expect(localText.map { !$0.contains("Received-SPF") } == true, "\(localText ?? "missing")")
    }

    @Test("spf tag: a fail is accepted and marked")
    func tagPolicy() throws {
        let t = try TerndProcess(extraConfig: "spf tag", zone: Self.zone)
        defer { t.cleanUp() }
        try t.start()
        let fail = try send(port: t.port, from: "alice@fail.example.org")
        #expect(fail.code == 250 && fail.accepted, "\(fail)")
        var files: [String] = []
        for _ in 0..<200 where files.isEmpty {
            files = t.mailbox("bob")
            usleep(50_000)
        }
        let text = files.first.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
        #expect(text.contains("\r\nReceived-SPF: fail (mx.example.test: domain of alice@fail.example.org does not designate 127.0.0.2 as permitted sender)"), "\(text)")
    }
}
