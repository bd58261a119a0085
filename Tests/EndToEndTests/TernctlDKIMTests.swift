import Foundation
import Testing

/// dkimpy (Debian's python3-dkim) on the other side: what ternctl signs verifies there, what it
/// signs verifies here. Keys never go through a real DNS: dkimpy is given a lookup function that
/// reads the records ternctl printed, ternctl reads a zone file.
@Suite("ternctl dkim, with dkimpy")
struct TernctlDKIMTests {
    let dir: String
    static let python = "/usr/bin/python3"

    init() throws {
        dir = NSTemporaryDirectory() + "ternctl-dkim-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            From: Alice <alice@example.test>
            To: Bob <bob@example.org>
            Subject: Interop  test
            Date: Sun, 22 Nov 2026 10:00:00 +0000
            Message-ID: <interop@example.test>

            Hello Bob,\t
              two spaces, a tab and trailing blanks.  

            """.write(toFile: "\(dir)/msg.eml", atomically: true, encoding: .utf8)
        // dkimpy's verify with a DNS function reading `NAME. IN TXT "..." "..."` lines.
        try """
            import re, sys, dkim
            records = {}
            for path in sys.argv[2:]:
                for line in open(path):
                    if " TXT " in line:
                        records[line.split()[0].rstrip(".")] = "".join(re.findall(r'"([^"]*)"', line)).encode()
            def dnsfunc(name, timeout=5):
                return records.get(name.decode().rstrip("."))
            message = open(sys.argv[1], "rb").read()
            d = dkim.DKIM(message)
            count = sum(1 for line in message.split(b"\\n") if line.lower().startswith(b"dkim-signature:"))
            def check(i):
                try:
                    return d.verify(idx=i, dnsfunc=dnsfunc)
                except dkim.ValidationError:
                    return False
            print(" ".join(str(check(i)) for i in range(count)))
            """.write(toFile: "\(dir)/verify.py", atomically: true, encoding: .utf8)
    }

    func sh(_ script: String) throws -> (status: Int32, out: String, err: String) {
        try run("/bin/sh", ["-c", "cd '\(dir)' && \(script)"])
    }

    @Test("keygen writes a 0600 PKCS#8 key and prints the record; what sign makes, dkimpy verifies")
    func weSignDkimpyVerifies() throws {
        let t = ternctlPath
        let rsa = try sh("'\(t)' dkim keygen Example.Test --selector r2026 --key rsa.pem > rsa.txt")
        #expect(rsa.status == 0, "\(rsa)")
        #expect(rsa.err.contains("dkim r2026 rsa.pem"))
        let ed = try sh("'\(t)' dkim keygen example.test --selector e2026 --algo ed25519 --key ed.pem > ed.txt")
        #expect(ed.status == 0, "\(ed)")
        let record = try String(contentsOfFile: "\(dir)/ed.txt", encoding: .utf8)
        #expect(record.hasPrefix("e2026._domainkey.example.test. IN TXT \"v=DKIM1; k=ed25519; p="), "\(record)")
        let rsaRecord = try String(contentsOfFile: "\(dir)/rsa.txt", encoding: .utf8)
        #expect(rsaRecord.hasPrefix("r2026._domainkey.example.test. IN TXT \"v=DKIM1; k=rsa; p=MIIBIjAN"), "\(rsaRecord)")
        #expect(rsaRecord.components(separatedBy: "\" \"").count == 2, "a 2048-bit key takes two strings")
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/ed.pem")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try String(contentsOfFile: "\(dir)/ed.pem", encoding: .utf8).hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let again = try sh("'\(t)' dkim keygen example.test --selector e2026 --key ed.pem")
        #expect(again.status == 1 && again.err.contains("ed.pem: exists already"), "\(again)")
        let badAlgo = try sh("'\(t)' dkim keygen example.test --algo dsa")
        #expect(badAlgo.status == 1 && badAlgo.err.contains("unknown --algo 'dsa'"))

        for (selector, key) in [("r2026", "rsa.pem"), ("e2026", "ed.pem")] {
            let signed = try sh("'\(t)' dkim sign --domain example.test --selector \(selector) --key \(key) --time 1795000000 < msg.eml > \(key).eml")
            #expect(signed.status == 0, "\(signed)")
            let dkimpy = try sh("\(Self.python) verify.py \(key).eml rsa.txt ed.txt")
            #expect(dkimpy.out == "True\n", "\(key): \(dkimpy)")
            // The line ends stay as they were in the file (LF here).
            #expect(!(try String(contentsOfFile: "\(dir)/\(key).eml", encoding: .utf8)).contains("\r\n"))
        }
        // Both at once, one selector each (a selector has one key record).
        let both = try sh("'\(t)' dkim sign --domain example.test --selector r2026 --key rsa.pem --selector e2026 --key ed.pem < msg.eml > both.eml")
        #expect(both.status == 0, "\(both)")
        #expect(try sh("\(Self.python) verify.py both.eml rsa.txt ed.txt").out == "True True\n")
        // dkimpy also sees a tampered body fail.
        #expect(try sh("sed 's/Hello Bob/Hello Eve/' both.eml > tampered.eml && \(Self.python) verify.py tampered.eml rsa.txt ed.txt").out == "False False\n")
        let missing = try sh("'\(t)' dkim sign --domain example.test --selector x --key nope.pem < msg.eml")
        #expect(missing.status == 1 && missing.err.contains("nope.pem: cannot read"), "\(missing)")
    }

    @Test("--config: keygen writes the key file the configuration names; sign without --key uses the configured keys")
    func throughTheConfiguration() throws {
        let t = ternctlPath
        try "listen smtp 127.0.0.1:2525\ndomain example.test {\n dkim c2026 keys/c.pem\n}\n".write(toFile: "\(dir)/tern.conf", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(dir)/keys", withIntermediateDirectories: true)
        let gen = try sh("'\(t)' dkim keygen example.test --selector c2026 --algo ed25519 --config tern.conf > c.txt")
        #expect(gen.status == 0 && gen.err.contains("wrote ./keys/c.pem"), "\(gen)")
        let signed = try sh("'\(t)' dkim sign --domain example.test --config tern.conf < msg.eml > c.eml")
        #expect(signed.status == 0, "\(signed)")
        #expect(try sh("\(Self.python) verify.py c.eml c.txt").out == "True\n")
        let none = try sh("'\(t)' dkim sign --domain other.test --config tern.conf < msg.eml")
        #expect(none.status == 1 && none.err.contains("has no dkim key for other.test"), "\(none)")
    }

    @Test("what dkimpy signs verifies here: both algorithms, all four canonicalisations; tampering fails")
    func dkimpySignsWeVerify() throws {
        let made = try sh("/usr/bin/dknewkey --ktype rsa pyrsa > /dev/null && /usr/bin/dknewkey --ktype ed25519 pyed > /dev/null")
        #expect(made.status == 0, "\(made)")
        func record(_ file: String) throws -> String {
            let text = try String(contentsOfFile: "\(dir)/\(file)", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            return stride(from: 0, to: text.count, by: 200).map { "\"" + String(Array(text)[$0..<min($0 + 200, text.count)]) + "\"" }.joined(separator: " ")
        }
        try "$ORIGIN example.org.\npyrsa._domainkey TXT \(try record("pyrsa.dns"))\npyed._domainkey TXT \(try record("pyed.dns"))\n"
            .write(toFile: "\(dir)/py.zone", atomically: true, encoding: .utf8)
        try "listen smtp 127.0.0.1:2525\nresolver zone py.zone\n".write(toFile: "\(dir)/tern.conf", atomically: true, encoding: .utf8)
        for (selector, algo) in [("pyrsa", "rsa-sha256"), ("pyed", "ed25519-sha256")] {
            for h in ["simple", "relaxed"] {
                for b in ["simple", "relaxed"] {
                    let file = "py-\(selector)-\(h)-\(b).eml"
                    let s = try sh("/usr/bin/dkimsign --hcanon \(h) --bcanon \(b) --signalg \(algo) \(selector) example.org \(selector).key < msg.eml > \(file)")
                    #expect(s.status == 0, "\(s)")
                    let v = try sh("'\(ternctlPath)' dkim verify --resolver zone py.zone < \(file)")
                    #expect(v.status == 0 && v.out == "pass d=example.org s=\(selector) a=\(algo)\n", "\(file): \(v)")
                    // The configured resolver (through --config) gives the same.
                    let viaConfig = try sh("'\(ternctlPath)' dkim verify --config tern.conf < \(file)")
                    #expect(viaConfig.out == v.out)
                    let tampered = try sh("sed 's/^Subject: Interop  test/Subject: Interop test!/' \(file) | '\(ternctlPath)' dkim verify --resolver zone py.zone")
                    #expect(tampered.out == "fail d=example.org s=\(selector) a=\(algo) (signature did not verify)\n", "\(file): \(tampered)")
                }
            }
        }
        // dkimpy's own key files sign here too (PKCS#1 RSA PEM, a bare base64 Ed25519 seed).
        for (selector, algo) in [("pyrsa", "rsa-sha256"), ("pyed", "ed25519-sha256")] {
            let v = try sh("'\(ternctlPath)' dkim sign --domain example.org --selector \(selector) --key \(selector).key < msg.eml | '\(ternctlPath)' dkim verify --resolver zone py.zone")
            #expect(v.out == "pass d=example.org s=\(selector) a=\(algo)\n", "\(v)")
        }
        let unsigned = try sh("'\(ternctlPath)' dkim verify --resolver zone py.zone < msg.eml")
        #expect(unsigned.out == "none\n")
    }

    @Test("the RFC 8463 Appendix A example verifies through ternctl (both signatures)")
    func rfc8463() throws {
        let data = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("MailAuthTests/Data").path
        let v = try sh("'\(ternctlPath)' dkim verify --resolver zone '\(data)/rfc8463.zone' < '\(data)/rfc8463-a3.eml'")
        #expect(v.out == "pass d=football.example.com s=brisbane a=ed25519-sha256\npass d=football.example.com s=test a=rsa-sha256\n", "\(v)")
        // Its RSA key is 1024 bits: accepted (RFC 8301 refuses shorter ones).
        let dkimpy = try sh("\(Self.python) -c \"import dkim; print(dkim.verify(open('\(data)/rfc8463-a3.eml','rb').read(), dnsfunc=lambda n, timeout=5: {b'brisbane._domainkey.football.example.com.': b'v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo='}.get(n)))\"")
        #expect(dkimpy.out == "True\n", "dkimpy agrees on the first signature: \(dkimpy)")
    }
    @Test("dmarc check: SPF, DKIM and the policy together, as ternd judges them")
    func dmarcCheck() throws {
        let made = try sh("/usr/bin/dknewkey --ktype rsa py > /dev/null && /usr/bin/dkimsign --hcanon relaxed --bcanon relaxed py example.org py.key < msg.eml > signed.eml")
        #expect(made.status == 0, "\(made)")
        let p = try String(contentsOfFile: "\(dir)/py.dns", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let strings = stride(from: 0, to: p.count, by: 200).map { "\"" + String(Array(p)[$0..<min($0 + 200, p.count)]) + "\"" }.joined(separator: " ")
        try """
            $ORIGIN example.org.
            py._domainkey TXT \(strings)
            _dmarc        TXT "v=DMARC1; p=reject; aspf=s"
            @             TXT "v=spf1 ip4:192.0.2.0/24 -all"
            mail          TXT "v=spf1 ip4:192.0.2.0/24 -all"
            $ORIGIN example.test.
            _dmarc        TXT "v=DMARC1; p=quarantine"
            """.write(toFile: "\(dir)/d.zone", atomically: true, encoding: .utf8)
        // Signed by example.org, From example.org: aligned DKIM; SPF passes for a subdomain, not aligned under aspf=s.
        let resigned = try sh("sed 's/alice@example.test/alice@example.org/' msg.eml | /usr/bin/dkimsign --hcanon relaxed --bcanon relaxed py example.org py.key > org.eml")
        #expect(resigned.status == 0)
        let pass = try sh("'\(ternctlPath)' dmarc check --ip 192.0.2.7 --helo h.example.org --from b@mail.example.org --resolver zone d.zone < org.eml")
        #expect(pass.status == 0)
        #expect(pass.out.hasPrefix("pass\nfrom=example.org policy=reject disposition=none (aligned DKIM pass)\nspf=pass domain=mail.example.org (not aligned)\ndkim=pass d=example.org s=py a=rsa-sha256 (aligned)\n"), "\(pass)")
        // From example.test (p=quarantine), signed by example.org: nothing aligned.
        let fail = try sh("'\(ternctlPath)' dmarc check --ip 192.0.2.7 --helo h.example.org --from b@example.org --resolver zone d.zone < signed.eml")
        #expect(fail.out.hasPrefix("fail\nfrom=example.test policy=quarantine disposition=quarantine"), "\(fail)")
        #expect(fail.out.contains("dkim=pass d=example.org s=py a=rsa-sha256 (not aligned)\n"), "\(fail)")
        let none = try sh("printf 'From: a@nothing.example\\n\\nx\\n' | '\(ternctlPath)' dmarc check --ip 192.0.2.7 --helo h --from '' --resolver zone d.zone")
        #expect(none.out == ("none\nfrom=nothing.example no DMARC record for nothing.example\nspf=none domain=h\ndkim=none\n"), "\(none)")
        let bad = try sh("'\(ternctlPath)' dmarc check --ip nope --helo h --from '' < msg.eml")
        #expect(bad.status == 1 && bad.err.contains("invalid IP address 'nope'"))
        let list = try sh("'\(ternctlPath)' dmarc check --ip 192.0.2.7 --helo h --from '' --public-suffix-list /nonexistent --resolver zone d.zone < msg.eml")
        #expect(list.status == 1 && list.err.contains("/nonexistent: cannot read the public suffix list"), "\(list)")
    }
}
