import DNS
import Testing

@testable import MailAuth

/// RFC 7208 Appendix A's zone, plus records for the edge cases below. `RECORD` is replaced per test.
let appendixA = """
    $TTL 3600
    $ORIGIN example.com.
    @           MX  10 mail-a
                MX  20 mail-b
                A   192.0.2.10
                A   192.0.2.11
    amy         A   192.0.2.65
    bob         A   192.0.2.66
    mail-a      A   192.0.2.129
    mail-b      A   192.0.2.130
    www         CNAME example.com.
    $ORIGIN example.org.
    @           MX  10 mail-c
    mail-c      A   192.0.2.140
    @           TXT "v=spf1 mx -all"
    $ORIGIN 2.0.192.in-addr.arpa.
    10          PTR example.com.
    65          PTR amy.example.com.
    66          PTR bob.example.com.
    129         PTR mail-a.example.com.
    130         PTR mail-b.example.com.
    140         PTR mail-c.example.org.
    $ORIGIN 0.0.10.in-addr.arpa.
    4           PTR bob.example.com.
    """

func checker(_ record: String?, extra: String = "") throws -> SPFChecker {
    var text = appendixA + "\n" + extra + "\n"
    if let record { text += "example.com. TXT \(record)\n" }
    return SPFChecker(resolver: try ZoneResolver.parse(text, file: "spf.zone"), receivingHost: "mx.receiver.test", now: { 1_700_000_000 })
}

