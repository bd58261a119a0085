import Foundation
import TernTestSupport
import Testing

/// STARTTLS in ternd with `certificates DIR` (certbot's layout) and a test CA: swaks, Python's
/// ssl, `openssl s_client`.
@Suite("ternd: STARTTLS", .serialized)
struct STARTTLSTests {
    /// A CA and a certificate for mx.example.test under DIR/certs/mx.example.test/ in certbot's
    /// layout.
    static func makeCertificates(_ dir: String) throws {
        try TestCertificates.make(in: dir, [("certs/mx.example.test/cert", ["mx.example.test"])])
        let fm = FileManager.default
        try fm.moveItem(atPath: "\(dir)/certs/mx.example.test/cert.pem", toPath: "\(dir)/certs/mx.example.test/fullchain.pem")
        try fm.moveItem(atPath: "\(dir)/certs/mx.example.test/cert.key", toPath: "\(dir)/certs/mx.example.test/privkey.pem")
    }

    @Test("swaks delivers over STARTTLS; the Received header says ESMTPS with the cipher; s_client verifies the certificate")
    func deliver() throws {
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        try t.start()
        #expect(t.log.contains("tls: STARTTLS offered; certificates by SNI: mx.example.test"), "\(t.log)")
        let swaks = try #require(which("swaks"))
        let r = try run(swaks, [
            "--server", "127.0.0.1:\(t.port)", "--from", "carol@elsewhere.example", "--to", "bob@example.test",
            "--helo", "client.example", "--tls", "--header", "Subject: over TLS", "--body", "secret", "--suppress-data",
        ])
        #expect(r.status == 0 && r.out.contains("250 2.0.0 Ok: queued as"), "\(r.out) \(r.err)")
        for _ in 0..<400 where t.mailbox("bob").isEmpty { usleep(25_000) }
        let text = try String(contentsOfFile: try #require(t.mailbox("bob").first), encoding: .utf8)
        #expect(text.contains("by mx.example.test (Tern) with ESMTPS (TLSv1."), "\(text)")
        #expect(text.contains("\r\n\r\nsecret\r\n"), "\(text)")
        let s = try run("/bin/sh", ["-c", "echo QUIT | openssl s_client -starttls smtp -connect 127.0.0.1:\(t.port) -servername mx.example.test -verify_hostname mx.example.test -CAfile '\(t.dir)/ca.pem' 2>&1"])
        #expect(s.out.contains("Verification: OK"), "\(s.out)")
        #expect(s.out.contains("Protocol: TLSv1.3") || s.out.contains("TLSv1.3"), "\(s.out)")
        #expect(t.stop() == 0)
    }

    @Test("incoming TLS history: a sender domain whose SPF passed over TLS is refused (451 4.7.3) in plaintext later, until ternctl tls reset; unauthenticated senders change nothing")
    func incomingHistory() throws {
        let zone = "$ORIGIN example.org.\npass TXT \"v=spf1 ip4:127.0.0.2 -all\"\nother TXT \"v=spf1 ip4:192.0.2.1 -all\"\n"
        let t = try TerndProcess(extraConfig: "certificates certs\nspf tag", zone: zone)
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        try t.start()
        func mail(from: String, tls: Bool) throws -> String {
            let r = try run(try #require(which("python3")), ["-c", """
                import smtplib, ssl
                s = smtplib.SMTP("127.0.0.1", \(t.port), local_hostname="client.example.org", source_address=("127.0.0.2", 0), timeout=20)
                s.ehlo()
                if \(tls ? "True" : "False"):
                    s.starttls(context=ssl._create_unverified_context())
                    s.ehlo()
                code, text = s.mail("\(from)")
                print(code, text.decode())
                s.quit()
                """], timeout: 60)
            return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try mail(from: "a@pass.example.org", tls: false).hasPrefix("250"), "plain, nothing known yet")
        #expect(try mail(from: "a@pass.example.org", tls: true).hasPrefix("250"))
        #expect(waitFor(10) { t.log.contains("tls: incoming mail from pass.example.org reached tls-unverified") }, "\(t.log)")
        let show = try run(ternctlPath, ["tls", "show", "pass.example.org", "--config", "\(t.dir)/tern.conf"])
        #expect(show.out.contains("pass.example.org incoming tls-unverified"), "\(show)")
        let downgraded = try mail(from: "b@pass.example.org", tls: false)
        #expect(downgraded.hasPrefix("451 4.7.3"), "\(downgraded)")
        #expect(t.log.contains("pass.example.org sent mail over tls-unverified before, this session is plain"), "\(t.log)")
        // A sender whose SPF does not pass neither raises nor is held to a level (a forger could).
        #expect(try mail(from: "a@other.example.org", tls: true).hasPrefix("250"))
        #expect(try mail(from: "a@other.example.org", tls: false).hasPrefix("250"))
        #expect(try run(ternctlPath, ["tls", "show", "other.example.org", "--config", "\(t.dir)/tern.conf"]).out.contains("incoming plain"))
        #expect(try run(ternctlPath, ["tls", "reset", "pass.example.org", "--config", "\(t.dir)/tern.conf"]).status == 0)
        #expect(try mail(from: "b@pass.example.org", tls: false).hasPrefix("250"), "accepted after the reset")
        #expect(t.stop() == 0)
    }

    @Test("a TLS handshake that fails is logged with the client and the reason")
    func handshakeFailureLogged() throws {
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        try t.start()
        // Garbage where the ClientHello should be, sent after the 220 (plaintext pipelined
        // behind STARTTLS is dropped).
        let py = try run(try #require(which("python3")), ["-c", """
            import socket
            s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=10)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO c.test\\r\\n")
            while not f.readline().startswith(b"250 "): pass
            s.sendall(b"STARTTLS\\r\\n")
            print(f.readline().decode().strip())
            s.sendall(b"this is not a ClientHello at all\\r\\n" * 4)
            s.recv(4096)
            """])
        #expect(py.out.contains("220 2.0.0"), "\(py)")
        #expect(waitFor(10) { t.log.contains("closed client=127.0.0.1: TLS handshake failed: ") }, "\(t.log)")
        #expect(t.stop() == 0)
    }

    @Test("plaintext pipelined behind STARTTLS is dropped: the first reply over TLS answers EHLO, not the injected NOOP")
    func injection() throws {
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        try t.start()
        let script = """
            import socket, ssl
            s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=10)
            f = s.makefile("rb")
            def reply():
                lines = []
                while True:
                    line = f.readline()
                    lines.append(line.decode())
                    if line[3:4] != b"-":
                        return "".join(lines)
            reply()
            s.sendall(b"EHLO c.test\\r\\n")
            ehlo = reply()
            print("offered" if "STARTTLS" in ehlo else "not offered")
            s.sendall(b"STARTTLS\\r\\nNOOP injected\\r\\n")
            print(reply().strip())
            ctx = ssl.create_default_context(cafile="\(t.dir)/ca.pem")
            t = ctx.wrap_socket(s, server_hostname="mx.example.test")
            tf = t.makefile("rb")
            t.sendall(b"EHLO c.test\\r\\n")
            first = tf.readline().decode().strip()
            print(first)
            rest = [first]
            while rest[-1][3:4] == "-":
                rest.append(tf.readline().decode().strip())
            print("STARTTLS offered again" if any("STARTTLS" in l for l in rest) else "not offered again")
            t.sendall(b"QUIT\\r\\n")
            print(tf.readline().decode().strip())
            """
        let r = try run("/usr/bin/python3", ["-c", script], timeout: 60)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.count >= 5, "\(r)")
        guard lines.count >= 5 else { return }
        #expect(lines[0] == "offered")
        #expect(lines[1] == "220 2.0.0 Ready to start TLS")
        #expect(lines[2] == "250-mx.example.test", "the injected NOOP got no answer over TLS: \(lines)")
        #expect(lines[3] == "not offered again")
        #expect(lines[4].hasPrefix("221"))
        #expect(t.stop() == 0)
    }

    @Test("after 221 over TLS ternd sends close_notify before closing: a strict client (no unexpected EOF allowed) sees a clean end")
    func closeNotifyInbound() throws {
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        try t.start()
        for _ in 0..<3 {
            let r = try run("/usr/bin/python3", ["\(peersDirectory)/strict_tls.py", "client", String(t.port)], timeout: 30)
            #expect(r.status == 0 && r.out == "close_notify\n", "\(r.out) \(r.err)")
        }
        #expect(t.stop() == 0)
    }

    @Test("certificate problems stop --check with the file named")
    func badCertificates() throws {
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        let ok = try run(TerndProcess.terndPath, ["--check", "--config", "\(t.dir)/tern.conf"])
        #expect(ok.out == "configuration OK\n", "\(ok)")
        // A key that belongs to another certificate.
        _ = try run("/bin/sh", ["-c", "cd '\(t.dir)' && openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out certs/mx.example.test/privkey.pem 2>/dev/null"])
        let mismatch = try run(TerndProcess.terndPath, ["--check", "--config", "\(t.dir)/tern.conf"])
        #expect(mismatch.status == 1)
        #expect(mismatch.out.contains("certs/mx.example.test/privkey.pem: does not match the certificate in"), "\(mismatch.out)")
        try FileManager.default.removeItem(atPath: "\(t.dir)/certs")
        let missing = try run(TerndProcess.terndPath, ["--check", "--config", "\(t.dir)/tern.conf"])
        #expect(missing.status == 1 && missing.out.contains("cannot read the certificates directory"), "\(missing.out)")
    }

    @Test("testssl.sh --starttls smtp: nothing below TLS 1.2, no weak cipher, forward secrecy, server order; no finding above INFO")
    func testssl() throws {
        let testssl = try #require(which("testssl") ?? which("testssl.sh"), "testssl.sh is installed by make test")
        let t = try TerndProcess(extraConfig: "certificates certs")
        defer { t.cleanUp() }
        try Self.makeCertificates(t.dir)
        try t.start()
        // --nodns none: no DNS question leaves the machine.
        let r = try run(testssl, [
            "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", "-p", "-s", "-f", "-P",
            "--jsonfile", "\(t.dir)/testssl.json", "--starttls", "smtp", "127.0.0.1:\(t.port)",
        ], timeout: 300)
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(t.dir)/testssl.json"))
        let findings = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]], "\(r.out)")
        var byID: [String: String] = [:]
        for f in findings { byID[f["id"] as? String ?? ""] = f["finding"] as? String ?? "" }
        for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] { #expect(byID[old] == "not offered", "\(old): \(byID[old] ?? "missing")") }
        #expect(byID["TLS1_2"] == "offered")
        #expect(byID["TLS1_3"]?.hasPrefix("offered") == true)
        for weak in ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"] {
            #expect(byID[weak] == "not offered", "\(weak): \(byID[weak] ?? "missing")")
        }
        #expect(byID["cipherlist_STRONG"] == "offered")
        #expect(byID["cipher_order"] == "server")
        let bad = findings.filter { !["INFO", "OK"].contains($0["severity"] as? String ?? "") }
        #expect(bad.isEmpty, "\(bad)")
        #expect(t.stop() == 0)
    }
}
