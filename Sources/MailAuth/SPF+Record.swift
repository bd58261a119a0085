// The SPF record grammar (§4.6, §12) and macro expansion (§7).

import DNS
import Reactor

enum Qualifier: Sendable, Equatable {
    case pass, fail, softfail, neutral
    var result: SPFResult {
        switch self {
        case .pass: return .pass
        case .fail: return .fail
        case .softfail: return .softfail
        case .neutral: return .neutral
        }
    }
    var symbol: String {
        switch self {
        case .pass: return ""
        case .fail: return "-"
        case .softfail: return "~"
        case .neutral: return "?"
        }
    }
}

/// A domain-spec, with its name parsed once when it has no macros.
struct DomainSpec: Sendable, Equatable, CustomStringConvertible {
    let text: String
    let name: DNSName?
    init(_ text: String) {
        self.text = text
        name = text.utf8.contains(UInt8(ascii: "%")) || text.utf8.count > 253 ? nil : try? DNSName(text)
    }
    var description: String { text }
}

enum Mechanism: Sendable, Equatable, CustomStringConvertible {
    case all
    case include(DomainSpec)
    case a(DomainSpec?, v4: Int, v6: Int)
    case mx(DomainSpec?, v4: Int, v6: Int)
    case ptr(DomainSpec?)
    case ip4([UInt8], Int)
    case ip6([UInt8], Int)
    case exists(DomainSpec)

    var description: String {
        func cidr(_ v4: Int, _ v6: Int) -> String { (v4 != 32 ? "/\(v4)" : "") + (v6 != 128 ? "//\(v6)" : "") }
        switch self {
        case .all: return "all"
        case .include(let d): return "include:\(d)"
        case .a(let d, let v4, let v6): return "a" + (d.map { ":" + $0.text } ?? "") + cidr(v4, v6)
        case .mx(let d, let v4, let v6): return "mx" + (d.map { ":" + $0.text } ?? "") + cidr(v4, v6)
        case .ptr(let d): return "ptr" + (d.map { ":" + $0.text } ?? "")
        case .ip4(let b, let p): return "ip4:" + b.map(String.init).joined(separator: ".") + "/\(p)"
        case .ip6(let b, let p): return "ip6:" + SPFAddress(bytes: b).text + "/\(p)"
        case .exists(let d): return "exists:\(d)"
        }
    }
}

enum Term: Sendable, Equatable {
    case directive(Qualifier, Mechanism)
    case modifier(String, String)

    struct SyntaxError: Error, Sendable { let message: String }

    /// Parses a record that starts with `v=spf1` (checked by the caller).
    static func parse(_ record: String) throws(SyntaxError) -> [Term] {
        var out: [Term] = []
        for word in record.split(separator: " ", omittingEmptySubsequences: true).dropFirst() {
            out.append(try parseTerm(String(word)))
        }
        return out
    }

