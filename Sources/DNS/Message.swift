// The DNS wire format (RFC 1035 §4, EDNS0 from RFC 6891): queries are encoded, responses decoded.
// Decoding is hardened: every length is checked against the bytes that are there, compression
// pointers must point backwards (so they cannot loop), names stay within 255 bytes, and counts
// that the message cannot hold are refused before anything is allocated for them.

/// A record type; unknown types are kept by number.
public struct RecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = RecordType(rawValue: 1)
    public static let ns = RecordType(rawValue: 2)
    public static let cname = RecordType(rawValue: 5)
    public static let soa = RecordType(rawValue: 6)
    public static let ptr = RecordType(rawValue: 12)
    public static let mx = RecordType(rawValue: 15)
    public static let txt = RecordType(rawValue: 16)
    public static let aaaa = RecordType(rawValue: 28)
    public static let opt = RecordType(rawValue: 41)
    public static let tlsa = RecordType(rawValue: 52)

    static let names: [(String, RecordType)] = [
        ("A", .a), ("NS", .ns), ("CNAME", .cname), ("SOA", .soa), ("PTR", .ptr), ("MX", .mx),
        ("TXT", .txt), ("AAAA", .aaaa), ("OPT", .opt), ("TLSA", .tlsa),
    ]

    /// `MX`, `mx`, `TYPE15`.
    public init?(name: String) {
        let u = name.uppercased()
        if let t = Self.names.first(where: { $0.0 == u }) { self = t.1; return }
        if u.hasPrefix("TYPE"), let n = UInt16(u.dropFirst(4)) { self.init(rawValue: n); return }
        return nil
    }

    public var description: String { Self.names.first { $0.1 == self }?.0 ?? "TYPE\(rawValue)" }
}

/// Record data, decoded for the types mail needs.
public enum RData: Hashable, Sendable {
    case a([UInt8])  // 4 bytes
    case aaaa([UInt8])  // 16 bytes
    case mx(preference: UInt16, exchange: DNSName)
    case txt([[UInt8]])  // the character-strings, kept apart
    case cname(DNSName)
    case ptr(DNSName)
    case ns(DNSName)
    case soa(mname: DNSName, rname: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32, expire: UInt32, minimum: UInt32)
    case tlsa(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8])
    case other([UInt8])
}

public struct ResourceRecord: Hashable, Sendable {
    public var name: DNSName
    public var type: RecordType
    public var rrClass: UInt16
    public var ttl: UInt32
    public var data: RData

    public init(name: DNSName, type: RecordType, rrClass: UInt16 = 1, ttl: UInt32, data: RData) {
        self.name = name
        self.type = type
        self.rrClass = rrClass
        self.ttl = ttl
        self.data = data
    }
}

public struct Question: Hashable, Sendable {
    public var name: DNSName
    public var type: RecordType
    public var qClass: UInt16
    public init(name: DNSName, type: RecordType, qClass: UInt16 = 1) {
        self.name = name
        self.type = type
        self.qClass = qClass
    }
}

public enum DNSWireError: Error, Sendable, Equatable {
    case truncated
    case badLabel
    case pointerLoop
    case nameTooLong
    case badCount
    case badRData(RecordType)
    case trailingBytes
}

/// A whole DNS message.
public struct DNSMessage: Sendable, Equatable {
    public var id: UInt16
    public var flags: UInt16
    public var questions: [Question] = []
    public var answers: [ResourceRecord] = []
    public var authority: [ResourceRecord] = []
    public var additional: [ResourceRecord] = []

    public init(id: UInt16, flags: UInt16) {
        self.id = id
        self.flags = flags
    }

    public var isResponse: Bool { flags & 0x8000 != 0 }
    public var opcode: UInt8 { UInt8((flags >> 11) & 0xF) }
    public var authoritative: Bool { flags & 0x0400 != 0 }
    public var truncated: Bool { flags & 0x0200 != 0 }
    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var recursionAvailable: Bool { flags & 0x0080 != 0 }
    public var authenticatedData: Bool { flags & 0x0020 != 0 }
    /// The response code, extended by the OPT record's upper bits when there is one.
    public var rcode: UInt16 {
        var r = flags & 0xF
        if let opt = additional.first(where: { $0.type == .opt }) { r |= UInt16((opt.ttl >> 24) & 0xFF) << 4 }
        return r
    }

