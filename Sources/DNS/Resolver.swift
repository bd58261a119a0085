// The one way Tern asks DNS: an async `Resolver`. The stub resolver, the static zone resolver and
// the cache all implement it; outbound delivery, SPF, DKIM and DMARC only see the protocol.

import Reactor

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
    /// The CNAME targets followed from the question's name to `canonicalName`, in order.
    public var aliases: [DNSName]

    public init(status: DNSStatus, records: [ResourceRecord] = [], canonicalName: DNSName, ttl: UInt32 = 0, authenticated: Bool = false, aliases: [DNSName] = []) {
        self.status = status
        self.records = records
        self.canonicalName = canonicalName
        self.ttl = ttl
        self.authenticated = authenticated
        self.aliases = aliases
    }

    /// The answer a response gives to `question`: CNAMEs in the answer section are followed (at
    /// most 8), the negative TTL is the SOA's (min of its TTL and MINIMUM field).
    public init(response m: DNSMessage, question: Question) {
        var name = question.name
        var ttl = UInt32.max
        var aliases: [DNSName] = []
        if question.type != .cname {
            while aliases.count < 8, let c = m.answers.first(where: { $0.name == name && $0.type == .cname }), case .cname(let target) = c.data {
                ttl = min(ttl, c.ttl)
                name = target
                aliases.append(target)
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
        self.init(status: status, records: records, canonicalName: name, ttl: ttl == .max ? 0 : ttl, authenticated: m.authenticatedData, aliases: aliases)
    }
}

public protocol Resolver: Sendable {
    /// Asks one question. Never throws: every failure is a status.
    func resolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer
    /// The answer when it is at hand without waiting (a cache hit, a static zone), else nil.
    /// Hot callers (SPF) try this first and skip the cost of an async call.
    func immediateAnswer(_ name: DNSName, _ type: RecordType) -> DNSAnswer?
}

extension Resolver {
    public func immediateAnswer(_ name: DNSName, _ type: RecordType) -> DNSAnswer? { nil }

    /// `immediateAnswer`, else `resolve`.
    @inlinable
    public func immediateOrResolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer {
        if let a = immediateAnswer(name, type) { return a }
        return await resolve(name, type)
    }
}

/// Typed views of an answer's records.
extension DNSAnswer {
    /// MX records sorted by preference (ties keep their order; callers shuffle equals).
    public var mx: [(preference: UInt16, exchange: DNSName)] {
        let all = records.compactMap { r -> (preference: UInt16, exchange: DNSName)? in
            if case .mx(let p, let x) = r.data { return (p, x) }
            return nil
        }
        if zip(all, all.dropFirst()).allSatisfy({ $0.0.preference <= $0.1.preference }) { return all }
        return all.enumerated().sorted { $0.element.0 != $1.element.0 ? $0.element.0 < $1.element.0 : $0.offset < $1.offset }.map(\.element)
    }

    /// IPv4 and IPv6 addresses in text form.
    public var addresses: [String] {
        records.compactMap { r -> String? in
            switch r.data {
            case .a(let b), .aaaa(let b): return IPAddress.text(b)
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

extension RData {
    /// The record data as `dig +short` prints it.
    public var presentation: String {
        switch self {
        case .a(let b), .aaaa(let b): return IPAddress.text(b)
        case .mx(let p, let x): return "\(p) \(x)"
        case .txt(let strings): return strings.map(quotedString).joined(separator: " ")
        case .cname(let n), .ptr(let n), .ns(let n): return n.description
        case .soa(let m, let r, let serial, let refresh, let retry, let expire, let minimum):
            return "\(m) \(r) \(serial) \(refresh) \(retry) \(expire) \(minimum)"
        case .tlsa(let u, let s, let m, let d): return "\(u) \(s) \(m) \(hexString(d))"
        case .other(let d): return "\\# \(d.count) \(hexString(d))"
        }
    }
}

func hexString(_ d: [UInt8]) -> String {
    let digits = Array("0123456789ABCDEF".utf8)
    return String(decoding: d.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] }, as: UTF8.self)
}

/// A character-string in presentation form: quoted, `"` and `\\` escaped, other bytes outside
/// printable ASCII as `\\DDD`.
func quotedString(_ s: [UInt8]) -> String {
    var out = "\""
    for b in s {
        switch b {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"):
            out += "\\"
            out.unicodeScalars.append(Unicode.Scalar(b))
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(b))
        default:
            let d = String(b)
            out += "\\" + String(repeating: "0", count: 3 - d.count) + d
        }
    }
    return out + "\""
}

/// Which resolver Tern uses (`resolver` in the configuration, `--resolver` on `ternctl`).
public enum ResolverSetting: Sendable, Equatable, CustomStringConvertible {
    /// The servers and options of /etc/resolv.conf.
    case system
    /// These servers, in order (the next one when one does not answer).
    case servers([DNSServer])
    /// A static zone file.
    case zone(String)

    public var isZone: Bool {
        if case .zone = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .system: return "system (/etc/resolv.conf)"
        case .servers(let s): return s.map(\.description).joined(separator: " ")
        case .zone(let f): return "zone \(f)"
        }
    }

    /// Parses the words after `resolver` / `--resolver`: `system`, `zone FILE`, or addresses.
    public static func parse(_ words: [String]) -> Result<ResolverSetting, ResolverSettingError> {
        guard let first = words.first else { return .failure(.init(message: "usage: resolver system | resolver ADDRESS[:PORT]... | resolver zone FILE")) }
        if first == "system" {
            return words.count == 1 ? .success(.system) : .failure(.init(message: "'resolver system' takes nothing after it"))
        }
        if first == "zone" {
            return words.count == 2 ? .success(.zone(words[1])) : .failure(.init(message: "usage: resolver zone FILE"))
        }
        var servers: [DNSServer] = []
        for w in words {
            guard let s = DNSServer(w) else {
                return .failure(.init(message: "invalid DNS server address '\(w)': expected a numeric address with an optional port, e.g. 127.0.0.1:5353 or [::1]:53"))
            }
            servers.append(s)
        }
        return .success(.servers(servers))
    }

    /// The resolver this setting names: the stub resolver behind a cache, or the zone. The
    /// stub resolver runs on `group` when given (ternd's loops), else on its own loop.
    public func makeResolver(group: EventLoopGroup? = nil, resolvConf: String = "/etc/resolv.conf") throws -> any Resolver {
        switch self {
        case .system:
            return CachingResolver(upstream: try StubResolver(configuration: .load(path: resolvConf), group: group))
        case .servers(let s):
            var c = StubConfiguration.load(path: resolvConf)  // options (timeout, attempts) still apply
            c.servers = s
            c.search = []
            return CachingResolver(upstream: try StubResolver(configuration: c, group: group))
        case .zone(let file):
            return try ZoneResolver.load(path: file)
        }
    }
}

public struct ResolverSettingError: Error, Sendable, Equatable {
    public let message: String
}
