import Config
import DNS
import Foundation
import SMTP
import Testing

/// The shipped examples must parse: they are documentation that can be run.
@Suite("Shipped examples")
struct ExampleTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples")

    @Test("examples/tern.conf and examples/aliases parse")
    func examples() throws {
        let conf = try String(contentsOf: Self.examples.appendingPathComponent("tern.conf"), encoding: .utf8)
        let c = try ConfigParser.parse(conf, file: "examples/tern.conf", baseDirectory: "/etc/tern")
        #expect(c.listeners.map(\.kind) == [.smtp, .smtp, .submission, .submissions])
        #expect(c.certificates == "/etc/letsencrypt/live" && c.domains[0].users == "/etc/tern/example.test/users")
        #expect(c.limits.authFailures == 10 && c.domains[0].submissionSenders == .ownDomain)
        #expect(c.domains.map(\.name.unicode) == ["example.test", "bücher.example"])
        let text = try String(contentsOf: Self.examples.appendingPathComponent("aliases"), encoding: .utf8)
        let domain = try Domain("example.test")
        let aliases = try AliasFile.parse(text, file: "examples/aliases", domain: domain, dropCharacters: ".")
        let resolver = RecipientResolver(domains: [.init(config: c.domains[0], aliases: aliases)]) { user, _ in
            ["jose", "maria"].contains(user)
        }
        #expect(resolver.resolve("postmaster@example.test") == .deliver([.mailbox(user: "jose", domain: domain)]))
        #expect(resolver.resolve("Team+x@example.test") == .deliver([.mailbox(user: "jose", domain: domain), .mailbox(user: "maria", domain: domain)]))
        #expect(c.resolver == .system)
    }

    @Test("examples/local.zone loads and answers")
    func zone() async throws {
        let zone = try ZoneResolver.load(path: Self.examples.appendingPathComponent("local.zone").path)
        let mx = await zone.resolve(try DNSName("example.test"), .mx)
        #expect(mx.mx.map(\.exchange.text) == ["mx.example.test", "mx2.example.test"])
        #expect(await zone.resolve(try DNSName("www.example.test"), .aaaa).addresses == ["2001:db8::25"])
        #expect(await zone.resolve(try DNSName("slow.example.test"), .a).status == .timeout)
        #expect(await zone.resolve(try DNSName("none.example.test"), .a).ttl == 60)
    }
}