func result(_ record: String?, ip: String, sender: String = "user@example.com", helo: String = "client.example.com", extra: String = "") async throws -> SPFResult {
    let c = try checker(record, extra: extra)
    return await c.check(ip: try #require(SPFAddress(ip)), helo: helo, mailFrom: sender).result
}

@Suite("SPF: RFC 7208 Appendix A")
struct SPFAppendixTests {
    @Test("A.1 simple examples", arguments: [
        ("\"v=spf1 +all\"", "198.51.100.7", SPFResult.pass),
        ("\"v=spf1 a -all\"", "192.0.2.10", .pass),
        ("\"v=spf1 a -all\"", "192.0.2.11", .pass),
        ("\"v=spf1 a -all\"", "192.0.2.12", .fail),
        ("\"v=spf1 a:example.org -all\"", "192.0.2.140", .fail),
        ("\"v=spf1 mx -all\"", "192.0.2.129", .pass),
        ("\"v=spf1 mx -all\"", "192.0.2.130", .pass),
        ("\"v=spf1 mx -all\"", "192.0.2.140", .fail),
        ("\"v=spf1 mx:example.org -all\"", "192.0.2.140", .pass),
        ("\"v=spf1 mx mx:example.org -all\"", "192.0.2.130", .pass),
        ("\"v=spf1 mx mx:example.org -all\"", "192.0.2.140", .pass),
        ("\"v=spf1 mx/30 mx:example.org/30 -all\"", "192.0.2.131", .pass),
        ("\"v=spf1 mx/30 mx:example.org/30 -all\"", "192.0.2.143", .pass),
        ("\"v=spf1 mx/30 mx:example.org/30 -all\"", "192.0.2.144", .fail),
        ("\"v=spf1 ptr -all\"", "192.0.2.65", .pass),
        ("\"v=spf1 ptr -all\"", "192.0.2.140", .fail),
        ("\"v=spf1 ptr -all\"", "10.0.0.4", .fail),
        ("\"v=spf1 ip4:192.0.2.128/28 -all\"", "192.0.2.65", .fail),
        ("\"v=spf1 ip4:192.0.2.128/28 -all\"", "192.0.2.129", .pass),
    ])
    func simple(_ record: String, _ ip: String, _ expected: SPFResult) async throws {
        #expect(try await result(record, ip: ip) == expected, "\(record) from \(ip)")
    }

    @Test("A.2 multiple domains: the first include that passes decides; an include without a record is permerror")
    func multipleDomains() async throws {
        let record = "\"v=spf1 include:example.org include:example.net -all\""
        #expect(try await result(record, ip: "192.0.2.140") == .pass)
        #expect(try await result(record, ip: "192.0.2.10") == .permerror)
    }
}

@Suite("SPF: macros (RFC 7208 §7.4)")
struct SPFMacroTests {
    func expand(_ s: String, ip: String = "192.0.2.3", explanation: Bool = false) async throws -> String {
        let c = try checker(nil, extra: "$ORIGIN 3.2.0.192.in-addr.arpa.\n@ PTR mx.example.org.\nmx.example.org. A 192.0.2.3\n")
        var state = SPFChecker.Evaluation(ip: try #require(SPFAddress(ip)), sender: "strong-bad@email.example.com", helo: "helo.example.net")
        return try await c.expand(s, domain: "email.example.com", state: &state, forExplanation: explanation)
    }

    @Test("the RFC's table", arguments: [
        ("%{s}", "strong-bad@email.example.com"), ("%{o}", "email.example.com"), ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"), ("%{d3}", "email.example.com"), ("%{d2}", "example.com"), ("%{d1}", "com"),
        ("%{dr}", "com.example.email"), ("%{d2r}", "example.email"), ("%{l}", "strong-bad"), ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"), ("%{lr-}", "bad.strong"), ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        ("%{h}", "helo.example.net"), ("%{p}", "mx.example.org"), ("%%%_%-", "% %20"), ("%{S}", "strong-bad%40email.example.com"),
    ])
    func table(_ macro: String, _ expected: String) async throws {
        #expect(try await expand(macro) == expected)
    }

    @Test("IPv6: nibbles")
    func ipv6() async throws {
        #expect(try await expand("%{ir}.%{v}._spf.%{d2}", ip: "2001:db8::cb01")
            == "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    }

    @Test("explanation letters c, r, t; a long domain loses labels from the left")
    func explanationLetters() async throws {
        #expect(try await expand("%{c} %{r} %{t}", explanation: true) == "192.0.2.3 mx.receiver.test 1700000000")
        let long = String(repeating: "abcdefghi.", count: 30) + "%{d}"
        let out = try await expand(long)
        #expect(out.utf8.count <= 253 && out.hasSuffix(".email.example.com"))
    }
}

@Suite("SPF: results at the edges")
struct SPFEdgeTests {
    @Test("record selection (§4.5)", arguments: [
        (nil as String?, SPFResult.none),
        ("\"v=spf10 -all\"", .none),
        ("\"V=SPF1 -ALL\"", .fail),
        ("\"v=spf1\"", .neutral),
        ("\"v=spf1 \" \"-all\"", .fail),  // strings are joined without spaces: "v=spf1 -all"
    ])
    func selection(_ record: String?, _ expected: SPFResult) async throws {
        #expect(try await result(record, ip: "198.51.100.1") == expected)
    }

    @Test("two SPF records are permerror")
    func twoRecords() async throws {
        #expect(try await result("\"v=spf1 -all\"", ip: "192.0.2.1", extra: "example.com. TXT \"v=spf1 +all\"") == .permerror)
    }

    @Test("syntax errors are permerror", arguments: [
        "\"v=spf1 ip4:192.0.2.1/33 -all\"", "\"v=spf1 ip4:192.0.2 -all\"", "\"v=spf1 ip6:::1/129 -all\"", "\"v=spf1 frob -all\"",
        "\"v=spf1 a:example.123 -all\"", "\"v=spf1 include -all\"", "\"v=spf1 exists:%{x}.example.com -all\"",
        "\"v=spf1 exists:%{c}.example.com -all\"", "\"v=spf1 a:%{d0}.example.com -all\"", "\"v=spf1 redirect=a.example.org redirect=b.example.org\"",
        "\"v=spf1 -all exp=a.example.org exp=b.example.org\"", "\"v=spf1 a/024 -all\"", "\"v=spf1 all:foo\"", "\"v=spf1 ip4:192.0.2.1%\"",
    ])
    func syntax(_ record: String) async throws {
        #expect(try await result(record, ip: "192.0.2.1") == .permerror, "\(record)")
    }

    @Test("unknown modifiers are ignored; mechanisms and modifiers are case-insensitive")
    func modifiers() async throws {
        #expect(try await result("\"v=spf1 foo=bar -all\"", ip: "192.0.2.1") == .fail)
        #expect(try await result("\"v=spf1 IP4:192.0.2.1 -ALL\"", ip: "192.0.2.1") == .pass)
    }

    @Test("redirect: used only when nothing matched; a target without a record is permerror")
    func redirect() async throws {
        #expect(try await result("\"v=spf1 redirect=example.org\"", ip: "192.0.2.140") == .pass)
        #expect(try await result("\"v=spf1 redirect=example.org\"", ip: "192.0.2.1") == .fail)
        #expect(try await result("\"v=spf1 +all redirect=example.org\"", ip: "192.0.2.1") == .pass)
        #expect(try await result("\"v=spf1 redirect=nothing.example.net\"", ip: "192.0.2.1") == .permerror)
    }

    @Test("include results map to match, no match, temperror and permerror (§5.2)")
    func include() async throws {
        let extra = """
            soft.example.net. TXT "v=spf1 ~all"
            broken.example.net. SERVFAIL
            bad.example.net. TXT "v=spf1 bogus"
            """
        #expect(try await result("\"v=spf1 include:soft.example.net -all\"", ip: "192.0.2.1", extra: extra) == .fail)
        #expect(try await result("\"v=spf1 include:broken.example.net -all\"", ip: "192.0.2.1", extra: extra) == .temperror)
        #expect(try await result("\"v=spf1 include:bad.example.net -all\"", ip: "192.0.2.1", extra: extra) == .permerror)
        #expect(try await result("\"v=spf1 include:nothing.example.net -all\"", ip: "192.0.2.1", extra: extra) == .permerror)
    }

    @Test("DNS failures: the record lookup is temperror; a single-label or malformed domain is none")
    func dnsFailures() async throws {
        #expect(try await result(nil, ip: "192.0.2.1", sender: "u@broken.example.net", extra: "broken.example.net. SERVFAIL") == .temperror)
        #expect(try await result(nil, ip: "192.0.2.1", sender: "u@localhost") == .none)
        #expect(try await result(nil, ip: "192.0.2.1", sender: "u@a..b") == .none)
        #expect(try await result("\"v=spf1 a:slow.example.net -all\"", ip: "192.0.2.1", extra: "slow.example.net. TIMEOUT") == .temperror)
    }

    @Test("more than 10 DNS-querying terms is permerror; 10 is fine")
    func lookupLimit() async throws {
        var extra = ""
        for i in 0..<11 { extra += "l\(i).example.net. TXT \"v=spf1 include:l\(i + 1).example.net\"\n" }
        extra += "l11.example.net. TXT \"v=spf1 +all\"\n"
        // A chain of n includes from example.com: l0 … l(n-1), the last one passing.
        #expect(try await result("\"v=spf1 include:l1.example.net -all\"", ip: "192.0.2.1", extra: extra) == .permerror)  // 11 lookups
        var ok = ""
        for i in 0..<9 { ok += "m\(i).example.net. TXT \"v=spf1 include:m\(i + 1).example.net\"\n" }
        ok += "m9.example.net. TXT \"v=spf1 +all\"\n"
        #expect(try await result("\"v=spf1 include:m0.example.net -all\"", ip: "192.0.2.1", extra: ok) == .pass)  // 10 lookups
    }

    @Test("more than two void lookups is permerror (§4.6.4)")
    func voidLimit() async throws {
        let r = "\"v=spf1 a:v1.example.net a:v2.example.net a:v3.example.net +all\""
        #expect(try await result(r, ip: "192.0.2.1") == .permerror)
        #expect(try await result("\"v=spf1 a:v1.example.net a:v2.example.net +all\"", ip: "192.0.2.1") == .pass)
    }

    @Test("more than 10 MX records is permerror")
    func mxLimit() async throws {
        var extra = "$ORIGIN many.example.net.\n"
        for i in 0..<11 { extra += "@ MX \(i) h\(i)\nh\(i) A 198.51.100.\(i)\n" }
        #expect(try await result("\"v=spf1 mx:many.example.net -all\"", ip: "192.0.2.1", extra: extra) == .permerror)
    }

    @Test("exp=: the explanation of a fail, with macros; errors only lose the explanation")
    func explanation() async throws {
        let c = try checker("\"v=spf1 -all exp=explain._spf.%{d}\"", extra: "explain._spf.example.com. TXT \"%{i} is not one of %{d}'s designated mail servers.\"")
        let out = await c.check(ip: try #require(SPFAddress("192.0.2.99")), helo: "h.example.com", mailFrom: "a@example.com")
        #expect(out.result == .fail && out.explanation == "192.0.2.99 is not one of example.com's designated mail servers.")
        let missing = try checker("\"v=spf1 -all exp=none.example.com\"")
        let o2 = await missing.check(ip: try #require(SPFAddress("192.0.2.99")), helo: "h", mailFrom: "a@example.com")
        #expect(o2.result == .fail && o2.explanation?.contains("not authorized") == true)
    }

    @Test("the null sender is checked as postmaster@HELO; IPv4-mapped IPv6 as IPv4; ip6 and exists")
    func identities() async throws {
        let extra = "helo.example.net. TXT \"v=spf1 ip4:192.0.2.200 -all\"\nyes.example.net. A 127.0.0.2"
        #expect(try await result(nil, ip: "192.0.2.200", sender: "", helo: "helo.example.net", extra: extra) == .pass)
        #expect(try await result(nil, ip: "::ffff:192.0.2.200", sender: "", helo: "helo.example.net", extra: extra) == .pass)
        #expect(try await result("\"v=spf1 ip6:2001:db8::/32 -all\"", ip: "2001:db8::1") == .pass)
        #expect(try await result("\"v=spf1 ip6:2001:db8::/32 -all\"", ip: "2001:db9::1") == .fail)
        #expect(try await result("\"v=spf1 exists:yes.example.net -all\"", ip: "2001:db8::1", extra: extra) == .pass)
        #expect(try await result("\"v=spf1 a//32 -all\"", ip: "2001:db8::1", extra: "example.com. AAAA 2001:db8::ffff") == .pass)
        #expect(try await result("\"v=spf1 ?all\"", ip: "192.0.2.1") == .neutral)
        #expect(try await result("\"v=spf1 ~all\"", ip: "192.0.2.1") == .softfail)
    }

    @Test("an internationalised sender domain is checked by its A-labels (a U-label name has no record: it must not come out none)")
    func internationalisedDomain() async throws {
        let zone = "$ORIGIN xn--mller-kva.test.\n@ TXT \"v=spf1 ip4:192.0.2.1 -all\"\n"
        let c = SPFChecker(resolver: try ZoneResolver.parse(zone, file: "idn.zone"), receivingHost: "mx.receiver.test")
        let ip = try #require(SPFAddress("192.0.2.99"))
        #expect(await c.check(ip: ip, helo: "h.example", mailFrom: "a@müller.test").result == .fail)
        #expect(await c.check(ip: ip, helo: "h.example", mailFrom: "a@xn--mller-kva.test").result == .fail)
        #expect(await c.check(ip: try #require(SPFAddress("192.0.2.1")), helo: "h.example", mailFrom: "a@MÜLLER.test").result == .pass)
    }
}
