import DNS
import Foundation
import SMTP
import Testing

@testable import MailAuth

let systemSuffixes = try! PublicSuffixList.load()

func dkimPass(_ d: String, _ r: DKIMResult = .pass) -> DKIMVerification {
    DKIMVerification(result: r, domain: d, selector: "s", identity: "@" + d, algorithm: "rsa-sha256", reason: "", signaturePrefix: "", testing: false)
}

let dmarcZone = """
    $ORIGIN example.org.
    _dmarc          TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.org"
    $ORIGIN strict.example.
    _dmarc          TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
    $ORIGIN sampled.example.
    _dmarc          TXT "v=DMARC1; p=reject; pct=0"
    $ORIGIN two.example.
    _dmarc          TXT "v=DMARC1; p=reject"
    _dmarc          TXT "v=DMARC1; p=none"
    $ORIGIN own.example.org.
    _dmarc          TXT "v=DMARC1; p=none"
    $ORIGIN broken.example.
    _dmarc          SERVFAIL
    $ORIGIN junk.example.
    _dmarc          TXT "v=spf1 -all"
    """

func dmarc(from: String, spf: SPFResult = .fail, spfDomain: String = "other.example", dkim: [DKIMVerification] = [], sample: Int = 0) async throws -> DMARCOutcome {
    let checker = DMARCChecker(resolver: try ZoneResolver.parse(dmarcZone, file: "dmarc.zone"), suffixes: systemSuffixes, sample: { sample })
    let header = MessageHeader.parse(Array("From: \(from)\r\nSubject: x\r\n\r\n".utf8)).0
    return await checker.check(header: header, inputs: DMARCInputs(spf: spf, spfDomain: spfDomain, dkim: dkim))
}

@Suite("DMARC")
struct DMARCTests {
    @Test("organisational domains: every case of the public suffix list's own test file")
    func publicSuffixTests() throws {
        let text = String(decoding: try dataFile("test_psl.txt"), as: UTF8.self)
        var cases = 0
        for line in text.split(separator: "\n") where line.hasPrefix("checkPublicSuffix(") {
            let args = line.dropFirst("checkPublicSuffix(".count).dropLast(2).components(separatedBy: ", ")
            guard args.count == 2, args[0] != "null" else { continue }
            let input = String(args[0].dropFirst().dropLast())
            let expected = args[1] == "null" ? nil : try Domain(String(args[1].dropFirst().dropLast())).ascii
            #expect(systemSuffixes.organizationalDomain(input) == expected, "\(line)")
            cases += 1
        }
        #expect(cases == 77, "every case of the file is read")
        // A list of one's own (the path is configurable).
        let mine = PublicSuffixList(text: "// mine\ntest\nco.test\n*.wild.test\n!ok.wild.test\n")
        #expect(mine.organizationalDomain("a.b.co.test") == "b.co.test")
        #expect(mine.organizationalDomain("x.y.wild.test") == "x.y.wild.test")
        #expect(mine.organizationalDomain("a.ok.wild.test") == "ok.wild.test")
        #expect(mine.organizationalDomain("co.test") == nil)
    }

    @Test("records: p/sp/adkim/aspf/pct, rua without p is p=none, anything malformed is no record")
    func records() {
        let r = DMARCRecord.parse("v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=r; pct=50; rua=mailto:a@x.example, mailto:b@y.example")
        #expect(r == DMARCRecord(policy: .quarantine, subdomainPolicy: .reject, strictDKIM: true, strictSPF: false, percent: 50, reportURIs: ["mailto:a@x.example", "mailto:b@y.example"]))
        #expect(DMARCRecord.parse("v=DMARC1; rua=mailto:a@x.example")?.policy == DMARCPolicy.none)
        #expect(DMARCRecord.parse("v=DMARC1; p=bogus; rua=mailto:a@x.example")?.policy == DMARCPolicy.none)
        for bad in ["v=DMARC1", "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1; p=reject; pct=101", "v=DMARC1; p=reject; adkim=x", "v=DMARC1; p=reject; sp=maybe", "v=DMARC1; p=bogus"] {
            #expect(DMARCRecord.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("alignment table: relaxed and strict, SPF and DKIM, pass only when one aligned identifier passed", arguments: [
        // (From, SPF result, SPF domain, DKIM, expected result, SPF aligned, DKIM aligned)
        ("a@example.org", SPFResult.pass, "example.org", [DKIMVerification](), DMARCResult.pass, true, false),
        ("a@example.org", .pass, "bounces.example.org", [], .pass, true, false),
        ("a@mail.example.org", .pass, "example.org", [], .pass, true, false),
        ("a@example.org", .softfail, "example.org", [], .fail, false, false),
        ("a@example.org", .pass, "example.com", [], .fail, false, false),
        ("a@example.org", .fail, "x.example", [dkimPass("example.org")], .pass, false, true),
        ("a@example.org", .fail, "x.example", [dkimPass("sub.example.org")], .pass, false, true),
        ("a@example.org", .fail, "x.example", [dkimPass("example.org", .fail), dkimPass("other.example")], .fail, false, false),
        ("a@example.org", .fail, "x.example", [dkimPass("other.example"), dkimPass("EXAMPLE.ORG")], .pass, false, true),
        ("a@strict.example", .pass, "strict.example", [], .pass, true, false),
        ("a@strict.example", .pass, "mail.strict.example", [dkimPass("mail.strict.example")], .fail, false, false),
        ("a@strict.example", .fail, "x.example", [dkimPass("strict.example")], .pass, false, true),
    ])
    func alignment(_ from: String, _ spf: SPFResult, _ spfDomain: String, _ dkim: [DKIMVerification], _ expected: DMARCResult, _ spfAligned: Bool, _ dkimAligned: Bool) async throws {
        let o = try await dmarc(from: from, spf: spf, spfDomain: spfDomain, dkim: dkim)
        #expect(o.result == expected, "\(o)")
        #expect(o.spfAligned == spfAligned && o.dkimAligned == dkimAligned, "\(o)")
        #expect(o.disposition == (expected == .pass ? DMARCPolicy.none : o.publishedPolicy), "\(o)")
    }

