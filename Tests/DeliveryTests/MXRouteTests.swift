import DNS
import Delivery
import Testing

let routeZone = """
    $TTL 300
    $ORIGIN test.
    ; preference order, equals, a host in both families, a duplicate address, a host without address
    multi        MX 20 c.hosts.test.
                 MX 10 b.hosts.test.
                 MX 10 a.hosts.test.
                 MX 30 gone.hosts.test.
    a.hosts      A     192.0.2.1
                 AAAA  2001:db8::1
    b.hosts      A     192.0.2.2
    c.hosts      A     192.0.2.1
    ; six MX hosts: only five are tried
    six          MX 1 h1.hosts.test.
                 MX 2 h2.hosts.test.
                 MX 3 h3.hosts.test.
                 MX 4 h4.hosts.test.
                 MX 5 h5.hosts.test.
                 MX 6 h6.hosts.test.
    h1.hosts     A 192.0.2.11
    h2.hosts     A 192.0.2.12
    h3.hosts     A 192.0.2.13
    h4.hosts     A 192.0.2.14
    h5.hosts     A 192.0.2.15
    h6.hosts     A 192.0.2.16
    ; no MX: the domain's own addresses (implicit MX)
    implicit     A     192.0.2.30
                 AAAA  2001:db8::30
    ; RFC 7505 null MX
    nullmx       MX 0 .
    ; a name that exists with neither MX nor address
    bare         TXT "v=spf1 -all"
    ; MX hosts without any address
    dangling     MX 10 nowhere.hosts.test.
    ; an MX host whose lookups fail for now
    flaky        MX 10 broken.hosts.test.
    broken.hosts SERVFAIL
    ; the MX lookup itself fails
    down         SERVFAIL
    ; a root exchange among others is skipped
    mixed        MX 0 .
                 MX 10 b.hosts.test.
    """

func route(_ domain: String) async throws -> Result<[MXHost], RouteFailure> {
    let zone = try ZoneResolver.parse(routeZone, file: "route.zone")
    // Equals keep the zone's order reversed, to see the shuffle hook applied to them only.
    return await MXRoute.hosts(for: try DNSName(domain), resolver: zone, shuffle: { $0.reversed() })
}

func names(_ r: Result<[MXHost], RouteFailure>) -> [String] {
    (try? r.get())?.map(\.name.text) ?? []
}

@Suite("MX routing")
struct MXRouteTests {
    @Test("preference order, equals shuffled among themselves, each address once, hosts without address left out")
    func order() async throws {
        let r = try await route("multi.test")
        let hosts = try r.get()
        // b and a share preference 10 (the zone lists b first; the hook reverses equals).
        #expect(hosts.map(\.name.text) == ["a.hosts.test", "b.hosts.test"])
        #expect(hosts[0].addresses == ["2001:db8::1", "192.0.2.1"], "IPv6 first, then IPv4")
        #expect(hosts[1].addresses == ["192.0.2.2"])
        // c.hosts has only 192.0.2.1, already tried through a: left out; gone has no address.
        #expect(hosts.map(\.preference) == [10, 10])
    }

    @Test("random order among equals by default, never across preferences")
    func shuffled() async throws {
        let zone = try ZoneResolver.parse(routeZone, file: "route.zone")
        var firsts = Set<String>()
        for _ in 0..<64 {
            let hosts = try await MXRoute.hosts(for: try DNSName("multi.test"), resolver: zone).get()
            firsts.insert(hosts[0].name.text)
            #expect(hosts.allSatisfy { $0.preference == 10 })
        }
        #expect(firsts == ["a.hosts.test", "b.hosts.test"])
    }

    @Test("at most five MX hosts")
    func five() async throws {
        #expect(names(try await route("six.test")) == ["h1.hosts.test", "h2.hosts.test", "h3.hosts.test", "h4.hosts.test", "h5.hosts.test"])
    }

    @Test("no MX: the domain itself, both families")
    func implicitMX() async throws {
        let hosts = try await route("implicit.test").get()
        #expect(hosts.count == 1)
        #expect(hosts[0].name.text == "implicit.test" && hosts[0].preference == 0)
        #expect(hosts[0].addresses == ["2001:db8::30", "192.0.2.30"])
    }

    @Test("failures: null MX 5.1.10, no domain 5.1.2, no address 5.4.4, DNS trouble 4.4.3", arguments: [
        ("nullmx.test", "5.1.10", true),
        ("missing.test", "5.1.2", true),
        ("bare.test", "5.1.2", true),
        ("dangling.test", "5.4.4", true),
        ("flaky.test", "4.4.3", false),
        ("down.test", "4.4.3", false),
    ])
    func failures(_ domain: String, _ status: String, _ permanent: Bool) async throws {
        let r = try await route(domain)
        guard case .failure(let f) = r else {
            Issue.record("\(domain) routed: \(r)")
            return
        }
        #expect(f.status == status, "\(domain): \(f)")
        #expect(f.isPermanent == permanent)
    }

    @Test("a root exchange among other MX records is skipped")
    func mixedNull() async throws {
        #expect(names(try await route("mixed.test")) == ["b.hosts.test"])
    }
}
