// The spool's record format (see docs/spool.md). Sans-IO: encoding to bytes and decoding from
// bytes, with a checksum per record so a torn write is detected.
//
//   record  = magic u32 "TRN1" | length u32 (of the whole record) | crc32c u32 (of type+payload)
//             | type u8 | payload
//   integers little-endian; strings as u32 length + UTF-8 bytes.

/// One delivery a message owes: an original recipient expanded to a destination.
public struct SpoolDelivery: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case mailbox = 1, remote = 2, pipe = 3
    }
    public var kind: Kind
    /// The original RCPT TO address.
    public var recipient: String
    /// mailbox: `user@domain`; remote: the address; pipe: the argument vector joined by NUL.
    public var destination: String
    public var notify: UInt8
    public var originalRecipient: String

    public init(kind: Kind, recipient: String, destination: String, notify: UInt8 = 0, originalRecipient: String = "") {
        self.kind = kind
        self.recipient = recipient
        self.destination = destination
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// An accepted message as the spool keeps it.
public struct SpoolMessage: Sendable, Equatable {
    public var id: UInt64
    /// Arrival time, seconds since the epoch.
    public var arrival: Int64
    public var sender: String
    public var body: [UInt8]
    public var deliveries: [SpoolDelivery]
    public var envelopeID: String
    /// RET=HDRS (1), RET=FULL (2), none (0).
    public var ret: UInt8
    /// 0 7bit, 1 8bitmime, 2 binarymime; bit 7: SMTPUTF8.
    public var bodyFlags: UInt8

    public init(
        id: UInt64, arrival: Int64, sender: String, body: [UInt8], deliveries: [SpoolDelivery], envelopeID: String = "",
        ret: UInt8 = 0, bodyFlags: UInt8 = 0
    ) {
        self.id = id
        self.arrival = arrival
        self.sender = sender
        self.body = body
        self.deliveries = deliveries
        self.envelopeID = envelopeID
        self.ret = ret
        self.bodyFlags = bodyFlags
    }
}

extension SpoolMessage {
    /// The message without its body: all the queue index needs, so a caller waiting for the group
    /// commit does not hold a second copy of the body.
    public var withoutBody: SpoolMessage {
        var m = self
        m.body = []
        return m
    }
}

/// The outcome of one delivery attempt.
public struct SpoolStatus: Sendable, Equatable {
    public enum State: UInt8, Sendable {
        case delivered = 1
        /// Permanently failed (bounced).
        case failed = 2
        /// Temporarily failed; try again at `nextAttempt`.
        case deferred = 3
        /// Deferred, and the sender has been told of the delay (a delay DSN is sent once).
        case deferredWarned = 4

        /// Still to be delivered.
        public var isDeferred: Bool { self == .deferred || self == .deferredWarned }
    }
    public var id: UInt64
    public var delivery: UInt32
    public var state: State
    public var attempts: UInt32
    /// Seconds since the epoch.
    public var nextAttempt: Int64
    public var reason: String

    public init(id: UInt64, delivery: UInt32, state: State, attempts: UInt32 = 1, nextAttempt: Int64 = 0, reason: String = "") {
        self.id = id
        self.delivery = delivery
        self.state = state
        self.attempts = attempts
        self.nextAttempt = nextAttempt
        self.reason = reason
    }
}

public enum SpoolRecord: Sendable, Equatable {
    case message(SpoolMessage)
    case status(SpoolStatus)

    static let magic: UInt32 = 0x314E_5254  // "TRN1" little-endian
    static let headerSize = 13

    enum TypeCode: UInt8 {
        case message = 1, status = 2
    }

    // MARK: Encoding

    /// Appends the encoded record to `out`.
    public func encode(into out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: Self.headerSize))
        switch self {
        case .message(let m):
            out[start + 12] = TypeCode.message.rawValue
            put64(&out, m.id)
            put64(&out, UInt64(bitPattern: m.arrival))
            putString(&out, m.sender)
            putString(&out, m.envelopeID)
            out.append(m.ret)
            out.append(m.bodyFlags)
            put32(&out, UInt32(m.deliveries.count))
            for d in m.deliveries {
                out.append(d.kind.rawValue)
                putString(&out, d.recipient)
                putString(&out, d.destination)
                out.append(d.notify)
                putString(&out, d.originalRecipient)
            }
            put64(&out, UInt64(m.body.count))
            out.append(contentsOf: m.body)
        case .status(let s):
            out[start + 12] = TypeCode.status.rawValue
            put64(&out, s.id)
            put32(&out, s.delivery)
            out.append(s.state.rawValue)
            put32(&out, s.attempts)
            put64(&out, UInt64(bitPattern: s.nextAttempt))
            putString(&out, s.reason)
        }
        let length = UInt32(out.count - start)
        let crc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + 12)...])) }
        set32(&out, start, Self.magic)
        set32(&out, start + 4, length)
        set32(&out, start + 8, crc)
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    // MARK: Decoding

    public enum DecodeResult: Equatable {
        case record(SpoolRecord, length: Int)
        /// Not enough bytes for a whole record (a torn tail, or a partial read).
        case incomplete
        /// Bad magic, length or checksum: the log is damaged here.
        case corrupt(String)
    }

    /// Decodes the record at the start of `b`. With `skipBody` a message record comes back with an
    /// empty body (recovery only needs the envelope; the checksum still covers every byte).
    public static func decode(_ b: UnsafeRawBufferPointer, skipBody: Bool = false) -> DecodeResult {
        guard b.count >= headerSize else { return .incomplete }
        guard get32(b, 0) == magic else { return .corrupt("bad magic") }
        let length = Int(get32(b, 4))
        guard length >= headerSize + 1, length <= 1 << 30 else { return .corrupt("bad length \(length)") }
        guard b.count >= length else { return .incomplete }
        let body = UnsafeRawBufferPointer(rebasing: b[12..<length])
        guard CRC32C.checksum(body) == get32(b, 8) else { return .corrupt("checksum mismatch") }
        var r = Reader(b: b, i: 13, end: length)
        do {
            switch TypeCode(rawValue: b[12]) {
            case .message:
                let id = try r.u64()
                let arrival = Int64(bitPattern: try r.u64())
                let sender = try r.string()
                let envid = try r.string()
                let ret = try r.u8()
                let flags = try r.u8()
                let n = Int(try r.u32())
                guard n <= 100_000 else { return .corrupt("too many deliveries") }
                var deliveries: [SpoolDelivery] = []
                deliveries.reserveCapacity(n)
                for _ in 0..<n {
                    guard let kind = SpoolDelivery.Kind(rawValue: try r.u8()) else { return .corrupt("bad delivery kind") }
                    let rcpt = try r.string()
                    let dest = try r.string()
                    let notify = try r.u8()
                    let orcpt = try r.string()
                    deliveries.append(SpoolDelivery(kind: kind, recipient: rcpt, destination: dest, notify: notify, originalRecipient: orcpt))
                }
                let bodyLength = Int(try r.u64())
                let body: [UInt8]
                if skipBody {
                    guard bodyLength >= 0, r.i + bodyLength <= r.end else { return .corrupt("record shorter than its fields") }
                    r.i += bodyLength
                    body = []
                } else {
                    body = try r.bytes(bodyLength)
                }
                guard r.i == length else { return .corrupt("trailing bytes in a message record") }
                return .record(
                    .message(SpoolMessage(id: id, arrival: arrival, sender: sender, body: body, deliveries: deliveries, envelopeID: envid, ret: ret, bodyFlags: flags)),
                    length: length)
            case .status:
                let id = try r.u64()
                let delivery = try r.u32()
                guard let state = SpoolStatus.State(rawValue: try r.u8()) else { return .corrupt("bad status") }
                let attempts = try r.u32()
                let next = Int64(bitPattern: try r.u64())
                let reason = try r.string()
                guard r.i == length else { return .corrupt("trailing bytes in a status record") }
                return .record(.status(SpoolStatus(id: id, delivery: delivery, state: state, attempts: attempts, nextAttempt: next, reason: reason)), length: length)
            case nil:
                return .corrupt("unknown record type \(b[12])")
            }
        } catch {
            return .corrupt("record shorter than its fields")
        }
    }
}

