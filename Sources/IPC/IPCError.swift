// What a receiver finds wrong with a peer's frames. Any of these closes the channel: the side
// that holds secrets or the spool never tries to make sense of a peer that sent one.

public enum IPCError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A frame's length prefix is 0 (no type byte) or over `IPCLimits.frame`.
    case badLength(Int)
    case unknownType(UInt8)
    /// A field runs past the end of its frame.
    case truncated(field: String)
    /// Bytes left after a message's last field.
    case trailingBytes(Int)
    case tooLong(field: String, length: Int, limit: Int)
    /// Not UTF-8, or a NUL inside.
    case badText(field: String)
    /// A value outside its field's range (an enum tag, a reply code, a bool that is not 0 or 1).
    case badValue(field: String, value: UInt64)
    /// The peer speaks another protocol version.
    case versionMismatch(peer: UInt16, ours: UInt16)
    /// A well-formed message this peer may not send now (or at all): the wrong order, a
    /// request id already in use, an answer to nothing asked.
    case outOfOrder(String)
    /// The stream ended inside a frame.
    case endedInFrame(Int)

    public var description: String {
        switch self {
        case .badLength(let n): return "frame length \(n) out of range (1…\(IPCLimits.frame))"
        case .unknownType(let t): return "unknown message type \(t)"
        case .truncated(let f): return "\(f) runs past the end of the frame"
        case .trailingBytes(let n): return "\(n) bytes after the last field"
        case .tooLong(let f, let n, let l): return "\(f) is \(n) long (at most \(l))"
        case .badText(let f): return "\(f) is not UTF-8 text without NUL"
        case .badValue(let f, let v): return "\(f) has the value \(v)"
        case .versionMismatch(let p, let o): return "peer speaks version \(p), this is version \(o)"
        case .outOfOrder(let why): return "out of order: \(why)"
        case .endedInFrame(let n): return "the stream ended \(n) bytes into a frame"
        }
    }
}
