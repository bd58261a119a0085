/// Builds the test message ternbench sends: RFC 5322 headers and 76-character text lines,
/// `size` bytes in all (at least the headers).
public enum MessageFactory {
    /// `messageID`: the Message-ID's contents (default `ternbench@localhost`).
    public static func message(size: Int, from: String, to: String, messageID: String = "ternbench@localhost") -> [UInt8] {
        var m = Array(
            """
            From: <\(from)>\r
            To: <\(to)>\r
            Subject: ternbench test message\r
            Message-ID: <\(messageID)>\r
            MIME-Version: 1.0\r
            Content-Type: text/plain; charset=us-ascii\r
            \r

            """.utf8)
        let line = Array("The quick brown fox jumps over the lazy dog. 0123456789 ABCDEFGHIJKLMNOPQRS\r\n".utf8)
        var lines = 0
        while m.count + line.count <= size {
            m += line
            lines += 1
        }
        var rest = size - m.count
        if rest > 0, rest < 3, lines > 0 {
            // Too little room for a CRLF-terminated filler line: widen the last line instead.
            m.removeLast(line.count)
            rest += line.count
        }
        if rest >= 3 {
            m += Array(repeating: UInt8(ascii: "x"), count: rest - 2)
            m += [13, 10]
        }
        return m
    }
}
