// The byte-level coding of IPC frames: big-endian integers, length-prefixed byte strings and
// UTF-8 strings, counted lists. The writer appends to a frame; the reader checks every length
// against what is left and every limit against `IPCLimits` before it allocates anything, so a
// hostile peer's frame can cost at most its own size.

/// Bounds every field of a frame: what a receiver accepts at most (larger is `tooLong`).
public enum IPCLimits {
    /// The largest frame (type byte and payload): a body chunk and its header, with room.
    public static let frame = 256 * 1024
    /// The largest body chunk in a `messageChunk` (smtp streams the body in chunks this size).
    public static let chunk = 64 * 1024
    /// An address, a user name, a domain, a path (RFC 5321 allows 256 octets for a path; IDN and
    /// quoted local parts stay well within this).
    public static let name = 1024
    /// A password (AUTH PLAIN's whole decoded response is at most this).
    public static let password = 1024
    /// Free text: a reply line, a reason, a trace header block.
    public static let text = 64 * 1024
    /// Items in any list (recipients of a message, destinations of one recipient, argv).
    public static let items = 1000
}

/// Appends the fields of one frame.
public struct FrameWriter {
    public private(set) var bytes: [UInt8]

    /// Starts a frame of `type`; the length is filled in by `finish()`.
    public init(type: UInt8, capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity + 5)
        bytes += [0, 0, 0, 0, type]
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xff)] }
    public mutating func u32(_ v: UInt32) {
        bytes += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }
    public mutating func u64(_ v: UInt64) {
        u32(UInt32(v >> 32))
        u32(UInt32(v & 0xffff_ffff))
    }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func data<C: Collection>(_ v: C) where C.Element == UInt8 {
        u32(UInt32(v.count))
        bytes += v
    }
    public mutating func string(_ v: String) { data(v.utf8) }
    public mutating func count(_ n: Int) { u16(UInt16(n)) }

    /// The frame, its length prefix set.
    public mutating func finish() -> [UInt8] {
        let n = UInt32(bytes.count - 4)
        bytes[0] = UInt8(n >> 24)
        bytes[1] = UInt8((n >> 16) & 0xff)
        bytes[2] = UInt8((n >> 8) & 0xff)
        bytes[3] = UInt8(n & 0xff)
        return bytes
    }
}

/// Reads the fields of one frame's payload, in order; any field that does not fit what is left,
/// or breaks a limit, throws.
public struct FrameReader: ~Copyable {
    let base: UnsafeRawBufferPointer
    var at: Int

    public init(_ payload: UnsafeRawBufferPointer) {
        base = payload
        at = 0
    }

    public var remaining: Int { base.count - at }

    mutating func take(_ n: Int, _ field: StaticString) throws(IPCError) -> UnsafeRawBufferPointer {
        guard n <= remaining else { throw .truncated(field: "\(field)") }
        defer { at += n }
        return UnsafeRawBufferPointer(rebasing: base[at..<(at + n)])
    }

    public mutating func u8(_ field: StaticString) throws(IPCError) -> UInt8 { try take(1, field)[0] }

    public mutating func bool(_ field: StaticString) throws(IPCError) -> Bool {
        switch try u8(field) {
        case 0: return false
        case 1: return true
        case let v: throw .badValue(field: "\(field)", value: UInt64(v))
        }
    }

    public mutating func u16(_ field: StaticString) throws(IPCError) -> UInt16 {
        let b = try take(2, field)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    public mutating func u32(_ field: StaticString) throws(IPCError) -> UInt32 {
        let b = try take(4, field)
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }

    public mutating func u64(_ field: StaticString) throws(IPCError) -> UInt64 {
        let hi = try u32(field)
        return UInt64(hi) << 32 | UInt64(try u32(field))
    }

    public mutating func i64(_ field: StaticString) throws(IPCError) -> Int64 { Int64(bitPattern: try u64(field)) }

    /// A byte string of at most `limit` bytes.
    public mutating func data(_ field: StaticString, limit: Int) throws(IPCError) -> [UInt8] {
        let n = Int(try u32(field))
        guard n <= limit else { throw .tooLong(field: "\(field)", length: n, limit: limit) }
        return Array(try take(n, field))
    }

    /// A UTF-8 string of at most `limit` bytes, without NUL (no field of ours may carry one: a
    /// NUL cut short in a C call or a log line is how a check and a use disagree).
    public mutating func string(_ field: StaticString, limit: Int) throws(IPCError) -> String {
        let n = Int(try u32(field))
        guard n <= limit else { throw .tooLong(field: "\(field)", length: n, limit: limit) }
        let b = try take(n, field)
        guard !b.contains(0), let s = String(validating: b, as: UTF8.self) else { throw .badText(field: "\(field)") }
        return s
    }

    /// A list's item count, at most `IPCLimits.items`.
    public mutating func count(_ field: StaticString, limit: Int = IPCLimits.items) throws(IPCError) -> Int {
        let n = Int(try u16(field))
        guard n <= limit else { throw .tooLong(field: "\(field)", length: n, limit: limit) }
        return n
    }

    /// Nothing may follow the last field.
    public func end() throws(IPCError) {
        guard remaining == 0 else { throw .trailingBytes(remaining) }
    }
}
