// The spool's record format (see docs/spool.md). Sans-IO: encoding to bytes and decoding from
// bytes. Each record starts with a header that can be found and trusted on its own — its own
// checksum, the record's length and the message id — so recovery resynchronises after damage and
// names what it lost; the payload has a checksum of its own. Records start at multiples of 8.
//
//   header  = magic u32 "TRN2" | length u32 (whole record, padded to 8) | type u8 | 0 u8 | 0 u16
//             | id u64 | header-crc u32 (of the 20 bytes before it)
//             | state u32 (0 live; all ones once a message is finished: the only word ever rewritten)
//             | payload-crc u32 (of the bytes after the header, padding included)
//   integers little-endian; strings as u32 length + UTF-8 bytes.
//   message = arrival i64 | sender str | envid str | ret u8 | body-flags u8 | count u32
//             | count × (kind u8 | recipient str | destination str | notify u8 | orcpt str)
//             | body-length u64 | body
//   status  = delivery u32 | version u64 | state u8 | attempts u32 | next-attempt i64 | reason str
//
// Both checksums are CRC-32C seeded with the spool's key, a random value kept in the first record
// of every segment (which alone is checksummed unseeded). A message body can hold any bytes,
// spool records included; without the key they never pass for records when recovery looks for
// the next header after damage.
//
// Version 1 records ("TRN1": magic | length | crc | type | payload, unaligned, no id in the
// header) are still read, so a spool written by an earlier ternd is taken over (docs/spool.md).

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
        /// Finished without a delivery or a report: a message withdrawn because its sender was not
        /// told it was accepted (the spool did not answer in time), or removed by the operator.
        case removed = 5

        /// Still to be delivered.
        public var isDeferred: Bool { self == .deferred || self == .deferredWarned }
        /// Nothing more will be attempted.
        public var isFinal: Bool { !isDeferred }
    }
    public var id: UInt64
    public var delivery: UInt32
    public var state: State
    public var attempts: UInt32
    /// Seconds since the epoch.
    public var nextAttempt: Int64
    public var reason: String
    /// Order among the statuses of a spool, set by `Spool.record` (increasing, across restarts):
    /// of two statuses of one delivery the higher version is in force, wherever each lies in the
    /// log (compaction copies a status forward with its version; a copy is never taken for newer).
    public var version: UInt64 = 0

    public init(id: UInt64, delivery: UInt32, state: State, attempts: UInt32 = 1, nextAttempt: Int64 = 0, reason: String = "", version: UInt64 = 0) {
        self.version = version
        self.id = id
        self.delivery = delivery
        self.state = state
        self.attempts = attempts
        self.nextAttempt = nextAttempt
        self.reason = reason
    }
}

/// The seeds of a spool's record checksums (see the format above).
public struct SpoolKey: Sendable, Equatable, Hashable {
    public var header: UInt32
    public var payload: UInt32

    public init(header: UInt32, payload: UInt32) {
        self.header = header
        self.payload = payload
    }

    public static func random() -> SpoolKey {
        var g = SystemRandomNumberGenerator()
        return SpoolKey(header: g.next(), payload: g.next())
    }

    /// The key of the segment-start record itself (it must be readable before the key is known).
    static let unkeyed = SpoolKey(header: 0, payload: 0)
}

public enum SpoolRecord: Sendable, Equatable {
    case message(SpoolMessage)
    case status(SpoolStatus)
    /// The first record of every segment: the spool's key and the segment's number.
    case segmentStart(key: SpoolKey, segment: UInt64)
    /// The last record of a segment closed in good order: after it, no torn write is possible.
    case segmentEnd

    static let magic: UInt32 = 0x324E_5254  // "TRN2" little-endian
    static let magicV1: UInt32 = 0x314E_5254  // "TRN1"
    public static let headerSize = 32
    /// Offset of the state word in the header.
    public static let stateOffset = 24
    /// The state word of a finished message: every bit set, as far from live (0) as a word can be,
    /// so a few flipped bits never turn one into the other (the word is read by majority).
    public static let deadState: UInt32 = 0xFFFF_FFFF
    static let maxLength = 1 << 30

    enum TypeCode: UInt8 {
        case message = 1, status = 2, segmentEnd = 3, segmentStart = 4, padding = 5
    }

    // MARK: Encoding

