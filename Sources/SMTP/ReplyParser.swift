// Parsing of SMTP reply lines (RFC 5321 §4.2): `code [SP|-] text CRLF`, multi-line replies
// joined by the client state machine, enhanced status codes (RFC 3463) recognised in the text.

public struct ReplyLine: Equatable, Sendable {
    public var code: Int
    public var isLast: Bool
    /// The text after `code[ -]`, CRLF excluded.
    public var text: Range<Int>
    /// Index after the line's LF.
    public var next: Int
}

public enum ReplyParser {
    public enum Failure: Error, Equatable, Sendable {
        case malformed
        case tooLong
    }

    /// Parses one reply line at `start`. Returns nil when the line is not complete yet.
    public static func line(_ b: UnsafeRawBufferPointer, from start: Int, maxLength: Int = 4096) throws(Failure) -> ReplyLine? {
        let limit = min(b.count, start + maxLength)
        guard let lf = b.firstIndex(of: LF, from: start, to: limit) else {
            if b.count - start >= maxLength { throw .tooLong }
            return nil
        }
        var end = lf
        if end > start, b[end - 1] == CR { end -= 1 }
        guard end - start >= 3, isDigit(b[start]), isDigit(b[start + 1]), isDigit(b[start + 2]),
            (50...53).contains(b[start])
        else { throw .malformed }
        let code = Int(b[start] - 48) * 100 + Int(b[start + 1] - 48) * 10 + Int(b[start + 2] - 48)
        var isLast = true
        var textStart = start + 3
        if textStart < end {
            switch b[textStart] {
            case SP: isLast = true
            case UInt8(ascii: "-"): isLast = false
            default: throw .malformed
            }
            textStart += 1
        }
        return ReplyLine(code: code, isLast: isLast, text: textStart..<end, next: lf + 1)
    }

    /// An enhanced status code at the start of `text`, and where the rest of the text begins.
    public static func enhancedStatus(_ b: UnsafeRawBufferPointer, _ text: Range<Int>) -> (EnhancedStatus, Int)? {
        var i = text.lowerBound
        var parts: [Int] = []
        parts.reserveCapacity(3)
        for k in 0..<3 {
            var v = 0
            let s = i
            while i < text.upperBound, isDigit(b[i]), i - s < 3 {
                v = v * 10 + Int(b[i] - 48)
                i += 1
            }
            guard i > s else { return nil }
            parts.append(v)
            if k < 2 {
                guard i < text.upperBound, b[i] == UInt8(ascii: ".") else { return nil }
                i += 1
            }
        }
        guard (2...5).contains(parts[0]) else { return nil }
        if i < text.upperBound {
            guard b[i] == SP else { return nil }
            i += 1
        }
        return (EnhancedStatus(UInt8(parts[0]), UInt16(parts[1]), UInt16(parts[2])), i)
    }
}
