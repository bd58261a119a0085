import Delivery
import Testing

@Suite("placeholder templates")
struct TemplateTests {
    @Test("each placeholder is replaced once per occurrence; other text is kept as written", arguments: [
        ("/var/mail/%{domain}/%{user}", "/var/mail/example.test/bob"),
        ("%{rcpt}", "bob@example.test"),
        ("%{user}%{user}-%{domain}", "bobbob-example.test"),
        ("/m/%{sender}/x", "/m/a@b.example/x"),
        ("100%/%{user}%", "100%/bob%"),
        ("%{unknown}/%{user", "%{unknown}/%{user"),
        ("%%{user}", "%bob"),
        ("", ""),
        ("plain", "plain"),
        ("/ü/%{user}/é", "/ü/bob/é"),
    ])
    func expand(_ pattern: String, _ expected: String) {
        #expect(Template(pattern).expand(user: "bob", domain: "example.test", sender: "a@b.example") == expected)
    }

    @Test("an explicit rcpt wins over user@domain; the template reports what it uses")
    func rcptAndUses() {
        let t = Template("%{rcpt}:%{domain}")
        #expect(t.expand(user: "bob", domain: "example.test", rcpt: "Bob+tag@example.test") == "Bob+tag@example.test:example.test")
        #expect(t.uses("rcpt") && t.uses("domain") && !t.uses("user") && !t.uses("sender"))
        #expect(t.description == "%{rcpt}:%{domain}")
    }

    @Test("a replacement containing a placeholder is not expanded again")
    func noReexpansion() {
        #expect(Template("%{user}/%{domain}").expand(user: "%{domain}", domain: "d") == "%{domain}/d")
    }
}
