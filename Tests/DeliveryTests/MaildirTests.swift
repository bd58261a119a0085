import Delivery
import Foundation
import Testing

@Suite("Maildir delivery")
struct MaildirTests {
    func temp() -> String { FileManager.default.temporaryDirectory.appendingPathComponent("maildir-\(UUID().uuidString)").path }

    @Test("a message lands in new/ with its prefix, byte for byte, under a unique name")
    func deliver() throws {
        let root = temp()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let m = Maildir(pattern: "\(root)/%{domain}/%{user}", hostname: "mx.test")
        #expect(!m.exists(user: "bob", domain: "example.test"))
        let body = Array("Subject: x\r\n\r\n.dot\r\n".utf8)
        let p1 = try m.deliver(prefix: Array("Delivered-To: bob@example.test\r\n".utf8), message: body, user: "bob", domain: "example.test")
        let p2 = try m.deliver(prefix: [], message: body, user: "bob", domain: "example.test")
        #expect(p1 != p2)
        #expect(p1.hasPrefix("\(root)/example.test/bob/new/"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: p1)) == Data("Delivered-To: bob@example.test\r\n".utf8 + body))
        #expect(m.exists(user: "bob", domain: "example.test"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/example.test/bob/tmp").isEmpty)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: "\(root)/example.test/bob")) == ["cur", "new", "tmp"])
    }

    @Test("unsafe names never become paths", arguments: ["../etc", "a/b", ".hidden", "", "x\u{0}y", "ok\u{1F}"])
    func unsafe(_ user: String) throws {
        let root = temp()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let m = Maildir(pattern: "\(root)/%{user}", hostname: "mx.test")
        #expect(m.path(user: user, domain: "example.test") == nil)
        #expect(!m.exists(user: user, domain: "example.test"))
        #expect(throws: DeliveryError.permanent("unsafe mailbox name '\(user)@example.test'")) {
            try m.deliver(prefix: [], message: [1], user: user, domain: "example.test")
        }
    }

    @Test("a folder that cannot be created, or a file where tmp/ or new/ should be, is a temporary failure (kept and retried, never bounced)")
    func unwritable() throws {
        func expectTemporary(_ m: Maildir, _ user: String) {
            do {
                _ = try m.deliver(prefix: [], message: [1], user: user, domain: "x")
                Issue.record("delivered into a Maildir that cannot be written")
            } catch {
                guard case .temporary(let why) = error else {
                    Issue.record("not temporary: \(error)")
                    return
                }
                #expect(why.contains("Not a directory"), "\(why)")
            }
        }
        let root = temp()
        defer { try? FileManager.default.removeItem(atPath: root) }
        FileManager.default.createFile(atPath: root, contents: Data("a file, not a folder".utf8))
        expectTemporary(Maildir(pattern: "\(root)/%{user}", hostname: "mx.test"), "bob")
        let other = temp()
        defer { try? FileManager.default.removeItem(atPath: other) }
        try FileManager.default.createDirectory(atPath: "\(other)/bob/tmp", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: "\(other)/bob/new", contents: Data())
        expectTemporary(Maildir(pattern: "\(other)/%{user}", hostname: "mx.test"), "bob")
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(other)/bob/tmp").isEmpty, "nothing left behind in tmp/")
    }

    @Test("a staged batch is invisible until committed, then all of it is in new/")
    func batch() throws {
        let root = temp()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let m = Maildir(pattern: "\(root)/%{domain}/%{user}", hostname: "mx.test")
        let staged = try (0..<5).map { i in try m.stage(prefix: [], message: Array("m\(i)\r\n".utf8), user: i % 2 == 0 ? "a" : "b", domain: "d.test") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/d.test/a/new").isEmpty)
        #expect(Maildir.commit(staged).allSatisfy { (try? $0.get()) != nil })
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/d.test/a/new").count == 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/d.test/b/new").count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/d.test/a/tmp").isEmpty)
        #expect(try String(contentsOfFile: staged[4].final, encoding: .utf8) == "m4\r\n")
    }

    @Test("one Maildir refusing the rename fails only its own messages, and leaves nothing in tmp/")
    func partialBatch() throws {
        let root = temp()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let m = Maildir(pattern: "\(root)/%{user}", hostname: "mx.test")
        let staged = try ["alice", "bob", "alice"].map { u in try m.stage(prefix: [], message: Array("to \(u)\r\n".utf8), user: u, domain: "d.test") }
        // bob's new/ becomes a file: the rename into it fails.
        try FileManager.default.removeItem(atPath: "\(root)/bob/new")
        FileManager.default.createFile(atPath: "\(root)/bob/new", contents: Data())
        let results = Maildir.commit(staged)
        #expect((try? results[0].get()) != nil)
        #expect((try? results[2].get()) != nil)
        guard case .failure(.temporary) = results[1] else {
            Issue.record("bob's delivery should fail temporarily, got \(results[1])")
            return
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/alice/new").count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/bob/tmp").isEmpty)
    }

    @Test("new/ that cannot be synced after the rename: the entry is taken back (no second copy on retry), unless a reader took it")
    func unsyncableNewFolder() throws {
        let root = temp()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let m = Maildir(pattern: "\(root)/%{user}", hostname: "mx.test")
        let staged = try ["alice", "bob"].map { u in try m.stage(prefix: [], message: Array("to \(u)\r\n".utf8), user: u, domain: "d.test") }
        let results = Maildir.commit(staged) { (dir: String) throws(DeliveryError) in
            if dir.hasSuffix("/bob/new") { throw .temporary("fsync \(dir): Input/output error") }
        }
        #expect((try? results[0].get()) != nil)
        #expect((try? results[1].get()) == nil, "bob's delivery failed")
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/bob/new").isEmpty, "and nothing of it is visible")
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/bob/tmp").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/alice/new").count == 1)

        // A reader moved the message to cur/ before the entry could be taken back: delivered.
        let again = try m.stage(prefix: [], message: Array("to bob\r\n".utf8), user: "bob", domain: "d.test")
        let taken = Maildir.commit([again]) { (dir: String) throws(DeliveryError) in
            _ = rename(again.final, "\(root)/bob/cur/read")
            throw .temporary("fsync \(dir): Input/output error")
        }
        #expect((try? taken[0].get()) != nil, "the reader has it: it counts as delivered")
    }
}
