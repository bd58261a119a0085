// A static resolver over a small zone file, for tests and air-gapped setups (`resolver zone FILE`).
//
//     $TTL 300                          ; default TTL (else 3600)
//     $ORIGIN example.test.             ; relative names are completed with it
//     @            MX    10 mx          ; owner, [TTL], [IN], TYPE, data
//     mx           A     127.0.0.1
//                  AAAA  ::1            ; a blank owner repeats the previous one
//     @            TXT   "v=spf1 ip4:127.0.0.1 -all" "a second string"
//     www   60     CNAME mx
//     broken       SERVFAIL             ; test pseudo-types: every question for the name fails
//     slow         TIMEOUT              ;   (or times out)
//
// Types: A AAAA MX TXT CNAME PTR NS SOA TLSA. Comments start with `;` or `#`. Questions for a name
// with no records of that type are NODATA when the name (or a name below it) exists, NXDOMAIN
// otherwise; the negative TTL is the closest enclosing SOA's, else the default TTL.

import Glibc
import Reactor

public struct ZoneError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let message: String
    public var description: String { "\(file):\(line): \(message)" }
}

public struct ZoneResolver: Resolver {
    enum Behaviour: Sendable { case servFail, timeout }

    let records: [DNSName: [ResourceRecord]]
    let behaviours: [DNSName: Behaviour]
    let existing: Set<DNSName>  // owners and their ancestors (empty non-terminals answer NODATA)
    let defaultTTL: UInt32

    public init(records: [ResourceRecord], defaultTTL: UInt32 = 3600) {
        self.init(records: records, behaviours: [:], defaultTTL: defaultTTL)
    }

    init(records list: [ResourceRecord], behaviours: [DNSName: Behaviour], defaultTTL: UInt32) {
        var r: [DNSName: [ResourceRecord]] = [:]
        var existing: Set<DNSName> = []
        for rec in list {
            r[rec.name, default: []].append(rec)
            var n = rec.name
            while existing.insert(n).inserted, !n.isRoot { n = n.parent }
        }
        records = r
        self.behaviours = behaviours
        self.existing = existing
        self.defaultTTL = defaultTTL
    }

    /// Reads a zone file; every error names the file and line.
    public static func load(path: String) throws(ZoneError) -> ZoneResolver {
        let text: String
        do {
            text = try ReactorSystem.loadText(path)
        } catch {
            throw ZoneError(file: path, line: 0, message: "cannot read the zone file: \(error.reason)")
        }
        return try parse(text, file: path)
    }