    /// Appends the encoded record to `out` (at a multiple of 8 from where `out` started).
    public func encode(into out: inout [UInt8], key: SpoolKey) {
        switch self {
        case .message(let m):
            Self.encodeMessage(m, bodyParts: [m.body], into: &out, key: key)
        case .status(let s):
            let start = Self.beginRecord(&out)
            put32(&out, s.delivery)
            put64(&out, s.version)
            out.append(s.state.rawValue)
            put32(&out, s.attempts)
            put64(&out, UInt64(bitPattern: s.nextAttempt))
            putString(&out, s.reason)
            Self.endRecord(&out, start: start, type: .status, id: s.id, key: key)
        case .segmentStart(let k, let segment):
            let start = Self.beginRecord(&out)
            put32(&out, k.header)
            put32(&out, k.payload)
            Self.endRecord(&out, start: start, type: .segmentStart, id: segment, key: .unkeyed)
        case .segmentEnd:
            let start = Self.beginRecord(&out)
            Self.endRecord(&out, start: start, type: .segmentEnd, id: 0, key: key)
        }
    }

    /// A message record whose body is the concatenation of `bodyParts` (`m.body` is not used), so
    /// a caller holding the body in pieces does not join them first.
    public static func encodeMessage(_ m: SpoolMessage, bodyParts: [[UInt8]], into out: inout [UInt8], key: SpoolKey) {
        let bodyLength = bodyParts.reduce(0) { $0 + $1.count }
        out.reserveCapacity(out.count + headerSize + 256 + bodyLength)
        let start = encodeEnvelope(m, bodyLength: bodyLength, into: &out)
        for part in bodyParts { out.append(contentsOf: part) }
        endRecord(&out, start: start, type: .message, id: m.id, key: key)
    }