    public static let flagQR: UInt16 = 0x8000, flagAA: UInt16 = 0x0400, flagTC: UInt16 = 0x0200
    public static let flagRD: UInt16 = 0x0100, flagRA: UInt16 = 0x0080, flagAD: UInt16 = 0x0020

    /// A recursive query with EDNS0 (RFC 6891) advertising `udpPayload` bytes; AD set to ask for the
    /// authenticated-data bit (RFC 6840 §5.7).
    public static func query(id: UInt16, name: DNSName, type: RecordType, udpPayload: UInt16 = 1232) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(12 + name.wire.count + 4 + 11)
        out.appendUInt16(id)
        out.appendUInt16(flagRD | flagAD)
        out.appendUInt16(1)
        out.appendUInt16(0)
        out.appendUInt16(0)
        out.appendUInt16(udpPayload > 0 ? 1 : 0)
        out += name.wire
        out.appendUInt16(type.rawValue)
        out.appendUInt16(1)
        if udpPayload > 0 {
            out.append(0)  // root owner
            out.appendUInt16(RecordType.opt.rawValue)
            out.appendUInt16(udpPayload)
            out.appendUInt32(0)  // extended rcode, version 0, flags (DO clear)
            out.appendUInt16(0)
        }
        return out
    }

    /// Encodes a message without compression (for tests and the zone server of the test harness).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.appendUInt16(id)
        out.appendUInt16(flags)
        out.appendUInt16(UInt16(questions.count))
        out.appendUInt16(UInt16(answers.count))
        out.appendUInt16(UInt16(authority.count))
        out.appendUInt16(UInt16(additional.count))
        for q in questions {
            out += q.name.wire
            out.appendUInt16(q.type.rawValue)
            out.appendUInt16(q.qClass)
        }
        for r in answers + authority + additional { r.encode(into: &out) }
        return out
    }

    /// Decodes a message; any inconsistency is an error, never a crash.
    public static func decode(_ bytes: [UInt8]) throws(DNSWireError) -> DNSMessage {
        var r = WireReader(bytes: bytes)
        let id = try r.u16()
        let flags = try r.u16()
        let qd = Int(try r.u16()), an = Int(try r.u16()), ns = Int(try r.u16()), ar = Int(try r.u16())
        // A question takes at least 5 bytes, a record at least 11: refuse counts that cannot fit.
        guard qd * 5 + (an + ns + ar) * 11 <= bytes.count - 12 else { throw .badCount }
        var m = DNSMessage(id: id, flags: flags)
        m.questions.reserveCapacity(qd)
        for _ in 0..<qd {
            let name = try r.name()
            let type = RecordType(rawValue: try r.u16())
            m.questions.append(Question(name: name, type: type, qClass: try r.u16()))
        }
        m.answers = try r.records(an)
        m.authority = try r.records(ns)
        m.additional = try r.records(ar)
        guard r.offset == bytes.count else { throw .trailingBytes }
        return m
    }
}

extension ResourceRecord {
    func encode(into out: inout [UInt8]) {
        out += name.wire
        out.appendUInt16(type.rawValue)
        out.appendUInt16(rrClass)
        out.appendUInt32(ttl)
        var d: [UInt8] = []
        switch data {
        case .a(let b), .aaaa(let b), .other(let b): d = b
        case .mx(let p, let x):
            d.appendUInt16(p)
            d += x.wire
        case .txt(let strings):
            for s in strings {
                d.append(UInt8(min(s.count, 255)))
                d += s.prefix(255)
            }
        case .cname(let n), .ptr(let n), .ns(let n): d = n.wire
        case .soa(let m, let r, let serial, let refresh, let retry, let expire, let minimum):
            d = m.wire + r.wire
            for v in [serial, refresh, retry, expire, minimum] { d.appendUInt32(v) }
        case .tlsa(let u, let s, let m, let data):
            d = [u, s, m] + data
        }
        out.appendUInt16(UInt16(d.count))
        out += d
    }
}

struct WireReader {
    let bytes: [UInt8]
    var offset = 0