    static func parseTerm(_ w: String) throws(SyntaxError) -> Term {
        // A modifier: name "=" macro-string, name starting with a letter.
        // (A name has no ':' or '/', so `include:a=b` stays a mechanism.)
        if let eq = w.firstIndex(of: "=") {
            let name = w[..<eq].lowercased()
            let value = String(w[w.index(after: eq)...])
            if isModifierName(name) {
                try checkMacroString(value, allowExplanationLetters: false)
                if name == "redirect" || name == "exp" {
                    try checkDomainSpec(value, term: w)
                }
                return .modifier(name, value)
            }
        }
        var body = Substring(w)
        var q = Qualifier.pass
        switch body.first {
        case "+": q = .pass; body = body.dropFirst()
        case "-": q = .fail; body = body.dropFirst()
        case "~": q = .softfail; body = body.dropFirst()
        case "?": q = .neutral; body = body.dropFirst()
        default: break
        }
        // The mechanism name runs up to ':' or '/'.
        let nameEnd = body.firstIndex(where: { $0 == ":" || $0 == "/" }) ?? body.endIndex
        let name = body[..<nameEnd].lowercased()
        var rest = body[nameEnd...]
        var spec: String? = nil
        func takeSpec() {
            if rest.first == ":" {
                let after = rest.dropFirst()
                // The domain-spec ends where a cidr length starts: "/" followed by digits to the end.
                if let slash = cidrStart(after) {
                    spec = String(after[..<slash])
                    rest = after[slash...]
                } else {
                    spec = String(after)
                    rest = ""
                }
            }
        }
        switch name {
        case "all":
            guard rest.isEmpty else { throw SyntaxError(message: "'\(w)'") }
            return .directive(q, .all)
        case "include", "exists":
            guard rest.first == ":" else { throw SyntaxError(message: "'\(w)' needs a domain") }
            let s = String(rest.dropFirst())
            try checkDomainSpec(s, term: w)
            return .directive(q, name == "include" ? .include(DomainSpec(s)) : .exists(DomainSpec(s)))
        case "a", "mx":
            takeSpec()
            if let s = spec { try checkDomainSpec(s, term: w) }
            let (v4, v6) = try dualCIDR(rest, term: w)
            let d = spec.map(DomainSpec.init)
            return .directive(q, name == "a" ? .a(d, v4: v4, v6: v6) : .mx(d, v4: v4, v6: v6))
        case "ptr":
            if rest.first == ":" {
                let s = String(rest.dropFirst())
                try checkDomainSpec(s, term: w)
                spec = s
            } else if !rest.isEmpty {
                throw SyntaxError(message: "'\(w)'")
            }
            return .directive(q, .ptr(spec.map(DomainSpec.init)))
        case "ip4", "ip6":
            guard rest.first == ":" else { throw SyntaxError(message: "'\(w)' needs an address") }
            let value = rest.dropFirst()
            var addr = Substring(value)
            var prefix = name == "ip4" ? 32 : 128
            if let slash = value.firstIndex(of: "/") {
                addr = value[..<slash]
                let p = value[value.index(after: slash)...]
                guard let n = Int(p), p.allSatisfy(\.isNumber), p == "0" || !p.hasPrefix("0"), n <= prefix else { throw SyntaxError(message: "bad prefix length in '\(w)'") }
                prefix = n
            }
            if name == "ip4" {
                guard let b = IPAddress.v4(String(addr)) else { throw SyntaxError(message: "bad IPv4 address in '\(w)'") }
                return .directive(q, .ip4(b, prefix))
            }
            guard let b = (addr.contains(":") ? IPAddress.v6(String(addr)) : nil) else { throw SyntaxError(message: "bad IPv6 address in '\(w)'") }
            return .directive(q, .ip6(b, prefix))
        default:
            throw SyntaxError(message: "unknown mechanism '\(w)'")
        }
    }

    static func isModifierName(_ n: String) -> Bool {
        guard let f = n.unicodeScalars.first, (f.value >= 0x41 && f.value <= 0x5A) || (f.value >= 0x61 && f.value <= 0x7A) else { return false }
        return n.unicodeScalars.allSatisfy { s in
            (s.value >= 0x41 && s.value <= 0x5A) || (s.value >= 0x61 && s.value <= 0x7A) || (s.value >= 0x30 && s.value <= 0x39) || s == "-" || s == "_" || s == "."
        }
    }

    /// Where a trailing cidr length (`/24`, `//64`, `/24//64`) starts, if the text ends with one.
    static func cidrStart(_ s: Substring) -> Substring.Index? {
        guard let first = s.firstIndex(of: "/") else { return nil }
        // Take the first '/' after which only digits and '/' follow.
        var i = first
        while i < s.endIndex {
            if s[i] == "/", s[i...].allSatisfy({ $0 == "/" || $0.isNumber }) { return i }
            i = s.index(after: i)
        }
        return nil
    }

