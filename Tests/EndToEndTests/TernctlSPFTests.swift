import Foundation
import Testing

@Suite("ternctl spf check")
struct TernctlSPFTests {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "ternctl-spf-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            $ORIGIN example.test.
            @    TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all exp=why.%{d}"
            why  TXT "%{i} may not send for %{d}"
            mx   TXT "v=spf1 a -all"
            mx   A   198.51.100.25
            soft TXT "v=spf1 ~all"
            bad  TXT "v=spf1 ip4:300.0.0.1 -all"
            down SERVFAIL
            """.write(toFile: "\(dir)/spf.zone", atomically: true, encoding: .utf8)
        try "listen smtp 127.0.0.1:2525\nresolver zone spf.zone\n".write(toFile: "\(dir)/tern.conf", atomically: true, encoding: .utf8)
    }

    @Test("prints the result word, then the explanation or what decided", arguments: [
        (["--ip", "192.0.2.9", "--helo", "h.example", "--from", "a@example.test"], "pass\nexample.test: matched ip4:192.0.2.0/24\n"),
        (["--ip", "2001:db8::7", "--helo", "h.example", "--from", "a@example.test"], "pass\nexample.test: matched ip6:2001:db8::/32\n"),
        (["--ip", "198.51.100.1", "--helo", "h.example", "--from", "a@example.test"], "fail\n198.51.100.1 may not send for example.test\n"),
        (["--ip", "198.51.100.25", "--helo", "mx.example.test", "--from", ""], "pass\nmx.example.test: matched a\n"),
        (["--ip", "198.51.100.1", "--helo", "h.example", "--from", "<a@soft.example.test>"], "softfail\nsoft.example.test: matched ~all\n"),
        (["--ip", "198.51.100.1", "--helo", "h.example", "--from", "a@nothing.example.test"], "none\nno SPF record at nothing.example.test\n"),
        (["--ip", "198.51.100.1", "--helo", "h.example", "--from", "a@down.example.test"], "temperror\nDNS failure looking up the SPF record of down.example.test\n"),
    ])
    func check(_ args: [String], _ expected: String) throws {
        let r = try run(ternctlPath, ["spf", "check"] + args + ["--config", "\(dir)/tern.conf"])
        #expect(r.status == 0 && r.out == expected, "\(r)")
    }

    @Test("a broken record is permerror; --resolver overrides the configuration; bad input exits 1")
    func errors() throws {
        let bad = try run(ternctlPath, ["spf", "check", "--ip", "192.0.2.1", "--helo", "h", "--from", "a@bad.example.test", "--resolver", "zone", "\(dir)/spf.zone"])
        #expect(bad.out.hasPrefix("permerror\n"), "\(bad)")
        let ip = try run(ternctlPath, ["spf", "check", "--ip", "192.0.2.300", "--helo", "h", "--from", "a@example.test", "--config", "\(dir)/tern.conf"])
        #expect(ip.status == 1 && ip.err.contains("invalid IP address '192.0.2.300'"))
    }
}
