// Numeric socket addresses as users write them: `127.0.0.1:2525`, `[::1]:25`, `localhost:25`
// (127.0.0.1). Names are never resolved here. One parser for listeners, ternbench and DNS servers.

public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case invalid(String)
        public var description: String {
            switch self {
            case .invalid(let s): return "invalid address '\(s)': expected HOST:PORT with a numeric host, e.g. 127.0.0.1:2525 or [::1]:2525"
            }
        }
    }

    /// Parses `ADDRESS:PORT`, `[IPv6]:PORT`; with `defaultPort`, also a bare `ADDRESS` or `IPv6`.
    /// Ports are 1–65535 (0 too with `allowPortZero`: "any free port").
    public init(parsing s: String, defaultPort: Int? = nil, allowPortZero: Bool = false) throws(ParseError) {
        var host: Substring
        var portPart: Substring?
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw .invalid(s) }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw .invalid(s) }
                portPart = rest.dropFirst()
            }
            guard IPAddress.v6(String(host)) != nil else { throw .invalid(s) }
        } else if defaultPort != nil, IPAddress.v6(s) != nil {
            host = Substring(s)  // a bare IPv6 address: its colons are not a port
        } else if let colon = s.lastIndex(of: ":") {
            host = s[..<colon]
            portPart = s[s.index(after: colon)...]
        } else {
            host = Substring(s)
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard IPAddress.v4(String(host)) != nil || (IPAddress.v6(String(host)) != nil && (s.hasPrefix("[") || portPart == nil)) else {
            throw .invalid(s)
        }
        let port: Int
        if let p = portPart {
            guard let v = Int(p), (allowPortZero ? 0 : 1)...65535 ~= v else { throw .invalid(s) }
            port = v
        } else {
            guard let d = defaultPort else { throw .invalid(s) }
            port = d
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Numeric IP addresses to bytes and back.
public enum IPAddress {
    /// Dotted quad for 4 bytes, RFC 5952 form for 16 (the longest run of zero groups as `::`).
    public static func text(_ b: [UInt8]) -> String {
        if b.count == 4 { return b.map(String.init).joined(separator: ".") }
        guard b.count == 16 else { return "" }
        let words = (0..<8).map { UInt16(b[2 * $0]) << 8 | UInt16(b[2 * $0 + 1]) }
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

    /// Dotted quad, each part 0–255 without leading zeros.
    public static func v4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0 >= "0" && $0 <= "9" }), let v = UInt8(p), p == "0" || !p.hasPrefix("0") else { return nil }
            out.append(v)
        }
        return out
    }

    /// RFC 4291 text form (hex groups, one `::`, an embedded IPv4 tail as in `::ffff:192.0.2.1`);
    /// no zone.
    public static func v6(_ s: String) -> [UInt8]? {
        var s = s
        if let lastColon = s.lastIndex(of: ":"), s[lastColon...].contains(".") {
            guard let v4 = v4(String(s[s.index(after: lastColon)...])) else { return nil }
            let tail = String(UInt16(v4[0]) << 8 | UInt16(v4[1]), radix: 16) + ":" + String(UInt16(v4[2]) << 8 | UInt16(v4[3]), radix: 16)
            s = String(s[...lastColon]) + tail
        }
        var halves = [s]
        if let r = s.firstRange(of: "::") {
            halves = [String(s[..<r.lowerBound]), String(s[r.upperBound...])]
            guard halves[1].firstRange(of: "::") == nil else { return nil }
        }
        func groups(_ t: String) -> [UInt16]? {
            if t.isEmpty { return [] }
            var out: [UInt16] = []
            for g in t.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(g.count), let v = UInt16(g, radix: 16) else { return nil }
                out.append(v)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var words = head
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count <= 7 else { return nil }
            words += Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard words.count == 8 else { return nil }
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}
