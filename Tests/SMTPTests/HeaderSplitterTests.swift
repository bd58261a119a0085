// The header splitter fed every message split at every byte: the same header section and body.
import SMTP
import Testing

@Suite("HeaderSplitter")
struct HeaderSplitterTests {
    func split(_ m: [UInt8], at cuts: [Int], limit: Int = 1 << 20) -> (header: [UInt8], body: [UInt8], complete: Bool, oversized: Bool) {
        var s = HeaderSplitter(limit: limit)
        var body: [UInt8] = []
        var from = 0
        for cut in cuts + [m.count] where cut >= from {
            let piece = Array(m[from..<cut])
            let at = piece.withUnsafeBytes { s.take($0) }
            if !s.isOversized { body += piece[at...] }
            from = cut
        }
        return (s.header, body, s.isComplete, s.isOversized)
    }

    @Test("split at every byte and every pair of bytes, the header section and body are the same")
    func everyByte() {
        let cases: [(String, String)] = [
            ("From: a\r\nTo: b\r\n\r\n", "body\r\n\r\nmore\r\n"),
            ("Subject: x\n\n", "bare LF\n"),
            ("\r\n", "no header at all\r\n"),
            ("X: folded\r\n continued\r\n\r\n", ""),
            ("X: a\r\r\n\r\n", "CR CR LF is not an empty line\r\n"),
        ]
        for (h, b) in cases {
            let m = Array((h + b).utf8)
            for i in 0...m.count {
                for j in stride(from: i, through: m.count, by: max(1, m.count / 7)) {
                    let r = split(m, at: [i, j])
                    #expect(r.header == Array(h.utf8) && r.body == Array(b.utf8) && r.complete, "\(h.debugDescription) cut at \(i), \(j)")
                }
            }
        }
        // No empty line: everything is header, and it is not complete.
        let r = split(Array("From: a\r\nTo: b\r\n".utf8), at: [3])
        #expect(r.header == Array("From: a\r\nTo: b\r\n".utf8) && r.body.isEmpty && !r.complete)
    }

    @Test("a header section past the limit is marked, and keeps nothing")
    func oversized() {
        let m = Array(("X: " + String(repeating: "a", count: 100) + "\r\n\r\nbody").utf8)
        let r = split(m, at: [50], limit: 64)
        #expect(r.oversized && r.header.isEmpty)
        let ok = split(m, at: [50], limit: 200)
        #expect(!ok.oversized && ok.complete && ok.body == Array("body".utf8))
    }
}
