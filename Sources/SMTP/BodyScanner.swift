// The DATA body scanner (RFC 5321 §4.1.1.4, §4.5.2): finds the end marker <CRLF>.<CRLF>,
// removes transparency dots, enforces strict CRLF and the 1000-byte text line limit.
// It works over the read buffer in place: message bytes come out as ranges of the input,
// split only where a stuffed dot is removed, so no line is ever copied.

public struct BodyScanner: Sendable, Equatable {
    /// Maximum text line length including CRLF, not counting a transparency dot.
    public static let maxLineLength = 1000

    public enum Step: Equatable, Sendable {
        /// Message bytes `range`; continue scanning at `next`.
        case data(Range<Int>, next: Int)
        /// End of data found: `range` holds the last message bytes (possibly empty); input resumes at `next`.
        case end(Range<Int>, next: Int)
        /// Everything before `next` is consumed; `range` holds message bytes. More input is needed.
        case needMore(Range<Int>, next: Int)
        /// A bare CR or LF at index `at`.
        case badLineEnding(at: Int)
    }

    var atLineStart = true
    var lineLength = 0
    /// A line longer than `maxLineLength` was seen.
    public private(set) var sawLongLine = false

    public init() {}

    public mutating func reset() {
        atLineStart = true
        lineLength = 0
        sawLongLine = false
    }

    /// Scans `b[start...]`. Bytes not consumed (at most two: a dot or a CR whose meaning depends on
    /// the next byte) must be presented again with more input.
    public mutating func scan(_ b: UnsafeRawBufferPointer, from start: Int) -> Step {
        let n = b.count
        var i = start
        let chunkStart = start
        while true {
            if atLineStart {
                if i >= n { return .needMore(chunkStart..<i, next: i) }
                if b[i] == UInt8(ascii: ".") {
                    guard i + 1 < n else { return .needMore(chunkStart..<i, next: i) }
                    if b[i + 1] == CR {
                        guard i + 2 < n else { return .needMore(chunkStart..<i, next: i) }
                        guard b[i + 2] == LF else { return .badLineEnding(at: i + 1) }
                        atLineStart = true
                        lineLength = 0
                        return .end(chunkStart..<i, next: i + 3)
                    }
                    // Transparency: drop the leading dot; the rest of the line is data.
                    atLineStart = false
                    return .data(chunkStart..<i, next: i + 1)
                }
                atLineStart = false
            }
            // Inside a line: find its LF.
            if i >= n { return .needMore(chunkStart..<i, next: i) }
            guard let lf = b.firstIndex(of: LF, from: i, to: n) else {
                // No line end yet: everything is data except a trailing CR.
                var end = n
                if b[n - 1] == CR { end = n - 1 }
                if let cr = b.firstIndex(of: CR, from: i, to: end) { return .badLineEnding(at: cr) }
                lineLength += end - i
                if lineLength + 2 > Self.maxLineLength { sawLongLine = true }
                return .needMore(chunkStart..<end, next: end)
            }
            guard lf > i, b[lf - 1] == CR else { return .badLineEnding(at: lf) }
            if let cr = b.firstIndex(of: CR, from: i, to: lf - 1) { return .badLineEnding(at: cr) }
            lineLength += lf + 1 - i
            if lineLength > Self.maxLineLength { sawLongLine = true }
            lineLength = 0
            atLineStart = true
            i = lf + 1
        }
    }
}

/// Line endings of BDAT content that is text (7bit or 8BITMIME, not BINARYMIME): it may leave as
/// DATA, where a bare CR or LF would be read differently by the next hop (`<CR>.<CR><LF>` ends a
/// message for some), so it is held to DATA's rule — every CR followed by LF, every LF preceded by
/// CR. The one place BDAT text is checked; `BodyScanner` is DATA's.
public struct ChunkLineCheck: Sendable, Equatable {
    /// The last byte seen was a CR (its LF may start the next chunk).
    var pendingCR = false

    public init() {}

    /// Checks `b[r]`, the next bytes of the content: false at a bare CR or LF.
    public mutating func scan(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Bool {
        var i = r.lowerBound
        let n = r.upperBound
        guard i < n else { return true }
        if pendingCR {
            guard b[i] == LF else { return false }
            pendingCR = false
            i += 1
        }
        while i < n {
            guard let lf = b.firstIndex(of: LF, from: i, to: n) else {
                // No LF: a CR may only be the last byte (its LF comes next).
                let end = b[n - 1] == CR ? n - 1 : n
                if b.firstIndex(of: CR, from: i, to: end) != nil { return false }
                pendingCR = end < n
                return true
            }
            guard lf > i, b[lf - 1] == CR else { return false }
            if b.firstIndex(of: CR, from: i, to: lf - 1) != nil { return false }
            i = lf + 1
        }
        return true
    }

    /// The content ended: a last CR without its LF is bare.
    public var isComplete: Bool { !pendingCR }
}
