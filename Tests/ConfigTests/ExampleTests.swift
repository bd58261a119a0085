import Config
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
        #expect(c.listeners.count == 2)
        #expect(c.domains.map(\.name.unicode) == ["example.test", "bücher.example"])
        let text = try String(contentsOf: Self.examples.appendingPathComponent("aliases"), encoding: .utf8)
        let domain = try Domain("example.test")
        let aliases = try AliasFile.parse(text, file: "examples/aliases", domain: domain, dropCharacters: ".")
        let resolver = RecipientResolver(domains: [.init(config: c.domains[0], aliases: aliases)]) { user, _ in
            ["jose", "maria"].contains(user)
        }
        #expect(resolver.resolve("postmaster@example.test") == .deliver([.mailbox(user: "jose", domain: domain)]))
        #expect(resolver.resolve("Team+x@example.test") == .deliver([.mailbox(user: "jose", domain: domain), .mailbox(user: "maria", domain: domain)]))
    }
}