struct ShortRecord: Error {}

struct Reader {
    let b: UnsafeRawBufferPointer
    var i: Int
    let end: Int

    mutating func u8() throws(ShortRecord) -> UInt8 {
        guard i + 1 <= end else { throw ShortRecord() }
        defer { i += 1 }
        return b[i]
    }
    mutating func u32() throws(ShortRecord) -> UInt32 {
        guard i + 4 <= end else { throw ShortRecord() }
        defer { i += 4 }
        return get32(b, i)
    }
    mutating func u64() throws(ShortRecord) -> UInt64 {
        guard i + 8 <= end else { throw ShortRecord() }
        defer { i += 8 }
        return UInt64(get32(b, i)) | UInt64(get32(b, i + 4)) << 32
    }
    mutating func bytes(_ n: Int) throws(ShortRecord) -> [UInt8] {
        guard n >= 0, i + n <= end else { throw ShortRecord() }
        defer { i += n }
        return Array(b[i..<(i + n)])
    }
    mutating func string() throws(ShortRecord) -> String {
        let n = Int(try u32())
        guard n <= end - i else { throw ShortRecord() }
        defer { i += n }
        return String(decoding: b[i..<(i + n)], as: UTF8.self)
    }
}

@inline(__always) func get32(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt32 {
    UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
}

@inline(__always) func set32(_ out: inout [UInt8], _ i: Int, _ v: UInt32) {
    out[i] = UInt8(truncatingIfNeeded: v)
    out[i + 1] = UInt8(truncatingIfNeeded: v >> 8)
    out[i + 2] = UInt8(truncatingIfNeeded: v >> 16)
    out[i + 3] = UInt8(truncatingIfNeeded: v >> 24)
}

@inline(__always) func put32(_ out: inout [UInt8], _ v: UInt32) {
    out.append(UInt8(truncatingIfNeeded: v))
    out.append(UInt8(truncatingIfNeeded: v >> 8))
    out.append(UInt8(truncatingIfNeeded: v >> 16))
    out.append(UInt8(truncatingIfNeeded: v >> 24))
}

@inline(__always) func put64(_ out: inout [UInt8], _ v: UInt64) {
    put32(&out, UInt32(truncatingIfNeeded: v))
    put32(&out, UInt32(truncatingIfNeeded: v >> 32))
}

func putString(_ out: inout [UInt8], _ s: String) {
    var s = s
    s.withUTF8 { u in
        put32(&out, UInt32(u.count))
        out.append(contentsOf: u)
    }
}
