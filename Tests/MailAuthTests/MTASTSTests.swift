import MailAuth
import Testing

@Suite("MTA-STS record and policy (RFC 8461)")
struct MTASTSTests {
    @Test("the TXT record: v=STSv1 first, an id of 1–32 letters and digits, exactly one record")
    func record() {
        #expect(MTASTSRecord.parse("v=STSv1; id=20160831085700Z;") == MTASTSRecord(id: "20160831085700Z"))
        #expect(MTASTSRecord.parse("v=STSv1;id=abc") == MTASTSRecord(id: "abc"))
        #expect(MTASTSRecord.parse("v=STSv1; id=abc; ext=1") == MTASTSRecord(id: "abc"))
        for bad in ["v=STSv2; id=1", "id=1; v=STSv1", "v=STSv1;", "v=STSv1; id=", "v=STSv1; id=a-b", "v=STSv1; id=\(String(repeating: "a", count: 33))", "v=STSv1; id=1; id=2", "v=STSv1; junk"] {
            #expect(MTASTSRecord.parse(bad) == nil, "\(bad)")
        }
        #expect(MTASTSRecord.find(in: ["v=spf1 -all", "v=STSv1; id=7"]) == MTASTSRecord(id: "7"))
        #expect(MTASTSRecord.find(in: ["v=STSv1; id=7", "v=STSv1; id=8"]) == nil)
        #expect(MTASTSRecord.find(in: []) == nil)
    }

    @Test("the RFC's example policy, CRLF or LF, unknown keys ignored")
    func policy() throws {
        let p = try MTASTSPolicy.parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n")
        #expect(p == MTASTSPolicy(mode: .enforce, mx: ["mail.example.com", "*.example.net", "backupmx.example.com"], maxAge: 604800))
        let q = try MTASTSPolicy.parse("version: STSv1\nmode: testing\nmx: MX.Example.ORG\nfuture: yes\nmax_age:86400\n")
        #expect(q == MTASTSPolicy(mode: .testing, mx: ["mx.example.org"], maxAge: 86400))
        #expect(try MTASTSPolicy.parse("version: STSv1\nmode: none\nmax_age: 999999999\n") == MTASTSPolicy(mode: .none, mx: [], maxAge: 31_557_600))
    }

    @Test("bad policies say why", arguments: [
        ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version is not STSv1"),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "unknown mode 'strict'"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
        ("version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age"),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -5\n", "bad max_age '-5'"),
        ("<html>oops</html>", "not a 'key: value' line: <html>oops</html>"),
    ])
    func badPolicies(_ text: String, _ why: String) {
        #expect(throws: MTASTSPolicy.ParseError(description: why)) { try MTASTSPolicy.parse(text) }
    }

    @Test("MX patterns: exact names, and a wildcard for one leftmost label only")
    func patterns() {
        let p = MTASTSPolicy(mode: .enforce, mx: ["mail.example.com", "*.example.net"], maxAge: 1)
        #expect(p.allows(mx: "mail.example.com"))
        #expect(p.allows(mx: "MAIL.example.com."))
        #expect(p.allows(mx: "mx1.example.net"))
        #expect(!p.allows(mx: "example.net"))
        #expect(!p.allows(mx: "a.b.example.net"))
        #expect(!p.allows(mx: "other.example.com"))
        #expect(!p.allows(mx: "mail.example.com.evil"))
    }
}