    /// A message record whose body ends with `staged` bytes that are not in memory (a body
    /// streamed into an unnamed file as it arrived, with its checksum): the record is `head`,
    /// then those bytes, then `tail` (padding), with the checksum of the whole already in the
    /// header. Written as it stands, it is the same record `encodeMessage` makes.
    public static func encodeMessage(_ m: SpoolMessage, bodyParts: [[UInt8]], staged: (length: Int, checksum: UInt32), key: SpoolKey) -> (head: [UInt8], tail: [UInt8]) {
        var out: [UInt8] = []
        let bodyLength = bodyParts.reduce(0) { $0 + $1.count } + staged.length
        out.reserveCapacity(headerSize + 256 + bodyLength - staged.length)
        _ = encodeEnvelope(m, bodyLength: bodyLength, into: &out)
        for part in bodyParts { out.append(contentsOf: part) }
        let tail = [UInt8](repeating: 0, count: (8 - (out.count + staged.length) % 8) % 8)
        var pcrc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[headerSize...]), seed: key.payload) }
        pcrc = CRC32C.combine(pcrc, staged.checksum, length: staged.length)
        pcrc = tail.withUnsafeBytes { CRC32C.checksum($0, seed: pcrc) }
        setHeader(&out, start: 0, length: out.count + staged.length + tail.count, type: .message, id: m.id, key: key, payloadChecksum: pcrc)
        return (out, tail)
    }

    /// The record's header space and the envelope fields, up to the body's length; returns
    /// where the record starts.
    static func encodeEnvelope(_ m: SpoolMessage, bodyLength: Int, into out: inout [UInt8]) -> Int {
        let start = beginRecord(&out)
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
        put64(&out, UInt64(bodyLength))
        return start
    }

    static func beginRecord(_ out: inout [UInt8]) -> Int {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: headerSize))
        return start
    }

    static func endRecord(_ out: inout [UInt8], start: Int, type: TypeCode, id: UInt64, key: SpoolKey) {
        while (out.count - start) % 8 != 0 { out.append(0) }
        let pcrc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + headerSize)...]), seed: key.payload) }
        setHeader(&out, start: start, length: out.count - start, type: type, id: id, key: key, payloadChecksum: pcrc)
    }

    static func setHeader(_ out: inout [UInt8], start: Int, length: Int, type: TypeCode, id: UInt64, key: SpoolKey, payloadChecksum pcrc: UInt32) {
        set32(&out, start, magic)
        set32(&out, start + 4, UInt32(length))
        out[start + 8] = type.rawValue
        set32(&out, start + 12, UInt32(truncatingIfNeeded: id))
        set32(&out, start + 16, UInt32(truncatingIfNeeded: id >> 32))
        let hcrc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start..<(start + 20)]), seed: key.header) }
        set32(&out, start + 20, hcrc)
        set32(&out, start + 24, 0)
        set32(&out, start + 28, pcrc)
    }

    /// The header of a padding record covering `length` bytes (a multiple of 8): written over the
    /// start of a record whose write failed and could not be cut back, so recovery skips it.
    public static func paddingHeader(length: Int, key: SpoolKey) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: headerSize)
        set32(&out, 0, magic)
        set32(&out, 4, UInt32(length))
        out[8] = TypeCode.padding.rawValue
        let hcrc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<20]), seed: key.header) }
        set32(&out, 20, hcrc)
        return out
    }

    public func encoded(key: SpoolKey) -> [UInt8] {
        var out: [UInt8] = []
        encode(into: &out, key: key)
        return out
    }

    // MARK: Decoding

    /// What a record's header says, trusted because its own checksum matched.
    public struct Header: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case message, status, segmentEnd, segmentStart, padding }
        public var kind: Kind
        public var id: UInt64
        public var length: Int
        /// The message was finished and its record marked so (only message records are).
        public var isDead: Bool
        /// The state word was neither live nor dead exactly: damaged, and read by majority (at
        /// least 16 bits set: dead).
        public var stateDamaged: Bool
        /// Damaged past telling (8 to 24 bits set): read as `isDead` says, but it may be wrong.
        public var stateAmbiguous: Bool
    }

    public enum HeaderResult: Equatable {
        case header(Header)
        /// Fewer bytes than a header.
        case incomplete
        case invalid(String)
    }

    /// Reads and checks a version 2 header at the start of `b`. A segment-start header is checked
    /// unseeded whatever `key` is.
    public static func header(_ b: UnsafeRawBufferPointer, key: SpoolKey) -> HeaderResult {
        guard b.count >= headerSize else { return .incomplete }
        guard get32(b, 0) == magic else { return .invalid("bad magic") }
        let seed = b[8] == TypeCode.segmentStart.rawValue ? 0 : key.header
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[0..<20]), seed: seed) == get32(b, 20) else { return .invalid("header checksum mismatch") }
        let length = Int(get32(b, 4))
        guard length >= headerSize, length % 8 == 0, length <= maxLength else { return .invalid("bad length \(length)") }
        let kind: Header.Kind
        switch TypeCode(rawValue: b[8]) {
        case .message: kind = .message
        case .status: kind = .status
        case .segmentEnd: kind = .segmentEnd
        case .segmentStart: kind = .segmentStart
        case .padding: kind = .padding
        case nil: return .invalid("unknown record type \(b[8])")
        }
        let id = UInt64(get32(b, 12)) | UInt64(get32(b, 16)) << 32
        let state = get32(b, 24)
        let bits = state.nonzeroBitCount
        return .header(
            Header(
                kind: kind, id: id, length: length, isDead: kind == .message && bits >= 16, stateDamaged: state != 0 && state != deadState,
                stateAmbiguous: state != 0 && state != deadState && (8...24).contains(bits)))
    }

    public enum DecodeResult: Equatable {
        case record(SpoolRecord, length: Int)
        /// A finished message's record (only its header is read: the body may be gone).
        case dead(id: UInt64, length: Int)
        /// Bytes to skip: where a write failed and could not be cut back.
        case padding(length: Int)
        /// Not enough bytes for a whole record (a torn tail, or a partial read).
        case incomplete
        /// The log is damaged here. `header` is set when the header was intact (the record's
        /// extent and id are known; its payload is not).
        case corrupt(String, header: Header?)
    }

    /// Decodes the record at the start of `b`. With `skipBody` a message record comes back with an
    /// empty body (recovery only needs the envelope; the checksum still covers every byte).
    public static func decode(_ b: UnsafeRawBufferPointer, key: SpoolKey, skipBody: Bool = false) -> DecodeResult {
        let h: Header
        switch header(b, key: key) {
        case .incomplete: return .incomplete
        case .invalid(let why): return .corrupt(why, header: nil)
        case .header(let x): h = x
        }
        guard b.count >= h.length else { return .incomplete }
        if h.isDead { return .dead(id: h.id, length: h.length) }
        if h.kind == .padding { return .padding(length: h.length) }
        let payload = UnsafeRawBufferPointer(rebasing: b[headerSize..<h.length])
        let seed = h.kind == .segmentStart ? 0 : key.payload
        guard CRC32C.checksum(payload, seed: seed) == get32(b, 28) else { return .corrupt("checksum mismatch", header: h) }
        var r = Reader(b: b, i: headerSize, end: h.length)
        do {
            let record: SpoolRecord
            switch h.kind {
            case .message:
                guard case .message(var m)? = try decodeMessagePayload(&r, id: h.id, skipBody: skipBody) else { return .corrupt("bad message fields", header: h) }
                m.id = h.id
                record = .message(m)
            case .status:
                let delivery = try r.u32()
                let version = try r.u64()
                guard let state = SpoolStatus.State(rawValue: try r.u8()) else { return .corrupt("bad status", header: h) }
                let attempts = try r.u32()
                let next = Int64(bitPattern: try r.u64())
                let reason = try r.string()
                record = .status(SpoolStatus(id: h.id, delivery: delivery, state: state, attempts: attempts, nextAttempt: next, reason: reason, version: version))
            case .segmentEnd:
                record = .segmentEnd
            case .segmentStart:
                record = .segmentStart(key: SpoolKey(header: try r.u32(), payload: try r.u32()), segment: h.id)
            case .padding:
                return .padding(length: h.length)
            }
            // Only padding may follow the fields.
            guard r.end - r.i < 8, (r.i..<r.end).allSatisfy({ b[$0] == 0 }) else { return .corrupt("trailing bytes in a record", header: h) }
            return .record(record, length: h.length)
        } catch {
            return .corrupt("record shorter than its fields", header: h)
        }
    }

    /// The fields of a message after its id (shared by both versions); nil for a bad field.
    static func decodeMessagePayload(_ r: inout Reader, id: UInt64, skipBody: Bool) throws(ShortRecord) -> SpoolRecord? {
        let arrival = Int64(bitPattern: try r.u64())
        let sender = try r.string()
        let envid = try r.string()
        let ret = try r.u8()
        let flags = try r.u8()
        let n = Int(try r.u32())
        guard n <= 100_000 else { return nil }
        var deliveries: [SpoolDelivery] = []
        deliveries.reserveCapacity(n)
        for _ in 0..<n {
            guard let kind = SpoolDelivery.Kind(rawValue: try r.u8()) else { return nil }
            let rcpt = try r.string()
            let dest = try r.string()
            let notify = try r.u8()
            let orcpt = try r.string()
            deliveries.append(SpoolDelivery(kind: kind, recipient: rcpt, destination: dest, notify: notify, originalRecipient: orcpt))
        }
        let bodyLength = Int(try r.u64())
        let body: [UInt8]
        if skipBody {
            guard bodyLength >= 0, bodyLength <= r.end - r.i else { throw ShortRecord() }
            r.i += bodyLength
            body = []
        } else {
            body = try r.bytes(bodyLength)
        }
        return .message(SpoolMessage(id: id, arrival: arrival, sender: sender, body: body, deliveries: deliveries, envelopeID: envid, ret: ret, bodyFlags: flags))
    }

    // MARK: Version 1

    static let headerSizeV1 = 13

    /// Whether `b` starts with a version 1 record's magic (a segment written by an earlier ternd).
    static func isVersion1(_ b: UnsafeRawBufferPointer) -> Bool { b.count >= 4 && get32(b, 0) == magicV1 }

    /// Decodes a version 1 record ("TRN1", unaligned, id in the payload).
    static func decodeV1(_ b: UnsafeRawBufferPointer, skipBody: Bool = false) -> DecodeResult {
        guard b.count >= headerSizeV1 else { return .incomplete }
        guard get32(b, 0) == magicV1 else { return .corrupt("bad magic", header: nil) }
        let length = Int(get32(b, 4))
        guard length >= headerSizeV1 + 1, length <= maxLength else { return .corrupt("bad length \(length)", header: nil) }
        guard b.count >= length else { return .incomplete }
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[12..<length])) == get32(b, 8) else { return .corrupt("checksum mismatch", header: nil) }
        var r = Reader(b: b, i: 13, end: length)
        do {
            switch b[12] {
            case 1:
                let id = try r.u64()
                guard let m = try decodeMessagePayload(&r, id: id, skipBody: skipBody), r.i == length else { return .corrupt("bad message fields", header: nil) }
                return .record(m, length: length)
            case 2:
                let id = try r.u64()
                let delivery = try r.u32()
                guard let state = SpoolStatus.State(rawValue: try r.u8()), state.rawValue <= 4 else { return .corrupt("bad status", header: nil) }
                let attempts = try r.u32()
                let next = Int64(bitPattern: try r.u64())
                let reason = try r.string()
                guard r.i == length else { return .corrupt("trailing bytes in a status record", header: nil) }
                return .record(.status(SpoolStatus(id: id, delivery: delivery, state: state, attempts: attempts, nextAttempt: next, reason: reason)), length: length)
            default:
                return .corrupt("unknown record type \(b[12])", header: nil)
            }
        } catch {
            return .corrupt("record shorter than its fields", header: nil)
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

extension SpoolDelivery {
    /// The destination as people read it: an address, or a pipe as `|` and its arguments joined
    /// by spaces (the spool keeps them joined by NUL, which no log line or listing may show).
    public var shownDestination: String {
        kind == .pipe ? "|" + destination.split(separator: "\u{0}", omittingEmptySubsequences: false).joined(separator: " ") : destination
    }
}
