import SMTP
import Testing

func parsePath(_ s: String, null: Bool = true, postmaster: Bool = false) -> Result<ParsedPath, PathError> {
    let bytes = Array(s.utf8)
    return bytes.withUnsafeBytes { PathParser.parse($0, from: 0, to: $0.count, allowNull: null, allowPostmaster: postmaster) }
}

func mailbox(_ s: String) -> String? {
    let bytes = Array(s.utf8)
    guard case .success(let p) = parsePath(s, postmaster: true), p.end == bytes.count else { return nil }
    return String(decoding: bytes[p.mailbox], as: UTF8.self)
}

@Suite("RFC 5321 path grammar")
struct PathTests {
    @Test(
        "valid paths and their mailbox",
        arguments: [
            ("<a@example.org>", "a@example.org"),
            ("<first.last@sub.example.org>", "first.last@sub.example.org"),
            ("<!#$%&'*+-/=?^_`{|}~@example.org>", "!#$%&'*+-/=?^_`{|}~@example.org"),
            ("<\"quoted string\"@example.org>", "\"quoted string\"@example.org"),
            ("<\"a\\\"b@c\"@example.org>", "\"a\\\"b@c\"@example.org"),
            ("<@hop.example:a@example.org>", "a@example.org"),
            ("<@h1.example,@h2.example:a@example.org>", "a@example.org"),
            ("<a@[192.0.2.1]>", "a@[192.0.2.1]"),
            ("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
            ("<a@[IPv6:::1]>", "a@[IPv6:::1]"),
            ("<a@[IPv6:2001:db8:0:0:0:0:2:1]>", "a@[IPv6:2001:db8:0:0:0:0:2:1]"),
            ("<a@[IPv6:::ffff:192.0.2.1]>", "a@[IPv6:::ffff:192.0.2.1]"),
            ("<a@[x-tag:some-thing]>", "a@[x-tag:some-thing]"),
            ("<a@example.org.>", "a@example.org."),
            ("<a@xn--bcher-kva.example>", "a@xn--bcher-kva.example"),
            ("<jöran@bücher.example>", "jöran@bücher.example"),
            ("<Postmaster>", "Postmaster"),
            ("<a@1.2.3.example>", "a@1.2.3.example"),
        ])
    func valid(_ input: String, _ expected: String) {
        #expect(mailbox(input) == expected, "\(input)")
    }

    @Test(
        "invalid paths",
        arguments: [
            "a@example.org", "<a@example.org", "<>x", "<a@>", "<@example.org>", "<a@@example.org>", "<a..b@example.org>",
            "<.a@example.org>", "<a.@example.org>", "<a b@example.org>", "<a@exa mple.org>", "<a@-example.org>",
            "<a@example-.org>", "<a@example..org>", "<a@.example.org>", "<a@[300.1.1.1]>", "<a@[1.2.3]>",
            "<a@[IPv6:1::2::3]>", "<a@[IPv6:12345::1]>", "<a@[]>", "<a@[tag:]>", "<a@example.org>>", "<\"unterminated@example.org>",
            "<\"bad\\\u{1}\"@example.org>", "<@hop.example a@example.org>", "<a@b@example.org>", "<a%b@>",
            "<a@\u{1}.org>", "<a@exa_mple.org>", "<postmaster2>", "<a@example.org:25>",
        ])
    func invalid(_ input: String) {
        #expect(mailbox(input) == nil, "\(input) should not parse")
    }

    @Test("lengths: local part 64, domain 255, path 256")
    func lengths() {
        let local64 = String(repeating: "a", count: 64)
        #expect(mailbox("<\(local64)@example.org>") != nil)
        #expect(parsePath("<\(local64)a@example.org>") == .failure(.tooLong))
        let label = String(repeating: "b", count: 63)
        #expect(mailbox("<a@\(label).example>") != nil)
        #expect(mailbox("<a@\(label)b.example>") == nil)
        let long = Array(repeating: label, count: 4).joined(separator: ".")  // 255 bytes
        #expect(parsePath("<aaaa@\(long)>") == .failure(.tooLong))  // path over 256
    }

    @Test("null path only where allowed; postmaster only for RCPT")
    func nullAndPostmaster() {
        if case .success(let p) = parsePath("<>") { #expect(p.isNull) } else { Issue.record("<> should parse") }
        #expect(parsePath("<>", null: false) == .failure(.nullNotAllowed))
        #expect((try? parsePath("<postmaster>", postmaster: false).get()) == nil)
    }

    @Test("UTF-8 is flagged and must be well formed")
    func utf8() throws {
        #expect(try parsePath("<jöran@example.org>").get().isUTF8)
        #expect(try !parsePath("<joran@example.org>").get().isUTF8)
        for bad in [[0xC3, 0x28], [0xE2, 0x82], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80]] as [[UInt8]] {
            let bytes = Array("<a".utf8) + bad + Array("@example.org>".utf8)
            let r = bytes.withUnsafeBytes { PathParser.parse($0, from: 0, to: $0.count, allowNull: true, allowPostmaster: false) }
            #expect((try? r.get()) == nil, "\(bad)")
        }
    }
}

@Suite("IDNA and domains")
struct DomainTests {
    // RFC 3492 §7.1 samples (lower-cased).
    @Test(
        "punycode round trips",
        arguments: [
            ("bücher", "bcher-kva"),
            ("例子", "fsqu00a"),
            ("münchen", "mnchen-3ya"),
            ("他们为什么不说中文", "ihqwcrb4cv8a8dqg056pqjye"),
            ("почемужеонинеговорятпорусски", "b1abfaaepdrnnbgefbadotcwatmq2g4l"),
            ("3年b組金八先生", "3b-ww4c5e180e575a65lsy2b"),
            ("abc", "abc-"),
        ])
    func punycode(_ unicode: String, _ encoded: String) {
        #expect(Punycode.encode(unicode) == encoded)
        #expect(Punycode.decode(encoded) == unicode)
    }

    @Test("A-label and U-label compare equal; case and a trailing dot are folded")
    func equality() throws {
        #expect(try Domain("Bücher.Example") == Domain("xn--bcher-kva.example."))
        #expect(try Domain("EXAMPLE.org.").ascii == "example.org")
        #expect(try Domain("xn--bcher-kva.example").unicode == "bücher.example")
        #expect(try Domain("例子.广告").ascii == "xn--fsqu00a.xn--4rr70v")
        #expect(try Mailbox("Bob@Bücher.example") == Mailbox("Bob@xn--bcher-kva.example"))
        #expect(try Mailbox("bob@bücher.example").asciiForm == "bob@xn--bcher-kva.example")
    }

    @Test("bad domains are refused", arguments: ["", ".", "a..b", "xn--zz-", "xn--a.example", "a\u{1}b.example", "☃\u{7F}.example", String(repeating: "a", count: 64) + ".example"])
    func bad(_ name: String) {
        #expect(throws: DomainError.self) { try Domain(name) }
    }

    @Test("malformed punycode never crashes")
    func fuzzPunycode() {
        var seed: UInt64 = 42
        for _ in 0..<2000 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let len = Int(seed >> 60)
            var s = ""
            for k in 0..<len { s.append(Character(Unicode.Scalar(UInt8(truncatingIfNeeded: (seed >> UInt64(k * 3)) % 75 + 45)))) }
            _ = Punycode.decode(s)
            _ = try? Domain("xn--" + s)
        }
    }
}
