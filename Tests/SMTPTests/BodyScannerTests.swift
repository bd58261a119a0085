import SMTP
import Testing

/// Scans `input` (in pieces) the way the server does and returns the message bytes, or nil on a bad line ending.
func scanAll(_ pieces: [[UInt8]]) -> (body: [UInt8], ended: Bool, longLine: Bool)? {
    var s = BodyScanner()
    var body: [UInt8] = []
    var pending: [UInt8] = []
    for piece in pieces {
        pending += piece
        var consumed = 0
        var ended = false
        let ok: Bool = pending.withUnsafeBytes { b in
            while true {
                switch s.scan(b, from: consumed) {
                case .data(let r, let next):
                    body += b[r]
                    consumed = next
                case .needMore(let r, let next):
                    body += b[r]
                    consumed = next
                    return true
                case .end(let r, let next):
                    body += b[r]
                    consumed = next
                    ended = true
                    return true
                case .badLineEnding:
                    return false
                }
            }
        }
        if !ok { return nil }
        pending.removeFirst(consumed)
        if ended { return (body, true, s.sawLongLine) }
    }
    return (body, false, s.sawLongLine)
}

@Suite("DATA body scanner")
struct BodyScannerTests {
    @Test(
        "end marker, dot-unstuffing and strict CRLF, at every split",
        arguments: [
            ("a\r\n.\r\n", "a\r\n"),
            (".\r\n", ""),
            ("..\r\n.\r\n", ".\r\n"),
            ("..x\r\n.y\r\n.\r\n", ".x\r\ny\r\n"),
            ("a.\r\n.a\r\n\r\n.\r\n", "a.\r\na\r\n\r\n"),
            ("\r\n\r\n.\r\n", "\r\n\r\n"),
        ])
    func good(_ input: String, _ expected: String) {
        let bytes = Array(input.utf8)
        for k in 0...bytes.count {
            let r = scanAll([Array(bytes[..<k]), Array(bytes[k...])])
            #expect(r?.body == Array(expected.utf8), "split at \(k)")
            #expect(r?.ended == true)
        }
        #expect(scanAll(bytes.map { [$0] })?.body == Array(expected.utf8))
    }

    @Test(
        "bare CR or LF is refused wherever it is",
        arguments: ["a\nb\r\n.\r\n", "a\rb\r\n.\r\n", "\n.\r\n", "a\r\n.\n", "a\r\n.\r.\r\n", "a\r\r\n.\r\n", "x\r\n\n.\n"])
    func bad(_ input: String) {
        let bytes = Array(input.utf8)
        for k in 0...bytes.count {
            #expect(scanAll([Array(bytes[..<k]), Array(bytes[k...])]) == nil, "split at \(k)")
        }
    }

    @Test("text lines of 1000 bytes pass, 1001 are flagged")
    func lineLength() {
        let ok = Array(repeating: UInt8(ascii: "x"), count: 998) + [13, 10, 46, 13, 10]
        #expect(scanAll([ok])?.longLine == false)
        let stuffed = [46] + Array(repeating: UInt8(ascii: "x"), count: 998) + [13, 10, 46, 13, 10]
        #expect(scanAll([stuffed])?.longLine == false, "the transparency dot does not count")
        let long = Array(repeating: UInt8(ascii: "x"), count: 999) + [13, 10, 46, 13, 10]
        for k in stride(from: 0, through: long.count, by: 7) {
            #expect(scanAll([Array(long[..<k]), Array(long[k...])])?.longLine == true)
        }
    }

    @Test("bytes after the end marker are not consumed")
    func afterEnd() {
        var s = BodyScanner()
        let b = Array("hi\r\n.\r\nQUIT\r\n".utf8)
        b.withUnsafeBytes { p in
            #expect(s.scan(p, from: 0) == .end(0..<4, next: 7))
        }
    }
}

@Suite("Reply parsing")
struct ReplyParserTests {
    @Test("lines, continuation, enhanced status")
    func lines() throws {
        let b = Array("250-mx.test\r\n250 DSN\r\n550 5.1.1 No such user\r\n220\r\n".utf8)
        try b.withUnsafeBytes { p in
            let l1 = try #require(try ReplyParser.line(p, from: 0))
            #expect(l1.code == 250 && !l1.isLast)
            let l2 = try #require(try ReplyParser.line(p, from: l1.next))
            #expect(l2.code == 250 && l2.isLast)
            let l3 = try #require(try ReplyParser.line(p, from: l2.next))
            #expect(l3.code == 550)
            let (status, textStart) = try #require(ReplyParser.enhancedStatus(p, l3.text))
            #expect(status == EnhancedStatus(5, 1, 1))
            #expect(String(decoding: p[textStart..<l3.text.upperBound], as: UTF8.self) == "No such user")
            let l4 = try #require(try ReplyParser.line(p, from: l3.next))
            #expect(l4.code == 220 && l4.isLast)
            #expect(try ReplyParser.line(p, from: l4.next) == nil)
        }
    }

    @Test("malformed replies are errors", arguments: ["25\r\n", "abc\r\n", "250x\r\n", "650 hi\r\n", "150 hi\r\n"])
    func malformed(_ s: String) {
        let b = Array(s.utf8)
        b.withUnsafeBytes { p in
            _ = #expect(throws: ReplyParser.Failure.self) { try ReplyParser.line(p, from: 0) }
        }
    }

    @Test("Reply renders its code, status and every line")
    func render() {
        #expect(Reply(550, EnhancedStatus(5, 7, 1), lines: ["a", "b"]).wire == "550-5.7.1 a\r\n550 5.7.1 b\r\n")
        #expect(Reply.startData.wire == "354 End data with <CR><LF>.<CR><LF>\r\n")
    }

    @Test("reply text cannot smuggle a line break")
    func noInjection() {
        #expect(Reply(550, EnhancedStatus(5, 1, 1), "no\r\n250 ok").wire == "550 5.1.1 no  250 ok\r\n")
    }
}