    public static func parse(_ text: String, file: String = "zone") throws(ZoneError) -> ZoneResolver {
        var ttl: UInt32 = 3600
        var origin: DNSName? = nil
        var previous: DNSName? = nil
        var list: [ResourceRecord] = []
        var behaviours: [DNSName: Behaviour] = [:]
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let n = index + 1
            func fail(_ m: String) -> ZoneError { ZoneError(file: file, line: n, message: m) }
            let startsBlank = raw.first == " " || raw.first == "\t"
            let words: [String]
            do { words = try zoneWords(raw) } catch { throw fail(error.message) }
            guard !words.isEmpty else { continue }
            if words[0] == "$TTL" {
                guard words.count == 2, let t = UInt32(words[1]) else { throw fail("usage: $TTL SECONDS") }
                ttl = t
                continue
            }
            if words[0] == "$ORIGIN" {
                guard words.count == 2, let o = try? DNSName(words[1]) else { throw fail("usage: $ORIGIN NAME.") }
                origin = o
                continue
            }
            var i = 0
            let owner: DNSName
            if startsBlank {
                guard let p = previous else { throw fail("a record without an owner name (and none before it)") }
                owner = p
            } else {
                if words[0] == "@", origin == nil { throw fail("'@' needs a $ORIGIN line before it") }
                guard let o = absolute(words[0], origin: origin) else { throw fail("invalid name '\(words[0])'") }
                owner = o
                i = 1
            }
            previous = owner
            var recordTTL = ttl
            if i < words.count, let t = UInt32(words[i]) { recordTTL = t; i += 1 }
            if i < words.count, words[i].uppercased() == "IN" { i += 1 }
            guard i < words.count else { throw fail("missing record type") }
            let typeName = words[i].uppercased()
            let args = Array(words[(i + 1)...])
            if typeName == "SERVFAIL" || typeName == "TIMEOUT" {
                guard args.isEmpty else { throw fail("\(typeName) takes no data") }
                behaviours[owner] = typeName == "SERVFAIL" ? .servFail : .timeout
                continue
            }
            guard let type = RecordType(name: typeName) else { throw fail("unknown record type '\(words[i])'") }
            func name(_ s: String) throws(ZoneError) -> DNSName {
                guard let n = absolute(s, origin: origin) else { throw fail("invalid name '\(s)'") }
                return n
            }
            func count(_ k: Int) throws(ZoneError) {
                guard args.count == k else { throw fail("\(type) takes \(k) field\(k == 1 ? "" : "s"), got \(args.count)") }
            }
            let data: RData
            switch type {
            case .a:
                try count(1)
                guard let b = IPAddress.v4(args[0]) else { throw fail("invalid IPv4 address '\(args[0])'") }
                data = .a(b)
            case .aaaa:
                try count(1)
                guard let b = IPAddress.v6(args[0]) else { throw fail("invalid IPv6 address '\(args[0])'") }
                data = .aaaa(b)
            case .mx:
                try count(2)
                guard let p = UInt16(args[0]) else { throw fail("invalid MX preference '\(args[0])'") }
                data = .mx(preference: p, exchange: try name(args[1]))
            case .cname: try count(1); data = .cname(try name(args[0]))
            case .ptr: try count(1); data = .ptr(try name(args[0]))
            case .ns: try count(1); data = .ns(try name(args[0]))
            case .txt:
                guard !args.isEmpty else { throw fail("TXT needs at least one string") }
                var strings: [[UInt8]] = []
                for a in args {
                    let b = Array(a.utf8)
                    guard b.count <= 255 else { throw fail("a TXT string is longer than 255 bytes; split it into several strings") }
                    strings.append(b)
                }
                data = .txt(strings)
            case .soa:
                try count(7)
                let v = args[2...].compactMap { UInt32($0) }
                guard v.count == 5 else { throw fail("SOA needs MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM") }
                data = .soa(mname: try name(args[0]), rname: try name(args[1]), serial: v[0], refresh: v[1], retry: v[2], expire: v[3], minimum: v[4])
            case .tlsa:
                try count(4)
                guard let u = UInt8(args[0]), let s = UInt8(args[1]), let m = UInt8(args[2]), let d = parseHex(args[3]) else {
                    throw fail("TLSA needs USAGE SELECTOR MATCHING-TYPE HEX")
                }
                data = .tlsa(usage: u, selector: s, matchingType: m, data: d)
            default:
                throw fail("record type \(type) is not supported in zone files")
            }
            list.append(ResourceRecord(name: owner, type: type, ttl: recordTTL, data: data))
        }
        return ZoneResolver(records: list, behaviours: behaviours, defaultTTL: ttl)
    }

    public func resolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer {
        answer(name, type)
    }

    public func immediateAnswer(_ name: DNSName, _ type: RecordType) -> DNSAnswer? { answer(name, type) }

    /// The answer, synchronously (the zone is in memory).
    public func answer(_ name: DNSName, _ type: RecordType) -> DNSAnswer {
        var current = name
        var ttl = UInt32.max
        var aliases: [DNSName] = []
        for _ in 0...8 {
            switch behaviours[current] {
            case .servFail: return DNSAnswer(status: .servFail, canonicalName: current)
            case .timeout: return DNSAnswer(status: .timeout, canonicalName: current)
            case nil: break
            }
            let here = records[current] ?? []
            let matching = here.filter { $0.type == type }
            if !matching.isEmpty {
                return DNSAnswer(status: .noError, records: matching, canonicalName: current, ttl: min(ttl, matching.map(\.ttl).min()!), aliases: aliases)
            }
            if type != .cname, let c = here.first(where: { $0.type == .cname }), case .cname(let target) = c.data {
                ttl = min(ttl, c.ttl)
                current = target
                aliases.append(target)
                continue
            }
            let status: DNSStatus = existing.contains(current) ? .noData : .nxDomain
            return DNSAnswer(status: status, canonicalName: current, ttl: min(ttl, negativeTTL(current)), aliases: aliases)
        }
        return DNSAnswer(status: .servFail, canonicalName: current)  // a CNAME chain too long or looping
    }

    func negativeTTL(_ name: DNSName) -> UInt32 {
        var n = name
        while true {
            if let soa = records[n]?.first(where: { $0.type == .soa }), case .soa(_, _, _, _, _, _, let minimum) = soa.data {
                return min(soa.ttl, minimum)
            }
            if n.isRoot { return defaultTTL }
            n = n.parent
        }
    }

    static func absolute(_ s: String, origin: DNSName?) -> DNSName? {
        if s == "@" { return origin }
        guard let n = try? DNSName(s) else { return nil }
        if s.hasSuffix(".") || origin == nil { return n }
        return try? DNSName(labels: n.labels.map(Array.init) + origin!.labels.map(Array.init))
    }
}

struct ZoneWordError: Error { let message: String }

/// Splits a zone line into words: quoted strings keep their spaces (and `\"`, `\\` escapes);
/// `;` and `#` outside quotes start a comment.
func zoneWords(_ line: Substring) throws(ZoneWordError) -> [String] {
    var words: [String] = []
    var current: [UInt8] = []
    var inWord = false
    var quoted = false
    var bytes = Array(line.utf8)
    if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
    var i = 0
    while i < bytes.count {
        let c = bytes[i]
        if quoted {
            if c == UInt8(ascii: "\\"), i + 1 < bytes.count {
                current.append(bytes[i + 1])
                i += 2
                continue
            }
            if c == UInt8(ascii: "\"") {
                quoted = false
                words.append(String(decoding: current, as: UTF8.self))
                current = []
                inWord = false
            } else {
                current.append(c)
            }
            i += 1
            continue
        }
        switch c {
        case UInt8(ascii: ";"), UInt8(ascii: "#"):
            i = bytes.count
            continue
        case UInt8(ascii: " "), UInt8(ascii: "\t"):
            if inWord {
                words.append(String(decoding: current, as: UTF8.self))
                current = []
                inWord = false
            }
        case UInt8(ascii: "\""):
            if inWord { throw ZoneWordError(message: "a quote inside a word") }
            quoted = true
            inWord = true
        default:
            current.append(c)
            inWord = true
        }
        i += 1
    }
    if quoted { throw ZoneWordError(message: "unterminated quoted string") }
    if inWord { words.append(String(decoding: current, as: UTF8.self)) }
    return words
}

func parseHex(_ s: String) -> [UInt8]? {
    let b = Array(s.utf8)
    guard b.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        guard let h = nibble(b[i]), let l = nibble(b[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}
