import Delivery
import Foundation
import Testing

@Suite("TLS history (downgrade protection)")
struct TLSHistoryTests {
    func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tls-history-\(UUID().uuidString)").path
    }

    @Test("levels only go up, per direction, and survive a restart")
    func record() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = TLSHistory(directory: dir)
        #expect(try h.security(of: "example.com") == DomainSecurity())
        #expect(try h.allows(.plain, with: "example.com", .outgoing))
        #expect(try h.record(.tlsVerified, with: "Example.COM.", .outgoing) == .tlsVerified)
        #expect(try h.record(.tlsUnverified, with: "example.com", .outgoing) == .tlsVerified, "never lowered by a record")
        #expect(try h.record(.tlsUnverified, with: "example.com", .incoming) == .tlsUnverified)
        #expect(try !h.allows(.plain, with: "example.com", .outgoing), "a plaintext connection after TLS is a downgrade")
        #expect(try !h.allows(.tlsUnverified, with: "example.com", .outgoing))
        #expect(try h.allows(.tlsVerified, with: "example.com", .outgoing))
        #expect(try h.allows(.tlsUnverified, with: "example.com", .incoming))
        #expect(try !h.allows(.plain, with: "example.com", .incoming))
        // A new instance (a restart) reads the file.
        let again = TLSHistory(directory: dir)
        #expect(try again.security(of: "example.com") == DomainSecurity(incoming: .tlsUnverified, outgoing: .tlsVerified))
        let text = try String(contentsOfFile: "\(dir)/example.com", encoding: .utf8)
        #expect(text == "incoming tls-unverified\noutgoing tls-verified\n")
        // Other domains are not affected.
        #expect(try again.allows(.plain, with: "example.org", .outgoing))
    }

    @Test("reset forgets a domain")
    func reset() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let h = TLSHistory(directory: dir)
        try h.record(.tlsVerified, with: "example.com", .outgoing)
        #expect(try h.reset("example.com"))
        #expect(try !h.reset("example.com"), "nothing left to reset")
        #expect(try h.allows(.plain, with: "example.com", .outgoing))
        #expect(try TLSHistory(directory: dir).security(of: "example.com") == DomainSecurity())
    }

    @Test("names that are not domains are refused, not used as paths", arguments: ["../etc/passwd", "a/b", "", ".", "a..b", "bücher.example"])
    func badNames(_ name: String) {
        let h = TLSHistory(directory: directory())
        #expect(throws: TLSHistoryError.self) { try h.record(.tlsVerified, with: name, .outgoing) }
    }
}
