import DNS
import Foundation
import Glibc
import Testing

/// Two unbound instances on loopback: `main` answers from local data (and nothing else: the root
/// is a static local zone, so no query can leave the machine) and forwards `fail.test` to
/// `upstream`, which refuses everything, so `main` answers SERVFAIL for it.
final class UnboundPair {
    let dir: String
    let mainPort: Int
    let upstreamPort: Int
    var processes: [Process] = []

    static let bigTXT = (0..<8).map { i in "\"" + String(repeating: Character(UnicodeScalar(UInt8(0x61 + i))), count: 250) + "\"" }.joined(separator: " ")

    init() async throws {
        dir = NSTemporaryDirectory() + "tern-unbound-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        mainPort = freePort()
        upstreamPort = freePort()
        let common = { (port: Int) in
            """
            server:
              interface: 127.0.0.1
              port: \(port)
              do-daemonize: no
              chroot: ""
              username: ""
              directory: "\(self.dir)"
              pidfile: ""
              use-syslog: no
              logfile: ""
              do-ip6: no
              access-control: 127.0.0.0/8 allow
              do-not-query-localhost: no
              module-config: "iterator"
              edns-buffer-size: 1232
              num-threads: 1

            """
        }
        let main = common(mainPort) + """
              local-zone: "." static
              local-zone: "example.test." static
              local-data: "example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60"
              local-data: "example.test. 300 IN MX 10 mx.example.test."
              local-data: "example.test. 300 IN MX 20 mx2.example.test."
              local-data: "mx.example.test. 300 IN A 127.0.0.1"
              local-data: "mx.example.test. 300 IN AAAA ::1"
              local-data: "mx2.example.test. 1 IN A 127.0.0.2"
              local-data: "www.example.test. 300 IN CNAME mx.example.test."
              local-data: 'example.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 " "-all"'
              local-data: 'big.example.test. 300 IN TXT \(Self.bigTXT)'
              local-data: "_25._tcp.mx.example.test. 300 IN TLSA 3 1 1 abcdef0123456789"
              local-data: "example.test. 300 IN NS ns.example.test."
              local-data-ptr: "192.0.2.25 mx.example.test."
              local-zone: "fail.test." transparent
            forward-zone:
              name: "fail.test."
              forward-addr: 127.0.0.1@\(upstreamPort)
            remote-control:
              control-enable: no

            """
        // (unbound has a default static zone for "test.", so refuse fail.test explicitly)
        let upstream = common(upstreamPort) + """
              local-zone: "." refuse
              local-zone: "fail.test." refuse
            remote-control:
              control-enable: no

            """
        try main.write(toFile: dir + "/main.conf", atomically: true, encoding: .utf8)
        try upstream.write(toFile: dir + "/upstream.conf", atomically: true, encoding: .utf8)
        for conf in ["upstream", "main"] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/unbound")
            p.arguments = ["-d", "-c", dir + "/\(conf).conf"]
            p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            processes.append(p)
        }
        // Ready when it answers.
        let probe = try StubResolver(configuration: StubConfiguration(servers: [server], timeout: 0.2, attempts: 1))
        for _ in 0..<50 {
            if await probe.resolve(try DNSName("mx.example.test"), .a).status == .noError { return }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        throw CocoaError(.fileReadUnknown)
    }

    var server: DNSServer { DNSServer(host: "127.0.0.1", port: mainPort) }

    deinit {
        for p in processes {
            p.terminate()
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A free loopback port (bound and released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    a.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: a.sin_port))
}

/// A UDP socket that receives and never answers.
final class SilentServer {
    let fd: Int32
    let port: Int
    init() {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: a.sin_port))
    }
    deinit { close(fd) }
    var server: DNSServer { DNSServer(host: "127.0.0.1", port: port) }
}

@Suite("Stub resolver against unbound on loopback", .serialized)
final class UnboundTests {
    let unbound: UnboundPair
    let stub: StubResolver

    init() async throws {
        unbound = try await UnboundPair()
        stub = try StubResolver(configuration: StubConfiguration(servers: [unbound.server], timeout: 1, attempts: 2))
    }

    func ask(_ name: String, _ type: RecordType) async throws -> DNSAnswer {
        await stub.resolve(try DNSName(name), type)
    }

    @Test("every record type mail needs")
    func types() async throws {
        let mx = try await ask("example.test", .mx)
        #expect(mx.status == .noError && mx.mx.map { "\($0.preference) \($0.exchange)" } == ["10 mx.example.test.", "20 mx2.example.test."])
        #expect(try await ask("mx.example.test", .a).addresses == ["127.0.0.1"])
        #expect(try await ask("mx.example.test", .aaaa).addresses == ["::1"])
        #expect(try await ask("example.test", .txt).txt == ["v=spf1 ip4:127.0.0.1 -all"])
        #expect(try await ask("example.test", .txt).txtStrings.first?.count == 2)
        let ptr = try await ask("25.2.0.192.in-addr.arpa", .ptr)
        #expect(ptr.names.map(\.text) == ["mx.example.test"], "\(ptr)")
        #expect(try await ask("example.test", .ns).names.map(\.text) == ["ns.example.test"])
        let tlsa = try await ask("_25._tcp.mx.example.test", .tlsa)
        #expect(tlsa.records.first?.data == .tlsa(usage: 3, selector: 1, matchingType: 1, data: [0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89]))
        let www = try await ask("www.example.test", .a)
        #expect(www.status == .noError && www.canonicalName.text == "mx.example.test" && www.addresses == ["127.0.0.1"])
        #expect(!www.authenticated)  // no validator behind this unbound
        #expect(try await ask("www.example.test", .cname).names.map(\.text) == ["mx.example.test"])
    }

