import DNS
import Reactor
import Foundation
import Glibc
import TernTestSupport
import Testing

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
        // The timings are taken on the resolver's own loop, so a busy cooperative pool (other
        // suites run in parallel) cannot stretch them.
        let group = try EventLoopGroup(count: 1)
        group.start()
        defer { group.shutdown() }
        let loop = group.loops[0]
        let alone = try StubResolver(configuration: StubConfiguration(servers: [silent.server], timeout: 0.2, attempts: 2), group: group)
        let (status, waited) = await Task(executorPreference: loop) {
            let start = monotonicNanoseconds()
            let status = await alone.resolve(try! DNSName("mx.example.test"), .a).status
            return (status, Double(monotonicNanoseconds() - start) / 1e9)
        }.value
        #expect(status == .timeout)
        #expect(waited >= 0.39 && waited < 1.5, "two attempts of 0.2 s took \(waited) s")
        let pair = try StubResolver(configuration: StubConfiguration(servers: [silent.server, unbound.server], timeout: 0.2, attempts: 1), group: group)
        let a = await pair.resolve(try DNSName("mx.example.test"), .a)
        #expect(a.status == .noError && a.addresses == ["127.0.0.1"])
        // A closed port (ICMP refused) fails over at once, without waiting for the 5 s timeout.
        let closed = DNSServer(host: "127.0.0.1", port: freePort())
        let fast = try StubResolver(configuration: StubConfiguration(servers: [closed, unbound.server], timeout: 5, attempts: 1), group: group)
        let (fastStatus, fastTime) = await Task(executorPreference: loop) {
            let start = monotonicNanoseconds()
            let status = await fast.resolve(try! DNSName("mx.example.test"), .a).status
            return (status, Double(monotonicNanoseconds() - start) / 1e9)
        }.value
        #expect(fastStatus == .noError)
        #expect(fastTime < 2, "\(fastTime) s")
    }

    @Test("a malformed answer is FORMERR; a server answering FORMERR or REFUSED is skipped for the next one")
    func malformed() async throws {
        // Flags of a response, one question, then nothing: the question is missing.
        let garbage = ScriptedServer(reply: [0x81, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0])
        defer { garbage.stop() }
        let r = try StubResolver(configuration: StubConfiguration(servers: [garbage.server], timeout: 0.2, attempts: 1))
        #expect(await r.resolve(try DNSName("mx.example.test"), .a).status == .formErr)
        // A response with rcode REFUSED and no question does not match either; with the question it
        // would. Either way the next server answers.
        let refusing = ScriptedServer(reply: [0x81, 0x85, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])
        defer { refusing.stop() }
        let pair = try StubResolver(configuration: StubConfiguration(servers: [garbage.server, refusing.server, unbound.server], timeout: 0.2, attempts: 1))
        let a = await pair.resolve(try DNSName("mx.example.test"), .a)
        #expect(a.status == .noError && a.addresses == ["127.0.0.1"])
    }

    @Test("through the cache: hits while the TTL lasts, a new lookup after it expires")
    func cache() async throws {
        let cache = CachingResolver(upstream: stub)
        let name = try DNSName("mx2.example.test")  // TTL 1
        // Back to back on a reactor loop (not the cooperative pool, which other suites keep busy),
        // so the second lookup comes well within the second.
        let group = try EventLoopGroup(count: 1)
        group.start()
        defer { group.shutdown() }
        let (first, second) = await Task(executorPreference: group.loops[0]) {
            (await cache.resolve(name, .a), await cache.resolve(name, .a))
        }.value
        #expect(first.addresses == ["127.0.0.2"] && second.addresses == ["127.0.0.2"])
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
