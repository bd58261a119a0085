// Splits a message as it streams in into its header section (kept, bounded) and the rest (passed
// on): the header is what the end of data still has to read and rewrite (loop detection, our own
// Authentication-Results removed, DKIM signing), the body only has to reach the spool. Sans-IO:
// fed the body's bytes in any pieces, it says where the header section ends (after its empty
// line; CRLF or a bare LF alike).

public struct HeaderSplitter: Sendable {
    /// The header section's bytes so far, with its empty line once `isComplete`.
    public private(set) var header: [UInt8] = []
    /// The empty line ending the header section was seen.
    public private(set) var isComplete = false
    /// The header section grew past `limit` without ending: the message is refused.
    public private(set) var isOversized = false
    public let limit: Int

    enum State { case lineStart, lineStartCR, inLine }
    var state = State.lineStart

    public init(limit: Int = 1024 * 1024) { self.limit = limit }

    /// Takes the next bytes; returns the offset in `bytes` where the body begins (bytes.count
    /// when all of them belong to the header section, 0 once it is complete). Past `limit` the
    /// header keeps nothing more and the rest is dropped (the message is refused at the end).
    public mutating func take(_ bytes: UnsafeRawBufferPointer) -> Int {
        if isComplete { return 0 }
        if isOversized { return bytes.count }
        var end: Int? = nil
        for i in 0..<bytes.count {
            let b = bytes[i]
            switch state {
            case .inLine: if b == 10 { state = .lineStart }
            case .lineStart:
                if b == 10 { end = i + 1 } else if b == 13 { state = .lineStartCR } else { state = .inLine }
            case .lineStartCR:
                if b == 10 { end = i + 1 } else { state = .inLine }
            }
            if end != nil { break }
        }
        let n = end ?? bytes.count
        if header.count + n > limit {
            isOversized = true
            header = []
            return bytes.count
        }
        header.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
        if end != nil { isComplete = true }
        return n
    }

    /// For the next message.
    public mutating func reset() {
        if header.capacity > 64 * 1024 { header = [] } else { header.removeAll(keepingCapacity: true) }
        isComplete = false
        isOversized = false
        state = .lineStart
    }
}
