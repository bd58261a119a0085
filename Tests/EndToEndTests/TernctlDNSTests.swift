import DNS
import Foundation
import TernTestSupport
import Testing

@Suite("ternctl dns", .serialized)
final class TernctlDNSTests {
    let unbound: UnboundPair
    let dir: String

    init() async throws {
        unbound = try await UnboundPair()
        dir = NSTemporaryDirectory() + "ternctl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    var server: String { "127.0.0.1:\(unbound.mainPort)" }

    @Test("prints records as dig +short does, then the status", arguments: [
        (["MX", "example.test"], "10 mx.example.test.\n20 mx2.example.test.\n;; status: NOERROR\n"),
        (["a", "mx.example.test"], "127.0.0.1\n;; status: NOERROR\n"),
        (["AAAA", "mx.example.test."], "::1\n;; status: NOERROR\n"),
        (["TXT", "example.test"], "\"v=spf1 ip4:127.0.0.1 \" \"-all\"\n;; status: NOERROR\n"),
        (["A", "www.example.test"], "mx.example.test.\n127.0.0.1\n;; status: NOERROR\n"),
        (["PTR", "25.2.0.192.in-addr.arpa"], "mx.example.test.\n;; status: NOERROR\n"),
        (["TLSA", "_25._tcp.mx.example.test"], "3 1 1 ABCDEF0123456789\n;; status: NOERROR\n"),
        (["MX", "mx.example.test"], ";; status: NODATA\n"),
        (["A", "nope.example.test"], ";; status: NXDOMAIN\n"),
    ])
    func records(_ args: [String], _ expected: String) throws {
        let r = try run(ternctlPath, ["dns"] + args + ["--resolver", server])
        #expect(r.status == 0, "\(r)")
        #expect(r.out == expected)
    }

    @Test("SERVFAIL and TIMEOUT exit 2; the second server is asked when the first does not answer")
    func failures() throws {
        let servfail = try run(ternctlPath, ["dns", "A", "x.fail.test", "--resolver", server])
        #expect(servfail.status == 2 && servfail.out == ";; status: SERVFAIL\n", "\(servfail)")
        let silent = SilentServer()
        // Options come from the config's resolv.conf defaults: 5 s a server; keep this bounded by
        // using a server that is silent only for the failover case.
        let failover = try run(ternctlPath, ["dns", "MX", "example.test", "--resolver", "127.0.0.1:\(silent.port)", server], timeout: 60)
        #expect(failover.status == 0 && failover.out.hasPrefix("10 mx.example.test.\n"), "\(failover)")
        let refused = try run(ternctlPath, ["dns", "A", "mx.example.test", "--resolver", "127.0.0.1:\(freePort())"])
        #expect(refused.status == 2 && refused.out == ";; status: TIMEOUT\n", "\(refused)")
    }

    @Test("without --resolver, the configured one: servers from --config, or a zone file")
    func configured() throws {
        try "listen smtp 127.0.0.1:2525\nresolver \(server)\n".write(toFile: "\(dir)/a.conf", atomically: true, encoding: .utf8)
        let a = try run(ternctlPath, ["dns", "A", "mx.example.test", "--config", "\(dir)/a.conf"])
        #expect(a.out == "127.0.0.1\n;; status: NOERROR\n", "\(a)")
        try "$ORIGIN zone.test.\n@ MX 5 in.zone.test.\nin A 192.0.2.7\n".write(toFile: "\(dir)/local.zone", atomically: true, encoding: .utf8)
        try "listen smtp 127.0.0.1:2525\nresolver zone local.zone\n".write(toFile: "\(dir)/b.conf", atomically: true, encoding: .utf8)
        let b = try run(ternctlPath, ["dns", "MX", "zone.test", "--config", "\(dir)/b.conf"])
        #expect(b.out == "5 in.zone.test.\n;; status: NOERROR\n", "\(b)")
        let z = try run(ternctlPath, ["dns", "A", "in.zone.test", "--resolver", "zone", "\(dir)/local.zone"])
        #expect(z.out == "192.0.2.7\n;; status: NOERROR\n", "\(z)")
    }

    @Test("bad input: clear errors, exit 1; a broken zone file names its line (also in ternd --check)")
    func errors() throws {
        let type = try run(ternctlPath, ["dns", "BOGUS", "example.test", "--resolver", server])
        #expect(type.status == 1 && type.err.contains("unknown record type 'BOGUS'"))
        let addr = try run(ternctlPath, ["dns", "A", "example.test", "--resolver", "dns.example.com"])
        #expect(addr.status == 1 && addr.err.contains("invalid DNS server address 'dns.example.com'"))
        try "@ A 1.2.3.4\n".write(toFile: "\(dir)/bad.zone", atomically: true, encoding: .utf8)
        let zone = try run(ternctlPath, ["dns", "A", "x.test", "--resolver", "zone", "\(dir)/bad.zone"])
        #expect(zone.status == 1 && zone.err.contains("\(dir)/bad.zone:1: '@' needs a $ORIGIN line before it"), "\(zone)")
        try "listen smtp 127.0.0.1:2525\nresolver zone bad.zone\n".write(toFile: "\(dir)/c.conf", atomically: true, encoding: .utf8)
        let check = try run(builtBinary("ternd"), ["--check", "--config", "\(dir)/c.conf"])
        #expect(check.status == 1 && check.out.contains("\(dir)/bad.zone:1: '@' needs a $ORIGIN line before it"), "\(check)")
        let missing = try run(ternctlPath, ["dns", "A", "x.test", "--config", "\(dir)/none.conf"])
        #expect(missing.status == 1 && missing.err.contains("none.conf:0: cannot read"), "\(missing)")
    }
}
