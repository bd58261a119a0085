import DNS
import Synchronization
import Testing

let zoneText = """
    ; a test zone
    $TTL 300
    $ORIGIN example.test.
    @            SOA   ns hostmaster 1 3600 600 86400 60
    @            MX    10 mx
                 MX    20 mx2.example.test.
    mx      120  A     127.0.0.1
                 AAAA  ::1
    mx2          IN A  127.0.0.2
    @            TXT   "v=spf1 ip4:127.0.0.1 " "-all"   # two strings
    www     60   CNAME mx
    loop1        CNAME loop2
    loop2        CNAME loop1
    a.b.deep     A     10.0.0.1
    _25._tcp.mx  TLSA  3 1 1 ABCDEF0123
    1.0.0.127.in-addr.arpa. PTR mx
    broken       SERVFAIL
    slow         TIMEOUT
    """

@Suite("Zone resolver")
struct ZoneResolverTests {
    let zone = try! ZoneResolver.parse(zoneText, file: "test.zone")

    func ask(_ name: String, _ type: RecordType) -> DNSAnswer { zone.answer(try! DNSName(name), type) }

    @Test("records, relative names, the repeated owner, TTLs")
    func records() {
        let mx = ask("example.test", .mx)
        #expect(mx.status == .noError && mx.ttl == 300)
        #expect(mx.mx.map { "\($0.preference) \($0.exchange)" } == ["10 mx.example.test.", "20 mx2.example.test."])
        #expect(ask("mx.example.test", .a).addresses == ["127.0.0.1"] && ask("mx.example.test", .a).ttl == 120)
        #expect(ask("mx.example.test", .aaaa).addresses == ["::1"])
        #expect(ask("example.test", .txt).txt == ["v=spf1 ip4:127.0.0.1 -all"])
        #expect(ask("1.0.0.127.in-addr.arpa", .ptr).names.map(\.text) == ["mx.example.test"])
        let tlsa = ask("_25._tcp.mx.example.test", .tlsa)
        #expect(tlsa.records.first?.data == .tlsa(usage: 3, selector: 1, matchingType: 1, data: [0xAB, 0xCD, 0xEF, 0x01, 0x23]))
    }

    @Test("CNAMEs are chased (TTL the smallest on the way); loops fail")
    func cname() {
        let a = ask("WWW.example.test", .a)
        #expect(a.status == .noError && a.canonicalName.text == "mx.example.test" && a.ttl == 60)
        #expect(ask("www.example.test", .cname).records.count == 1)
        #expect(ask("loop1.example.test", .a).status == .servFail)
    }

    @Test("NXDOMAIN, NODATA (also for an empty non-terminal), negative TTL from the SOA; pseudo failures")
    func negative() {
        #expect(ask("nothing.example.test", .a).status == .nxDomain)
        #expect(ask("nothing.example.test", .a).ttl == 60)
        #expect(ask("mx.example.test", .mx).status == .noData)
        #expect(ask("b.deep.example.test", .a).status == .noData)
        #expect(ask("other.test", .a).status == .nxDomain && ask("other.test", .a).ttl == 300)
        #expect(ask("broken.example.test", .mx).status == .servFail)
        #expect(ask("slow.example.test", .a).status == .timeout)
    }

    @Test("errors name the file and the line", arguments: [
        ("$ORIGIN x.test.\n@ MX 10", "z:2: MX takes 2 fields, got 1"),
        ("@ MX 10 mx", "z:1: '@' needs a $ORIGIN line before it"),
        ("a A 300.1.1.1", "z:1: invalid IPv4 address '300.1.1.1'"),
        ("a AAAA 1::2::3", "z:1: invalid IPv6 address '1::2::3'"),
        ("\n a A 127.0.0.1", "z:2: a record without an owner name (and none before it)"),
        ("a BOGUS x", "z:1: unknown record type 'BOGUS'"),
        ("a TXT \"open", "z:1: unterminated quoted string"),
        ("$TTL soon", "z:1: usage: $TTL SECONDS"),
        ("a..b A 1.2.3.4", "z:1: invalid name 'a..b'"),
        ("a TLSA 3 1 1 XYZ", "z:1: TLSA needs USAGE SELECTOR MATCHING-TYPE HEX"),
        ("ok A 1.2.3.4\nb", "z:2: missing record type"),
    ])
    func errors(_ text: String, _ message: String) {
        #expect(throws: ZoneError.self) { try ZoneResolver.parse(text, file: "z") }
        do {
            _ = try ZoneResolver.parse(text, file: "z")
        } catch {
            #expect(error.description == message)
        }
    }
}