    mutating func u8() throws(DNSWireError) -> UInt8 {
        guard offset < bytes.count else { throw .truncated }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() throws(DNSWireError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw .truncated }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func u32() throws(DNSWireError) -> UInt32 {
        UInt32(try u16()) << 16 | UInt32(try u16())
    }

    mutating func take(_ n: Int) throws(DNSWireError) -> [UInt8] {
        guard n >= 0, offset + n <= bytes.count else { throw .truncated }
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }

    /// A possibly compressed name. Each pointer must point before the label it replaces, so a chain
    /// of pointers strictly decreases and cannot loop.
    mutating func name() throws(DNSWireError) -> DNSName {
        var wire: [UInt8] = []
        var position = offset
        var resume: Int? = nil
        var lowest = offset  // pointers must go below every position already visited
        while true {
            guard position < bytes.count else { throw .truncated }
            let len = bytes[position]
            switch len & 0xC0 {
            case 0xC0:
                guard position + 1 < bytes.count else { throw .truncated }
                let target = Int(len & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < lowest else { throw .pointerLoop }
                if resume == nil { resume = position + 2 }
                lowest = target
                position = target
            case 0x00:
                if len == 0 {
                    wire.append(0)
                    guard wire.count <= 255 else { throw .nameTooLong }
                    offset = resume ?? position + 1
                    return DNSName(uncheckedWire: wire)
                }
                let n = Int(len)
                guard position + 1 + n <= bytes.count else { throw .truncated }
                wire.append(len)
                for b in bytes[(position + 1)...(position + n)] { wire.append(b >= 0x41 && b <= 0x5A ? b | 0x20 : b) }
                guard wire.count < 255 else { throw .nameTooLong }
                position += 1 + n
            default:
                throw .badLabel  // 0x40 / 0x80: extended label types (obsolete)
            }
        }
    }

    mutating func records(_ count: Int) throws(DNSWireError) -> [ResourceRecord] {
        var out: [ResourceRecord] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let name = try name()
            let type = RecordType(rawValue: try u16())
            let cls = try u16()
            let ttl = try u32()
            let length = Int(try u16())
            guard offset + length <= bytes.count else { throw .truncated }
            let end = offset + length
            let data = try rdata(type, end: end)
            guard offset == end else { throw .badRData(type) }
            out.append(ResourceRecord(name: name, type: type, rrClass: cls, ttl: ttl, data: data))
        }
        return out
    }

    mutating func rdata(_ type: RecordType, end: Int) throws(DNSWireError) -> RData {
        let length = end - offset
        // Names inside record data must end inside it.
        func inside(_ r: inout WireReader) throws(DNSWireError) -> DNSName {
            let n = try r.name()
            guard r.offset <= end else { throw .badRData(type) }
            return n
        }
        switch type {
        case .a:
            guard length == 4 else { throw .badRData(type) }
            return .a(try take(4))
        case .aaaa:
            guard length == 16 else { throw .badRData(type) }
            return .aaaa(try take(16))
        case .mx:
            guard length >= 3 else { throw .badRData(type) }
            let p = try u16()
            return .mx(preference: p, exchange: try inside(&self))
        case .cname: return .cname(try inside(&self))
        case .ptr: return .ptr(try inside(&self))
        case .ns: return .ns(try inside(&self))
        case .txt:
            var strings: [[UInt8]] = []
            while offset < end {
                let n = Int(try u8())
                guard offset + n <= end else { throw .badRData(type) }
                strings.append(try take(n))
            }
            // No strings at all is not a valid TXT record (RFC 1035 wants one), but servers send
            // it: it is read as a record with nothing in it, not as a malformed answer (which
            // would make SPF's result for the whole name a temperror, RFC 7208 test null-text).
            return .txt(strings)
        case .soa:
            let m = try inside(&self)
            let r = try inside(&self)
            guard end - offset == 20 else { throw .badRData(type) }
            return .soa(mname: m, rname: r, serial: try u32(), refresh: try u32(), retry: try u32(), expire: try u32(), minimum: try u32())
        case .tlsa:
            guard length >= 3 else { throw .badRData(type) }
            let u = try u8(), s = try u8(), m = try u8()
            return .tlsa(usage: u, selector: s, matchingType: m, data: try take(end - offset))
        default:
            return .other(try take(length))
        }
    }
}

extension Array where Element == UInt8 {
    mutating func appendUInt16(_ v: UInt16) {
        append(UInt8(v >> 8))
        append(UInt8(v & 0xFF))
    }

    mutating func appendUInt32(_ v: UInt32) {
        appendUInt16(UInt16(v >> 16))
        appendUInt16(UInt16(v & 0xFFFF))
    }
}
