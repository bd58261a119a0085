import Testing

@testable import MailAuth

@Suite("Authentication-Results")
struct AuthenticationResultsTests {
    @Test("the header: one method a line; none when nothing was checked; odd values quoted")
    func header() {
        #expect(AuthenticationResults.header(authservID: "mx.example.test", spf: (.pass, "alice@example.org", "h.example.org"))
            == "Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=alice@example.org\r\n")
        #expect(AuthenticationResults.header(authservID: "mx.example.test", spf: (.fail, "", "h.example.org"))
            == "Authentication-Results: mx.example.test;\r\n\tspf=fail smtp.helo=h.example.org\r\n")
        #expect(AuthenticationResults.header(authservID: "mx.example.test", spf: nil) == "Authentication-Results: mx.example.test; none\r\n")
        #expect(AuthenticationResults.value("a b;\"c\"@x") == "\"a b;\\\"c\\\"@x\"")
        #expect(AuthenticationResults.value("a@b@c") == "\"a@b@c\"")
    }

    @Test("incoming fields claiming our authserv-id are removed, folded lines and all; others stay", arguments: [
        ("Authentication-Results: mx.example.test; spf=pass\r\nSubject: s\r\n\r\nbody\r\n", "Subject: s\r\n\r\nbody\r\n"),
        ("authentication-results:MX.Example.Test;\r\n\tdkim=pass header.d=x\r\nSubject: s\r\n\r\nbody\r\n", "Subject: s\r\n\r\nbody\r\n"),
        ("Authentication-Results: other.example; spf=pass\r\nSubject: s\r\n\r\nbody\r\n", "Authentication-Results: other.example; spf=pass\r\nSubject: s\r\n\r\nbody\r\n"),
        ("Authentication-Results: mx.example.test.evil; spf=pass\r\n\r\nx\r\n", "Authentication-Results: mx.example.test.evil; spf=pass\r\n\r\nx\r\n"),
        ("Subject: s\r\n\r\nAuthentication-Results: mx.example.test; spf=pass\r\n", "Subject: s\r\n\r\nAuthentication-Results: mx.example.test; spf=pass\r\n"),
        ("X: 1\r\nAuthentication-Results: mx.example.test; a=b\r\nY: 2\r\n\r\n", "X: 1\r\nY: 2\r\n\r\n"),
        ("Authentication-Results: mx.example.test", ""),
    ])
    func removal(_ input: String, _ expected: String) {
        #expect(AuthenticationResults.removingOurs(Array(input.utf8), authservID: "mx.example.test") == Array(expected.utf8))
    }
}