    static func dualCIDR(_ s: Substring, term: String) throws(SyntaxError) -> (Int, Int) {
        var v4 = 32, v6 = 128
        guard !s.isEmpty else { return (v4, v6) }
        func number(_ t: Substring, max: Int) throws(SyntaxError) -> Int {
            guard !t.isEmpty, t.allSatisfy(\.isNumber), t == "0" || !t.hasPrefix("0"), let n = Int(t), n <= max else {
                throw SyntaxError(message: "bad prefix length in '\(term)'")
            }
            return n
        }
        if s.hasPrefix("//") {
            v6 = try number(s.dropFirst(2), max: 128)
        } else if s.hasPrefix("/") {
            let body = s.dropFirst()
            if let d = body.firstRange(of: "//") {
                v4 = try number(body[..<d.lowerBound], max: 32)
                v6 = try number(body[d.upperBound...], max: 128)
            } else {
                v4 = try number(body, max: 32)
            }
        } else {
            throw SyntaxError(message: "'\(term)'")
        }
        return (v4, v6)
    }

    /// domain-spec = macro-string domain-end (§7.1): ends in a top label with a letter, or a macro.
    static func checkDomainSpec(_ s: String, term: String) throws(SyntaxError) {
        guard !s.isEmpty else { throw SyntaxError(message: "empty domain in '\(term)'") }
        try checkMacroString(s, allowExplanationLetters: false)
        if s.hasSuffix("}") { return }
        var t = Substring(s)
        if t.hasSuffix(".") { t = t.dropLast() }
        guard let dot = t.lastIndex(of: ".") else { throw SyntaxError(message: "'\(s)' is not a domain name in '\(term)'") }
        let top = t[t.index(after: dot)...]
        let alnum = top.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        guard alnum, !top.isEmpty, top.contains(where: { $0.isLetter }) || top.contains("-"), !top.hasPrefix("-"), !top.hasSuffix("-") else {
            throw SyntaxError(message: "'\(s)' does not end in a valid top label in '\(term)'")
        }
    }

    /// Checks the macro syntax of a macro-string (§7.1).
    static func checkMacroString(_ s: String, allowExplanationLetters: Bool) throws(SyntaxError) {
        var it = Array(s.unicodeScalars)[...]
        while let c = it.popFirst() {
            guard c.value >= 0x21 && c.value <= 0x7E || (allowExplanationLetters && c == " ") else {
                throw SyntaxError(message: "invalid character in '\(s)'")
            }
            guard c == "%" else { continue }
            guard let n = it.popFirst() else { throw SyntaxError(message: "'%' at the end of '\(s)'") }
            switch n {
            case "%", "_", "-": continue
            case "{":
                guard let close = it.firstIndex(of: "}") else { throw SyntaxError(message: "unterminated macro in '\(s)'") }
                let body = it[it.startIndex..<close]
                it = it[(close + 1)...]
                guard let letter = body.first, "slodiphcrtvSLODIPHCRTV".unicodeScalars.contains(letter) else {
                    throw SyntaxError(message: "unknown macro letter in '\(s)'")
                }
                if !allowExplanationLetters, "crtCRT".unicodeScalars.contains(letter) {
                    throw SyntaxError(message: "%{\(letter)} is only allowed in explanations, in '\(s)'")
                }
                var rest = body.dropFirst()
                var digits = ""
                while let d = rest.first, d.properties.numericType != nil, d.value < 0x80 { digits.unicodeScalars.append(d); rest = rest.dropFirst() }
                if !digits.isEmpty, Int(digits) == 0 { throw SyntaxError(message: "a macro keeps zero labels in '\(s)'") }
                if rest.first == "r" || rest.first == "R" { rest = rest.dropFirst() }
                guard rest.allSatisfy({ ".-+,/_=".unicodeScalars.contains($0) }) else { throw SyntaxError(message: "bad macro transformer in '\(s)'") }
            default:
                throw SyntaxError(message: "'%\(n)' is not a macro in '\(s)'")
            }
        }
    }
}