/// An upstream that counts its lookups and can be held until released.
final class CountingResolver: Resolver {
    let zone: ZoneResolver
    let calls = Atomic<Int>(0)
    let delayNS: UInt64
    init(_ zone: ZoneResolver, delayNS: UInt64 = 0) {
        self.zone = zone
        self.delayNS = delayNS
    }
    func resolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer {
        calls.add(1, ordering: .relaxed)
        if delayNS > 0 { try? await Task.sleep(nanoseconds: delayNS) }
        return zone.answer(name, type)
    }
}

final class FakeClock: Sendable {
    let ns = Atomic<UInt64>(1_000_000_000)
    func advance(seconds: UInt64) { ns.add(seconds * 1_000_000_000, ordering: .relaxed) }
    var function: @Sendable () -> UInt64 { { self.ns.load(ordering: .relaxed) } }
}

@Suite("Caching resolver")
struct CachingResolverTests {
    let zone = try! ZoneResolver.parse(zoneText, file: "test.zone")

    @Test("hits for the TTL, counting down; then asks again")
    func ttl() async throws {
        let up = CountingResolver(zone)
        let clock = FakeClock()
        let cache = CachingResolver(upstream: up, clock: clock.function)
        let name = try DNSName("mx.example.test")
        #expect(await cache.resolve(name, .a).ttl == 120)
        clock.advance(seconds: 100)
        let again = await cache.resolve(name, .a)
        #expect(again.ttl == 20 && again.addresses == ["127.0.0.1"])
        #expect(up.calls.load(ordering: .relaxed) == 1)
        clock.advance(seconds: 21)
        #expect(await cache.resolve(name, .a).ttl == 120)
        #expect(up.calls.load(ordering: .relaxed) == 2)
        #expect(cache.statistics.hits == 1 && cache.statistics.misses == 2)
    }

    @Test("NXDOMAIN and NODATA are cached for the negative TTL; failures are not cached")
    func negative() async throws {
        let up = CountingResolver(zone)
        let clock = FakeClock()
        let cache = CachingResolver(upstream: up, clock: clock.function)
        let nx = try DNSName("nothing.example.test")
        #expect(await cache.resolve(nx, .a).status == .nxDomain)
        #expect(await cache.resolve(nx, .a).status == .nxDomain)
        #expect(up.calls.load(ordering: .relaxed) == 1)
        clock.advance(seconds: 61)
        _ = await cache.resolve(nx, .a)
        #expect(up.calls.load(ordering: .relaxed) == 2)
        let broken = try DNSName("broken.example.test")
        _ = await cache.resolve(broken, .a)
        _ = await cache.resolve(broken, .a)
        #expect(up.calls.load(ordering: .relaxed) == 4)
    }

    @Test("concurrent questions for one name share one upstream lookup")
    func inFlight() async throws {
        let up = CountingResolver(zone, delayNS: 200_000_000)
        let cache = CachingResolver(upstream: up)
        let name = try DNSName("example.test")
        let answers = await withTaskGroup(of: DNSAnswer.self) { g in
            for _ in 0..<50 { g.addTask { await cache.resolve(name, .mx) } }
            return await g.reduce(into: [DNSAnswer]()) { $0.append($1) }
        }
        #expect(answers.count == 50 && answers.allSatisfy { $0.status == .noError && $0.mx.count == 2 })
        #expect(up.calls.load(ordering: .relaxed) == 1)
        // Those that started while the lookup was in flight shared it; any that started after it
        // (a busy machine) were cache hits. Either way: one upstream lookup.
        #expect(cache.statistics.shared + cache.statistics.hits == 49 && cache.statistics.shared > 0)
    }

    @Test("the cache stays within its capacity")
    func bounded() async throws {
        let records = (0..<500).map { i in ResourceRecord(name: try! DNSName("h\(i).test"), type: .a, ttl: 600, data: .a([10, 0, UInt8(i / 256), UInt8(i % 256)])) }
        let cache = CachingResolver(upstream: ZoneResolver(records: records), capacity: 100)
        for i in 0..<500 { _ = await cache.resolve(try DNSName("h\(i).test"), .a) }
        #expect(cache.statistics.entries <= 100)
        #expect(cache.immediateAnswer(try DNSName("h499.test"), .a)?.addresses == ["10.0.1.243"])
    }
}
