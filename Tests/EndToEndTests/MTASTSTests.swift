import Foundation
import Glibc
import TernTestSupport
import Testing

/// An HTTPS server (Python) serving MTA-STS policies by Host, with a certificate from the test CA.
final class PolicyServer {
    let root: String
    let port = freePort()
    var process: Process?

    init(root: String, certificate: String, key: String) throws {
        self.root = root
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["\(peersDirectory)/mta_sts_server.py", root, String(port), certificate, key]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        process = p
        _ = pipe.fileHandleForReading.readData(ofLength: 6)  // "ready\n"
    }

    /// Serves `policy` for mta-sts.DOMAIN (content type `type`).
    func serve(_ domain: String, _ policy: String, type: String? = nil) throws {
        try policy.write(toFile: "\(root)/mta-sts.\(domain)", atomically: true, encoding: .utf8)
        if let type { try type.write(toFile: "\(root)/mta-sts.\(domain).type", atomically: true, encoding: .utf8) }
    }

    var hits: [String] { ((try? String(contentsOfFile: "\(root)/hits", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }

    func stop() {
        // SIGKILL: the test process may hand its children a blocked SIGTERM.
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL) }
        process?.waitUntilExit()
        process = nil
    }
}

@Suite("MTA-STS on outbound delivery (RFC 8461)", .serialized)
struct MTASTSDeliveryTests {
    static let domains = ["remote.example", "other.example", "third.example", "testing.example", "badtype.example"]

    static let zone = """
        $ORIGIN remote.example.
        @        MX 10 mx.remote.example.
        mx       A 127.0.0.1
        _mta-sts TXT "v=STSv1; id=1"
        mta-sts  A 127.0.0.1
        $ORIGIN other.example.
        @        MX 10 mx.remote.example.
        _mta-sts TXT "v=STSv1; id=1"
        mta-sts  A 127.0.0.1
        $ORIGIN third.example.
        @        MX 10 mx2.third.example.
        mx2      A 127.0.0.1
        _mta-sts TXT "v=STSv1; id=1"
        mta-sts  A 127.0.0.1
        $ORIGIN testing.example.
        @        MX 10 mx2.third.example.
        _mta-sts TXT "v=STSv1; id=7"
        mta-sts  A 127.0.0.1
        $ORIGIN badtype.example.
        @        MX 10 mx.remote.example.
        _mta-sts TXT "v=STSv1; id=1"
        mta-sts  A 127.0.0.1
        """

    static func policy(_ mode: String, _ mx: String) -> String { "version: STSv1\r\nmode: \(mode)\r\nmx: \(mx)\r\nmax_age: 86400\r\n" }

    @Test("enforce: a matching MX with a valid certificate gets the mail; otherwise held; testing only reports; a bad policy is no policy; the cache survives a restart")
    func policies() throws {
        let dir = NSTemporaryDirectory() + "tern-sts-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try TestCertificates.make(in: dir, [("mx", ["mx.remote.example"]), ("web", Self.domains.map { "mta-sts.\($0)" })])
        let web = try PolicyServer(root: "\(dir)/www", certificate: "\(dir)/web.pem", key: "\(dir)/web.key")
        defer { web.stop() }
        try web.serve("remote.example", Self.policy("enforce", "mx.remote.example"))
        try web.serve("other.example", Self.policy("enforce", "*.elsewhere.example"))
        try web.serve("third.example", Self.policy("enforce", "mx2.third.example"))
        try web.serve("testing.example", Self.policy("testing", "mx2.third.example"))
        try web.serve("badtype.example", Self.policy("enforce", "nothing.example"), type: "text/html")
        // The receiver's certificate is valid for mx.remote.example only.
        let sink = try SinkProcess(["--report-every", "0.1", "--tls-cert", "\(dir)/mx.pem", "--tls-key", "\(dir)/mx.key"])
        defer { _ = sink.stop() }
        let t = try TerndProcess(
            aliases: Self.domains.enumerated().map { "s\($0.offset): a@\($0.element)" }.joined(separator: "\n") + "\n",
            extraConfig: "outbound port \(sink.port)\noutbound ca-file \(dir)/ca.pem\noutbound mta-sts-port \(web.port)\nlimits {\nretry-interval 1s\nretry-max-interval 1s\n}",
            zone: Self.zone)
        defer { t.cleanUp() }
        try t.start()
        var ids: [String] = []
        for k in Self.domains.indices { ids.append(try submit(t, to: ["s\(k)@example.test"], subject: Self.domains[k])) }
        func delivered(_ k: Int) -> Bool { !lines(t, "\(ids[k]): to=<s\(k)@example.test> delivered=").isEmpty }
        func deferred(_ k: Int) -> [String] { lines(t, "\(ids[k]): to=<s\(k)@example.test> deferred") }

        // remote.example: enforce, the MX matches, its certificate verifies.
        #expect(waitFor(20) { delivered(0) }, "\(t.log)")
        #expect(t.log.contains("mta-sts: remote.example: policy 1 fetched: mode enforce, mx mx.remote.example, max_age 86400"), "\(t.log)")
        // other.example: no MX host matches: held.
        #expect(waitFor(20) { deferred(1).count >= 2 }, "\(t.log)")
        #expect(deferred(1).first?.contains("no MX host of other.example matches its MTA-STS policy (mx: *.elsewhere.example)") == true, "\(deferred(1))")
        // third.example: the MX matches, but its certificate is not for mx2.third.example: held.
        #expect(waitFor(20) { deferred(2).count >= 2 }, "\(t.log)")
        #expect(deferred(2).first?.contains("the MTA-STS policy of third.example requires TLS with a valid certificate; mx2.third.example[127.0.0.1] offers tls-unverified") == true, "\(deferred(2))")
        // testing.example: the same failure is only reported.
        #expect(waitFor(20) { delivered(3) }, "\(t.log)")
        #expect(t.log.contains("mta-sts (testing, delivering anyway): the MTA-STS policy of testing.example requires TLS with a valid certificate"), "\(t.log)")
        // badtype.example: a policy served as text/html is no policy.
        #expect(waitFor(20) { delivered(4) }, "\(t.log)")
        #expect(t.log.contains("mta-sts: badtype.example: policy 1 could not be fetched (mta-sts.badtype.example served 'text/html', not text/plain)"), "\(t.log)")
        #expect(!delivered(1) && !delivered(2))
        #expect(FileManager.default.fileExists(atPath: "\(t.dir)/spool/mta-sts/remote.example"))

        // The cache holds across a restart, with the policy server gone: nothing is fetched again,
        // and enforce still applies.
        _ = t.stop()
        web.stop()
        let fetches = web.hits.count
        try t.start()
        let again = try submit(t, to: ["s1@example.test"], subject: "again")
        #expect(waitFor(20) { lines(t, "\(again): to=<s1@example.test> deferred").count >= 1 }, "\(t.log)")
        #expect(lines(t, "\(again): to=<s1@example.test> deferred").first?.contains("matches its MTA-STS policy") == true, "\(t.log)")
        let remote = try submit(t, to: ["s0@example.test"], subject: "again")
        #expect(waitFor(20) { !lines(t, "\(remote): to=<s0@example.test> delivered=").isEmpty }, "\(t.log)")
        #expect(web.hits.count == fetches)
    }
}