    @Test("NXDOMAIN and NODATA are told apart, with the SOA's negative TTL")
    func negative() async throws {
        let nx = try await ask("nope.example.test", .a)
        #expect(nx.status == .nxDomain && nx.ttl == 60)
        let nodata = try await ask("mx.example.test", .mx)
        #expect(nodata.status == .noData && nodata.ttl == 60)
    }

    @Test("SERVFAIL from the server is reported as SERVFAIL (after trying again)")
    func servfail() async throws {
        let a = try await ask("x.fail.test", .a)
        #expect(a.status == .servFail, "\(a)")
    }

    @Test("a large TXT record comes whole over TCP after a truncated UDP answer")
    func tcpFallback() async throws {
        let big = try await ask("big.example.test", .txt)
        #expect(big.status == .noError)
        #expect(big.txtStrings.first?.count == 8 && big.txt.first?.utf8.count == 2000)
        #expect(big.txt.first?.hasPrefix(String(repeating: "a", count: 250) + "b") == true)
    }

    @Test("a server that never answers: TIMEOUT alone, failover to the next one otherwise")
    func timeoutAndFailover() async throws {
        let silent = SilentServer()
        let alone = try StubResolver(configuration: StubConfiguration(servers: [silent.server], timeout: 0.2, attempts: 2))
        let start = Date()
        #expect(await alone.resolve(try DNSName("mx.example.test"), .a).status == .timeout)
        let waited = Date().timeIntervalSince(start)
        #expect(waited >= 0.39 && waited < 3, "\(waited)")
        let pair = try StubResolver(configuration: StubConfiguration(servers: [silent.server, unbound.server], timeout: 0.2, attempts: 1))
        let a = await pair.resolve(try DNSName("mx.example.test"), .a)
        #expect(a.status == .noError && a.addresses == ["127.0.0.1"])
        // A closed port (ICMP refused) fails over at once, without waiting for the timeout.
        let closed = DNSServer(host: "127.0.0.1", port: freePort())
        let fast = try StubResolver(configuration: StubConfiguration(servers: [closed, unbound.server], timeout: 5, attempts: 1))
        let t0 = Date()
        #expect(await fast.resolve(try DNSName("mx.example.test"), .a).status == .noError)
        #expect(Date().timeIntervalSince(t0) < 2)
    }

    @Test("through the cache: hits while the TTL lasts, a new lookup after it expires")
    func cache() async throws {
        let cache = CachingResolver(upstream: stub)
        let name = try DNSName("mx2.example.test")  // TTL 1
        #expect(await cache.resolve(name, .a).addresses == ["127.0.0.2"])
        #expect(await cache.resolve(name, .a).addresses == ["127.0.0.2"])
        #expect(cache.statistics.hits == 1 && cache.statistics.misses == 1)
        try await Task.sleep(nanoseconds: 1_200_000_000)
        #expect(await cache.resolve(name, .a).addresses == ["127.0.0.2"])
        #expect(cache.statistics.misses == 2)
    }

    @Test("the search list completes short names (resolv.conf rules)")
    func search() async throws {
        var c = StubConfiguration(servers: [unbound.server], timeout: 1, attempts: 1)
        c.search = [try DNSName("example.test")]
        let r = try StubResolver(configuration: c)
        #expect(await r.resolve(text: "mx", .a).addresses == ["127.0.0.1"])
        #expect(await r.resolve(text: "mx.", .a).status == .nxDomain)
        #expect(await r.resolve(text: "mx.example.test", .a).addresses == ["127.0.0.1"])
    }
}

@Suite("resolv.conf and server addresses")
struct ResolvConfTests {
    @Test("nameservers, search, domain and options are read; the rest ignored")
    func parse() throws {
        let c = StubConfiguration.parse(resolvConf: """
            # comment
            nameserver 127.0.0.53
            nameserver ::1
            nameserver not-an-address
            search corp.example example.test
            options ndots:2 timeout:3 attempts:4 rotate edns0
            sortlist 10.0.0.0
            """)
        #expect(c.servers == [DNSServer(host: "127.0.0.53"), DNSServer(host: "::1")])
        #expect(c.search == [try DNSName("corp.example"), try DNSName("example.test")])
        #expect(c.ndots == 2 && c.timeout == 3 && c.attempts == 4 && c.rotate)
        let d = StubConfiguration.parse(resolvConf: "domain x.test\n")
        let x = try DNSName("x.test")
        #expect(d.servers == [DNSServer(host: "127.0.0.1")] && d.search == [x] && d.timeout == 5 && d.attempts == 2)
    }

    @Test("server address forms", arguments: [
        ("127.0.0.1", "127.0.0.1:53"), ("127.0.0.1:5353", "127.0.0.1:5353"), ("::1", "[::1]:53"), ("[::1]:5353", "[::1]:5353"),
    ])
    func servers(_ text: String, _ shown: String) {
        #expect(DNSServer(text)?.description == shown)
    }

    @Test("bad server addresses are refused", arguments: ["", "localhost", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "1.2.3", "[::1]x"])
    func badServers(_ text: String) {
        #expect(DNSServer(text) == nil)
    }
}
