import Foundation
import Testing

/// DKIM and DMARC in ternd: signatures made by dkimpy verified on arrival, DMARC policies applied
/// at the end of DATA, and mail from the host itself signed with the domain's key. DNS is a zone
/// file; remote clients come from 127.0.0.2.
@Suite("ternd: DKIM and DMARC", .serialized)
struct MailAuthTerndTests {
    /// dkimpy's key pair for example.org, made once.
    static let keys: (dir: String, record: String) = {
        let dir = NSTemporaryDirectory() + "tern-dkimpy-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try! run("/bin/sh", ["-c", "cd '\(dir)' && /usr/bin/dknewkey --ktype rsa py > /dev/null"])
        let text = (try? String(contentsOfFile: "\(dir)/py.dns", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let strings = stride(from: 0, to: text.count, by: 200).map { "\"" + String(Array(text)[$0..<min($0 + 200, text.count)]) + "\"" }
        return (dir, strings.joined(separator: " "))
    }()

    static var zone: String {
        """
        $ORIGIN example.org.
        py._domainkey   TXT \(keys.record)
        _dmarc          TXT "v=DMARC1; p=reject"
        quarantine      TXT "v=spf1 -all"
        _dmarc.quarantine TXT "v=DMARC1; p=quarantine"
        $ORIGIN bounces.example.
        @               TXT "v=spf1 ip4:127.0.0.2 -all"
        """
    }

    /// A message From `from`, signed by dkimpy as example.org when `sign`; `tamper` changes the
    /// body after signing.
    func message(from: String, sign: Bool, tamper: Bool = false) throws -> String {
        let dir = Self.keys.dir
        let name = "\(dir)/m-\(UUID().uuidString).eml"
        try "From: \(from)\r\nTo: bob@example.test\r\nSubject: dmarc\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nHello\r\n".write(toFile: name, atomically: true, encoding: .utf8)
        if sign {
            let r = try run("/bin/sh", ["-c", "cd '\(dir)' && /usr/bin/dkimsign --hcanon relaxed --bcanon relaxed py example.org py.key < '\(name)' > '\(name).signed' && mv '\(name).signed' '\(name)'"])
            #expect(r.status == 0, "\(r)")
        }
        if tamper { _ = try run("/bin/sh", ["-c", "sed -i 's/^Hello/Goodbye/' '\(name)'"]) }
        return name
    }

    /// Sends the file with smtplib from `source`; the reply to DATA (code and text).
    func send(port: Int, file: String, mailFrom: String = "bounce@bounces.example", source: String = "127.0.0.2") throws -> (Int, String) {
        let script = """
            import smtplib
            s = smtplib.SMTP("127.0.0.1", \(port), local_hostname="client.example", source_address=("\(source)", 0), timeout=20)
            s.ehlo()
            s.mail("\(mailFrom)")
            s.rcpt("bob@example.test")
            code, text = s.data(open("\(file)", "rb").read())
            print(code)
            print(text.decode())
            s.quit()
            """
        let r = try run("/usr/bin/python3", ["-c", script], timeout: 60)
        let lines = r.out.split(separator: "\n").map(String.init)
        return (lines.first.flatMap { Int($0) } ?? 0, lines.count > 1 ? lines[1] : r.err)
    }

    /// The delivered message that contains `marker` (waiting up to 10 s for it).
    func delivered(_ t: TerndProcess, containing marker: String) -> String {
        for _ in 0..<400 {
            if let text = t.mailbox("bob").compactMap({ try? String(contentsOfFile: $0, encoding: .utf8) }).first(where: { $0.contains(marker) }) { return text }
            usleep(25_000)
        }
        return ""
    }

    @Test("dkim results in Authentication-Results; DMARC: p=reject refused with 550 5.7.1, aligned DKIM passes, quarantine marked")
    func dmarcReject() throws {
        let t = try TerndProcess(zone: Self.zone)
        defer { t.cleanUp() }
        try t.start()
        #expect(t.log.contains("dmarc: a fail with p=reject is refused (550 5.7.1)"), "\(t.log)")
        // Signed by example.org and From example.org: DKIM aligned, DMARC pass (SPF is for another domain).
        let ok = try send(port: t.port, file: try message(from: "Alice <alice@example.org>", sign: true))
        #expect(ok.0 == 250, "\(ok) \(t.log)")
        let passed = delivered(t, containing: "alice@example.org")
        #expect(passed.contains("Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=bounce@bounces.example;\r\n\tdkim=pass header.d=example.org header.s=py header.a=rsa-sha256 header.b="), "\(passed)")
        #expect(passed.contains(";\r\n\tdmarc=pass (p=reject dis=none) header.from=example.org\r\n"), "\(passed)")
        // Not signed: SPF passes for bounces.example only, nothing aligned: refused.
        let refused = try send(port: t.port, file: try message(from: "alice@example.org", sign: false))
        #expect(refused.0 == 550 && refused.1 == "5.7.1 Message rejected by the DMARC policy of example.org", "\(refused)")
        // Not exactly one author (RFC 7489 §6.6.1), with SPF aligned for the other domain: the
        // strictest policy among the domains applies, so still refused.
        for from in [
            "x@bounces.example\r\nFrom: alice@example.org", "alice@example.org\r\nFrom: x@bounces.example",
            "x@bounces.example, alice@example.org", "Team: x@bounces.example, alice@example.org;",
        ] {
            let spoof = try send(port: t.port, file: try message(from: from, sign: false))
            #expect(spoof.0 == 550 && spoof.1.contains("DMARC policy of example.org"), "\(from): \(spoof)")
        }
        // Signed, then changed on the way: dkim=fail, so DMARC fails too.
        let tampered = try send(port: t.port, file: try message(from: "alice@example.org", sign: true, tamper: true))
        #expect(tampered.0 == 550, "\(tampered)")
        #expect(t.log.contains("DMARC fail for example.org (p=reject)"))
        // p=quarantine: accepted and marked.
        let q = try send(port: t.port, file: try message(from: "carol@quarantine.example.org", sign: false))
        #expect(q.0 == 250, "\(q)")
        let marked = delivered(t, containing: "carol@quarantine.example.org")
        #expect(marked.contains("\r\n\tdkim=none;\r\n\tdmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.example.org\r\n"), "\(marked)")
        #expect(marked.contains("X-Tern-Quarantine: DMARC fail for quarantine.example.org (p=quarantine)\r\n"), "\(marked)")
        #expect(t.stop() == 0)
    }

    @Test("dmarc quarantine-header and dmarc none: nothing refused; a tampered signature is reported as dkim=fail")
    func dmarcActions() throws {
        for action in ["quarantine-header", "none"] {
            let t = try TerndProcess(extraConfig: "dmarc \(action)", zone: Self.zone)
            defer { t.cleanUp() }
            try t.start()
            let r = try send(port: t.port, file: try message(from: "alice@example.org", sign: true, tamper: true))
            #expect(r.0 == 250, "\(action): \(r)")
            let text = delivered(t, containing: "alice@example.org")
            #expect(text.contains("\tdkim=fail reason=\"body hash did not verify\" header.d=example.org header.s=py"), "\(text)")
            #expect(text.contains("dmarc=fail (p=reject dis=reject) header.from=example.org"), "\(text)")
            #expect(text.contains("X-Tern-Quarantine: DMARC fail for example.org (p=reject)") == (action == "quarantine-header"), "\(action): \(text)")
        }
    }

    @Test("mail from the host itself is signed with the From domain's keys (RSA and Ed25519); dkimpy verifies it")
    func signing() throws {
        let dir = NSTemporaryDirectory() + "tern-sign-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (sel, algo) in [("r1", "rsa2048"), ("e1", "ed25519")] {
            let k = try run("/bin/sh", ["-c", "cd '\(dir)' && '\(ternctlPath)' dkim keygen example.test --selector \(sel) --algo \(algo) --key \(sel).pem > \(sel).txt"])
            #expect(k.status == 0, "\(k)")
        }
        let t = try TerndProcess(zone: Self.zone)
        defer { t.cleanUp() }
        var conf = try String(contentsOfFile: "\(t.dir)/tern.conf", encoding: .utf8)
        conf = conf.replacingOccurrences(of: "    aliases aliases\n", with: "    aliases aliases\n    dkim r1 \(dir)/r1.pem\n    dkim e1 \(dir)/e1.pem\n")
        try conf.write(toFile: "\(t.dir)/tern.conf", atomically: true, encoding: .utf8)
        try t.start()
        #expect(t.log.contains("dkim: signing for example.test with r1 (rsa-sha256), e1 (ed25519-sha256)"), "\(t.log)")
        let name = "\(dir)/local.eml"
        try "From: Bob <bob@example.test>\r\nTo: bob@example.test\r\nSubject: signed here\r\n\r\nLocal  mail\r\n".write(toFile: name, atomically: true, encoding: .utf8)
        let r = try send(port: t.port, file: name, mailFrom: "bob@example.test", source: "127.0.0.1")
        #expect(r.0 == 250, "\(r)")
        for _ in 0..<400 where t.mailbox("bob").isEmpty { usleep(25_000) }
        let file = try #require(t.mailbox("bob").first)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.components(separatedBy: "DKIM-Signature: v=1;").count == 3, "\(text)")
        // dkimpy checks both signatures of the delivered file (our trace fields above are not signed).
        let verify = """
            import dkim, re
            recs = {}
            for f in ["\(dir)/r1.txt", "\(dir)/e1.txt"]:
                line = open(f).read()
                recs[line.split()[0].rstrip(".")] = "".join(re.findall(r'"([^"]*)"', line)).encode()
            msg = open("\(file)", "rb").read()
            d = dkim.DKIM(msg)
            print(d.verify(idx=0, dnsfunc=lambda n, timeout=5: recs.get(n.decode().rstrip("."))), d.verify(idx=1, dnsfunc=lambda n, timeout=5: recs.get(n.decode().rstrip("."))))
            """
        let v = try run("/usr/bin/python3", ["-c", verify])
        #expect(v.out == "True True\n", "\(v)")
        // A From in another domain is not signed.
        try "From: someone@elsewhere.example\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nx\r\n".write(toFile: name, atomically: true, encoding: .utf8)
        _ = try send(port: t.port, file: name, source: "127.0.0.1")
        for _ in 0..<400 where t.mailbox("bob").count < 2 { usleep(25_000) }
        let other = t.mailbox("bob").compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.first { $0.contains("elsewhere.example") } ?? ""
        #expect(!other.isEmpty && !other.contains("DKIM-Signature"), "\(other)")
        #expect(t.stop() == 0)
    }

    @Test("configuration errors name the file and line: unreadable or weak keys, bad dmarc, missing suffix list")
    func configErrors() throws {
        let t = try TerndProcess()
        defer { t.cleanUp() }
        let weak = try run("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", "\(t.dir)/weak.pem"])
        #expect(weak.status == 0, "\(weak)")
        try "junk".write(toFile: "\(t.dir)/junk.pem", atomically: true, encoding: .utf8)
        var conf = try String(contentsOfFile: "\(t.dir)/tern.conf", encoding: .utf8)
        conf = conf.replacingOccurrences(of: "    aliases aliases\n", with: "    aliases aliases\n    dkim a missing.pem\n    dkim b weak.pem\n    dkim c junk.pem\n    dkim bad/sel junk.pem\n")
        conf += "\ndmarc sometimes\npublic-suffix-list nowhere.dat\n"
        try conf.write(toFile: "\(t.dir)/tern.conf", atomically: true, encoding: .utf8)
        let r = try run(TerndProcess.terndPath, ["--check", "--config", "\(t.dir)/tern.conf"])
        #expect(r.status == 1)
        let lines = r.out.split(separator: "\n").map(String.init)
        let f = "\(t.dir)/tern.conf"
        /// The line of the configuration that holds `text`.
        func at(_ text: String) -> Int { (conf.components(separatedBy: "\n").firstIndex { $0.contains(text) } ?? -1) + 1 }
        #expect(lines.contains { $0.hasPrefix("\(f):\(at("bad/sel")): invalid DKIM selector 'bad/sel'") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(f):\(at("dmarc sometimes")): usage: dmarc reject|quarantine-header|none") }, "\(lines)")
        // Keys and the list are checked once the file parses.
        conf = conf.replacingOccurrences(of: "    dkim bad/sel junk.pem\n", with: "").replacingOccurrences(of: "dmarc sometimes\n", with: "dmarc none\n")
        try conf.write(toFile: f, atomically: true, encoding: .utf8)
        let keys = try run(TerndProcess.terndPath, ["--check", "--config", f]).out.split(separator: "\n").map(String.init)
        #expect(keys.contains { $0.hasPrefix("\(f):\(at("missing.pem")): cannot read DKIM key \(t.dir)/missing.pem") }, "\(keys)")
        #expect(keys.contains { $0.hasPrefix("\(f):\(at("weak.pem")): DKIM key \(t.dir)/weak.pem: RSA keys under 1024 bits") }, "\(keys)")
        #expect(keys.contains { $0.hasPrefix("\(f):\(at("dkim c junk.pem")): DKIM key \(t.dir)/junk.pem: cannot read the key") }, "\(keys)")
        #expect(keys.contains { $0.hasPrefix("\(f):\(at("public-suffix-list")): cannot read the public suffix list \(t.dir)/nowhere.dat") }, "\(keys)")
        #expect(keys.count == 4, "\(keys)")
    }
}