    @Test("discovery: the From domain first, then the organisational one with sp=; pct; none, temperror, permerror")
    func discovery() async throws {
        let top = try await dmarc(from: "Joe <joe@example.org>")
        #expect(top.result == .fail && top.publishedPolicy == .reject && top.disposition == .reject)
        let sub = try await dmarc(from: "joe@deep.sub.example.org")
        #expect(sub.result == .fail && sub.publishedPolicy == .quarantine, "sp= applies below the organisational domain: \(sub)")
        let own = try await dmarc(from: "joe@own.example.org")
        #expect(own.publishedPolicy == DMARCPolicy.none, "a subdomain's own record wins")
        // pct=0: never the full policy; reject turns into quarantine (RFC 7489 §6.6.4).
        let sampled = try await dmarc(from: "a@sampled.example", sample: 0)
        #expect(sampled.result == .fail && sampled.disposition == .quarantine)
        #expect(try await dmarc(from: "a@nothing.example").result == DMARCResult.none)
        #expect(try await dmarc(from: "a@two.example").result == DMARCResult.none, "two records are no record")
        #expect(try await dmarc(from: "a@junk.example").result == DMARCResult.none)
        #expect(try await dmarc(from: "a@broken.example").result == .temperror)
        #expect(try await dmarc(from: "undisclosed-recipients:;").result == .permerror)
    }

    @Test(
        "not exactly one author domain (RFC 7489 §6.6.1) never dodges p=reject: every domain in the From fields is evaluated and the strictest applies",
        arguments: [
            "From: a@nothing.example\r\nFrom: joe@example.org\r\n",
            "From: joe@example.org\r\nFrom: a@nothing.example\r\n",
            "From: a@nothing.example, joe@example.org\r\n",
            "From: Friends: a@nothing.example, joe@example.org;\r\n",
            "From: <a@nothing.example>\u{0}<joe@example.org>\r\n",
            "From: joe@example.org\u{0}\r\n",
            "From: \"x\" <joe@example.org\r\n",
        ])
    func severalAuthors(fields: String) async throws {
        let checker = DMARCChecker(resolver: try ZoneResolver.parse(dmarcZone, file: "dmarc.zone"), suffixes: systemSuffixes, sample: { 0 })
        let header = MessageHeader.parse(Array("\(fields)Subject: x\r\n\r\n".utf8)).0
        let o = await checker.check(header: header, inputs: DMARCInputs(spf: .pass, spfDomain: "nothing.example", dkim: [dkimPass("nothing.example")]))
        #expect(o.result == .fail && o.disposition == .reject && o.fromDomain == "example.org", "\(o)")
        // Aligned for every domain present: a pass.
        let both = await checker.check(
            header: header, inputs: DMARCInputs(spf: .fail, spfDomain: "x.example", dkim: [dkimPass("nothing.example"), dkimPass("example.org")]))
        #expect(both.result != .fail, "\(both)")
    }

    @Test("a From without any domain stays permerror; the domains of a malformed From are found")
    func anyDomains() async throws {
        #expect(FromAddress.anyDomains("a@X.example, <b@y.example>; c@x.example") == ["x.example", "y.example"])
        #expect(FromAddress.anyDomains("joe@bücher.example\u{0}") == ["xn--bcher-kva.example"])
        #expect(FromAddress.anyDomains("nobody").isEmpty)
        #expect(try await dmarc(from: "nobody, nor anybody").result == .permerror)
    }

    @Test("the From domain: display names, comments, quotes, IDN; several or none is nil")
    func fromDomain() {
        let cases: [(String, String?)] = [
            ("joe@Example.ORG", "example.org"),
            ("Joe Q. Public <john.q.public@example.com>", "example.com"),
            ("\"Smith, John\" <js@example.net>", "example.net"),
            ("\"a@b.example\" <real@example.net>", "example.net"),
            ("(comment, with@at.example) joe@example.com", "example.com"),
            ("Joe <joe@bücher.example>", "xn--bcher-kva.example"),
            ("joe@example.com.", "example.com"),
            ("a@x.example, b@y.example", nil),
            ("Group: a@x.example;", nil),
            ("nobody", nil),
            ("joe@[192.0.2.1]", nil),
            ("<unterminated@example.com", nil),
        ]
        for (value, expected) in cases {
            #expect(FromAddress.singleDomain(value) == expected, "\(value)")
        }
    }
}
