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

    @Test("internationalised senders are written as they are (RFC 8616), in Authentication-Results and Received-SPF")
    func utf8Senders() {
        let ar = AuthenticationResults.header(authservID: "mx.example.test", spf: (.pass, "josé@peer.test", "h.peer.test"))
        #expect(ar == "Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=josé@peer.test\r\n", "\(ar)")
        #expect(AuthenticationResults.value("\"jo sé\"@bücher.example") == "\"\\\"jo sé\\\"@bücher.example\"")
        let outcome = SPFOutcome(result: .pass, domain: "peer.test", decision: .text("test"), explanation: nil)
        let ip = SPFAddress("192.0.2.1")!
        let spf = outcome.receivedSPF(ip: ip, mailFrom: "josé@peer.test", helo: "h.peer.test", receiver: "mx.example.test")
        #expect(spf.contains("domain of josé@peer.test designates 192.0.2.1"), "\(spf)")
        #expect(spf.contains("envelope-from=\"josé@peer.test\";"), "\(spf)")
        // A quoted local part keeps its specials, escaped, never dropped.
        let quoted = outcome.receivedSPF(ip: ip, mailFrom: "\"a (b)\"@peer.test", helo: "h.peer.test", receiver: "mx.example.test")
        #expect(quoted.contains("envelope-from=\"\\\"a (b)\\\"@peer.test\";"), "\(quoted)")
        #expect(quoted.contains("domain of \"a \\(b\\)\"@peer.test designates"), "\(quoted)")
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
