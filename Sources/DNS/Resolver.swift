// The one way Tern asks DNS: an async `Resolver`. The stub resolver, the static zone resolver and
// the cache all implement it; outbound delivery, SPF, DKIM and DMARC only see the protocol.

/// How a lookup ended, with the names `ternctl dns` prints.
public enum DNSStatus: String, Sendable, Equatable, CaseIterable {
    /// Records of the type asked for.
    case noError = "NOERROR"
    /// The name exists, but has no records of that type (RFC 2308 NODATA).
    case noData = "NODATA"
    /// The name does not exist.
    case nxDomain = "NXDOMAIN"
    /// The server failed or refused (temporary).
    case servFail = "SERVFAIL"
    /// No server answered in time (temporary).
    case timeout = "TIMEOUT"
    /// The answer was malformed, or the question was (permanent).
    case formErr = "FORMERR"

    /// A failure worth retrying later (SPF's temperror, a deferred delivery).
    public var isTemporary: Bool { self == .servFail || self == .timeout }
    /// A definite "there is nothing": NXDOMAIN or NODATA.
    public var isNegative: Bool { self == .nxDomain || self == .noData }
}

/// The answer to one question, after CNAME chasing.
public struct DNSAnswer: Sendable, Equatable {
    public var status: DNSStatus
    /// The records of the type asked for, owned by `canonicalName`.
    public var records: [ResourceRecord]
    /// The name the records belong to: the question's, or the end of its CNAME chain.
    public var canonicalName: DNSName
    /// Seconds this answer may be cached: the smallest record TTL, or the negative TTL (RFC 2308).
    public var ttl: UInt32
    /// The AD bit: the answering resolver validated it with DNSSEC (for DANE later).
    public var authenticated: Bool

    public init(status: DNSStatus, records: [ResourceRecord] = [], canonicalName: DNSName, ttl: UInt32 = 0, authenticated: Bool = false) {
        self.status = status
        self.records = records
        self.canonicalName = canonicalName
        self.ttl = ttl
        self.authenticated = authenticated
    }

    /// The answer a response gives to `question`: CNAMEs in the answer section are followed (at
    /// most 8), the negative TTL is the SOA's (min of its TTL and MINIMUM field).
    public init(response m: DNSMessage, question: Question) {
        var name = question.name
        var ttl = UInt32.max
        var hops = 0
        if question.type != .cname {
            while hops < 8, let c = m.answers.first(where: { $0.name == name && $0.type == .cname }), case .cname(let target) = c.data {
                ttl = min(ttl, c.ttl)
                name = target
                hops += 1
            }
        }
        let records = m.answers.filter { $0.name == name && $0.type == question.type && $0.rrClass == question.qClass }
        let soaTTL: UInt32? = m.authority.lazy.compactMap { r -> UInt32? in
            if case .soa(_, _, _, _, _, _, let minimum) = r.data { return min(r.ttl, minimum) }
            return nil
        }.first
        let status: DNSStatus
        switch m.rcode {
        case 0: status = records.isEmpty ? .noData : .noError
        case 3: status = .nxDomain
        case 1: status = .formErr
        default: status = .servFail  // 2 SERVFAIL, 4 NOTIMP, 5 REFUSED and the rest: try elsewhere/later
        }
        if status == .noError {
            for r in records { ttl = min(ttl, r.ttl) }
        } else {
            ttl = status.isNegative ? min(ttl, soaTTL ?? 0) : 0
        }
        self.init(status: status, records: records, canonicalName: name, ttl: ttl == .max ? 0 : ttl, authenticated: m.authenticatedData)
    }
}

public protocol Resolver: Sendable {
    /// Asks one question. Never throws: every failure is a status.
    func resolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer
}

/// Typed views of an answer's records.
extension DNSAnswer {
    /// MX records sorted by preference (ties keep their order; callers shuffle equals).
    public var mx: [(preference: UInt16, exchange: DNSName)] {
        records.compactMap { r -> (UInt16, DNSName)? in
            if case .mx(let p, let x) = r.data { return (p, x) }
            return nil
        }.sorted { $0.0 < $1.0 }
    }

    /// IPv4 and IPv6 addresses in text form.
    public var addresses: [String] {
        records.compactMap { r -> String? in
            switch r.data {
            case .a(let b): return b.map(String.init).joined(separator: ".")
            case .aaaa(let b): return ipv6Text(b)
            default: return nil
            }
        }
    }

    /// TXT records, each with its strings kept apart.
    public var txtStrings: [[[UInt8]]] {
        records.compactMap { r -> [[UInt8]]? in
            if case .txt(let s) = r.data { return s }
            return nil
        }
    }

    /// TXT records, each one's strings concatenated without separators (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
    public var txt: [String] { txtStrings.map { String(decoding: $0.joined(), as: UTF8.self) } }

    /// Names from PTR, CNAME or NS records.
    public var names: [DNSName] {
        records.compactMap { r -> DNSName? in
            switch r.data {
            case .ptr(let n), .cname(let n), .ns(let n): return n
            default: return nil
            }
        }
    }
}

/// RFC 5952 text form of a 16-byte address.
func ipv6Text(_ b: [UInt8]) -> String {
    guard b.count == 16 else { return "" }
    let words = (0..<8).map { UInt16(b[2 * $0]) << 8 | UInt16(b[2 * $0 + 1]) }
    // The longest run of two or more zero words becomes "::".
    var bestStart = -1, bestLength = 0, i = 0
    while i < 8 {
        if words[i] == 0 {
            var j = i
            while j < 8, words[j] == 0 { j += 1 }
            if j - i > bestLength, j - i >= 2 { bestStart = i; bestLength = j - i }
            i = j
        } else {
            i += 1
        }
    }
    func hex(_ r: Range<Int>) -> String { r.map { String(words[$0], radix: 16) }.joined(separator: ":") }
    if bestStart < 0 { return hex(0..<8) }
    return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
}