extension SPFChecker {
    /// Expands the macros of a domain-spec or explanation (§7.3); a domain-spec longer than 253
    /// characters loses labels from the left.
    func expand(_ s: String, domain: String, state: inout Evaluation, forExplanation: Bool, isDomainSpec: Bool = true) async throws(Failure) -> String {
        // Most domain-specs have no macros.
        if !s.utf8.contains(UInt8(ascii: "%")), !isDomainSpec || s.utf8.count <= 253 { return s }
        var out = ""
        var it = Array(s.unicodeScalars)[...]
        while let c = it.popFirst() {
            guard c == "%" else {
                out.unicodeScalars.append(c)
                continue
            }
            guard let n = it.popFirst() else { throw .perm("'%' at the end of '\(s)'") }
            switch n {
            case "%": out += "%"
            case "_": out += " "
            case "-": out += "%20"
            case "{":
                guard let close = it.firstIndex(of: "}") else { throw .perm("unterminated macro in '\(s)'") }
                let body = Array(it[it.startIndex..<close])
                it = it[(close + 1)...]
                guard let letter = body.first else { throw .perm("empty macro in '\(s)'") }
                let lower = Character(letter).lowercased()
                if !forExplanation, "crt".contains(lower) { throw .perm("%{\(letter)} outside an explanation") }
                var value: String
                switch lower {
                case "s": value = state.sender
                case "l": value = state.sender.lastIndex(of: "@").map { String(state.sender[..<$0]) } ?? "postmaster"
                case "o": value = state.sender.lastIndex(of: "@").map { String(state.sender[state.sender.index(after: $0)...]) } ?? state.sender
                case "d": value = domain
                case "i": value = state.ip.dotted
                case "p":
                    if state.validatedName == nil {
                        let names = await validatedNames(&state)
                        // Prefer the domain itself, then a subdomain of it, then any (§7.3).
                        let d = try? DNSName(domain)
                        let best = names.first { $0 == d } ?? names.first { d.map($0.isSubdomain) ?? false } ?? names.first
                        state.validatedName = best?.text ?? "unknown"
                    }
                    value = state.validatedName!
                case "v": value = state.ip.isIPv6 ? "ip6" : "in-addr"
                case "h": value = state.helo
                case "c": value = state.ip.text
                case "r": value = receivingHost
                case "t": value = String(now())
                default: throw .perm("unknown macro letter in '\(s)'")
                }
                // Transformers: digits, 'r', delimiters.
                var rest = body.dropFirst()
                var digits = ""
                while let d = rest.first, d.value >= 0x30 && d.value <= 0x39 { digits.unicodeScalars.append(d); rest = rest.dropFirst() }
                var reverse = false
                if rest.first == "r" || rest.first == "R" { reverse = true; rest = rest.dropFirst() }
                let delimiters = rest.isEmpty ? ["."] : rest.map { String($0) }
                if !digits.isEmpty || reverse || !rest.isEmpty {
                    var parts = value.split(whereSeparator: { delimiters.contains(String($0)) }).map(String.init)
                    if value.hasSuffix(".") == false, parts.isEmpty { parts = [value] }
                    if reverse { parts.reverse() }
                    if let keep = Int(digits) {
                        guard keep > 0 else { throw .perm("a macro keeps zero labels") }
                        parts = Array(parts.suffix(keep))
                    }
                    value = parts.joined(separator: ".")
                }
                if letter.properties.isUppercase { value = urlEscape(value) }
                out += value
            default:
                throw .perm("'%\(n)' is not a macro")
            }
        }
        if isDomainSpec {
            while out.utf8.count > 253, let dot = out.firstIndex(of: ".") { out = String(out[out.index(after: dot)...]) }
        }
        return out
    }

    func urlEscape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Unicode.Scalar(b)
            if (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || "-._~".unicodeScalars.contains(c) {
                out.unicodeScalars.append(c)
            } else {
                out += "%" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true)
            }
        }
        return out
    }
}
