// MTA-STS (RFC 8461): the TXT record that announces a policy (`_mta-sts.DOMAIN`, §3.1), and the
// policy file served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (§3.2), parsed. Pure:
// fetching and caching are the courier's.

/// `v=STSv1; id=…;` of `_mta-sts.DOMAIN`.
public struct MTASTSRecord: Sendable, Equatable {
    /// Changes whenever the policy does (1–32 letters and digits).
    public var id: String

    public init(id: String) { self.id = id }

    /// The record among a name's TXT strings: exactly one must start with `v=STSv1` (§3.1: more
    /// than one is as if there were none).
    public static func find(in txt: [String]) -> MTASTSRecord? {
        let candidates = txt.filter { $0.hasPrefix("v=STSv1;") || $0 == "v=STSv1" }
        guard candidates.count == 1 else { return nil }
        return parse(candidates[0])
    }

    public static func parse(_ text: String) -> MTASTSRecord? {
        var fields = text.split(separator: ";", omittingEmptySubsequences: true).map { $0.trimmingSpaces }
        guard fields.first == "v=STSv1" else { return nil }
        fields.removeFirst()
        var id: String? = nil
        for f in fields where !f.isEmpty {
            guard let eq = f.firstIndex(of: "=") else { return nil }
            let key = f[..<eq], value = f[f.index(after: eq)...]
            if key == "id" {
                guard id == nil, (1...32).contains(value.count), value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else { return nil }
                id = String(value)
            }
        }
        return id.map { MTASTSRecord(id: $0) }
    }
}

/// A policy file.
public struct MTASTSPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable, Equatable {
        /// Deliver only to matching MX hosts over TLS with a valid certificate.
        case enforce
        /// Report what enforcing would refuse; deliver anyway.
        case testing
        /// No policy (used to withdraw one).
        case none
    }
    public var mode: Mode
    /// MX patterns: `mail.example.com` or `*.example.com` (one leftmost label).
    public var mx: [String]
    /// Seconds the policy may be cached (at most a year).
    public var maxAge: Int

    public init(mode: Mode, mx: [String], maxAge: Int) {
        self.mode = mode
        self.mx = mx
        self.maxAge = maxAge
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Parses a policy (§3.2): `key: value` lines, CRLF or LF; version STSv1, a mode, max_age,
    /// and at least one mx unless the mode is none. Unknown keys are ignored.
    public static func parse(_ text: String) throws(ParseError) -> MTASTSPolicy {
        var version: String? = nil
        var mode: Mode? = nil
        var mx: [String] = []
        var maxAge: Int? = nil
        // "\r\n" is one Character in Swift.
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            guard let colon = line.firstIndex(of: ":") else {
                if line.trimmingSpaces.isEmpty { continue }
                throw ParseError(description: "not a 'key: value' line: \(line)")
            }
            let key = line[..<colon].trimmingSpaces
            let value = line[line.index(after: colon)...].trimmingSpaces
            switch key {
            case "version": version = value
            case "mode":
                guard let m = Mode(rawValue: value) else { throw ParseError(description: "unknown mode '\(value)'") }
                mode = m
            case "mx": mx.append(value.lowercased())
            case "max_age":
                guard let a = Int(value), a >= 0, value.count <= 10 else { throw ParseError(description: "bad max_age '\(value)'") }
                maxAge = min(a, 31_557_600)
            default: continue
            }
        }
        guard version == "STSv1" else { throw ParseError(description: "version is not STSv1") }
        guard let mode else { throw ParseError(description: "no mode") }
        guard let maxAge else { throw ParseError(description: "no max_age") }
        if mode != .none, mx.isEmpty { throw ParseError(description: "no mx") }
        return MTASTSPolicy(mode: mode, mx: mx, maxAge: maxAge)
    }

    /// Whether an MX host name is allowed (§4.1): equal, or one label under a `*.` pattern.
    public func allows(mx host: String) -> Bool {
        var h = host.lowercased()
        if h.hasSuffix(".") { h.removeLast() }
        return mx.contains { p in
            if p.hasPrefix("*.") {
                let suffix = p.dropFirst(1)  // ".example.com"
                guard h.hasSuffix(suffix) else { return false }
                let label = h.dropLast(suffix.count)
                return !label.isEmpty && !label.contains(".")
            }
            return p == h
        }
    }
}

extension Substring {
    var trimmingSpaces: String {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
