// DKIM's tag=value lists (RFC 6376 §3.2): the DKIM-Signature header field (§3.5) and the key
// record published at SELECTOR._domainkey.DOMAIN (§3.6.1, RFC 8463).

import SMTP

/// `a=` of a signature. `rsa-sha1` is parsed so that it can be refused by name (RFC 8301).
public enum DKIMAlgorithm: String, Sendable, Equatable {
    case rsaSHA256 = "rsa-sha256"
    case ed25519SHA256 = "ed25519-sha256"
    case rsaSHA1 = "rsa-sha1"

    public var keyType: KeyType { self == .ed25519SHA256 ? .ed25519 : .rsa }
}

enum TagList {
    /// Splits `a=1; b = 2 ;` into (name, value) pairs, whitespace around names and values
    /// trimmed (folding included). nil when the list is malformed or a tag repeats.
    static func parse<C: Collection>(_ text: C) -> [(String, [UInt8])]? where C.Element == UInt8, C.SubSequence == ArraySlice<UInt8> {
        var out: [(String, [UInt8])] = []
        out.reserveCapacity(12)
        var start = text.startIndex
        while start < text.endIndex {
            // One tag-spec: up to the next ';' (or the end).
            var end = start
            while end < text.endIndex, text[end] != UInt8(ascii: ";") { end = text.index(after: end) }
            let trimmed = trim(text[start..<end])
            start = end < text.endIndex ? text.index(after: end) : end
            if trimmed.isEmpty { continue }
            guard let eq = trimmed.firstIndex(of: UInt8(ascii: "=")) else { return nil }
            let nameBytes = trim(trimmed[..<eq])
            guard !nameBytes.isEmpty, nameBytes.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "_") }) else { return nil }
            let name = String(decoding: nameBytes, as: UTF8.self)
            // A handful of tags: a linear look for a repeated one beats hashing.
            guard !out.contains(where: { $0.0 == name }) else { return nil }
            out.append((name, Array(trim(trimmed[(eq + 1)...]))))
        }
        return out
    }

    /// `a:b : c` as lower-case names, white space dropped.
    static func names(_ v: [UInt8]) -> [String] {
        var out: [String] = []
        var current: [UInt8] = []
        current.reserveCapacity(16)
        for c in v {
            if isWSP(c) { continue }
            if c == UInt8(ascii: ":") {
                if !current.isEmpty { out.append(String(decoding: current, as: UTF8.self)) }
                current.removeAll(keepingCapacity: true)
            } else {
                current.append(c >= 65 && c <= 90 ? c | 0x20 : c)
            }
        }
        if !current.isEmpty { out.append(String(decoding: current, as: UTF8.self)) }
        return out
    }

    static func isWSP(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 13 || c == 10 }
    static func isAlnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 122) }

    static func trim(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var a = s.startIndex
        var b = s.endIndex
        while a < b, isWSP(s[a]) { a += 1 }
        while b > a, isWSP(s[b - 1]) { b -= 1 }
        return s[a..<b]
    }

    static func text(_ v: [UInt8]) -> String { String(decoding: v, as: UTF8.self) }

    /// Tags by name, looked up in order (a dozen at most).
    struct Lookup {
        let tags: [(String, [UInt8])]
        init(_ tags: [(String, [UInt8])]) { self.tags = tags }
        subscript(_ name: String) -> [UInt8]? { tags.first { $0.0 == name }?.1 }
    }

    /// The value without any whitespace (base64 values may be folded).
    static func compact(_ v: [UInt8]) -> [UInt8] { v.filter { !isWSP($0) } }
}

/// A parsed DKIM-Signature header field.
public struct DKIMSignature: Sendable, Equatable {
    public var algorithm: DKIMAlgorithm
    public var signature: [UInt8]
    public var bodyHash: [UInt8]
    public var headerCanonicalization: Canonicalization
    public var bodyCanonicalization: Canonicalization
    /// `d=`, lower case.
    public var domain: String
    public var selector: String
    public var signedHeaders: [String]
    /// `i=`; defaults to `@d`.
    public var identity: String
    public var bodyLength: Int?
    public var timestamp: Int?
    public var expiration: Int?

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case syntax(String)
        case unsupported(String)

        public var description: String {
            switch self {
            case .syntax(let s): "signature syntax error: \(s)"
            case .unsupported(let s): s
            }
        }
    }

    /// Parses the value of a DKIM-Signature field.
    public static func parse(_ value: ArraySlice<UInt8>) throws(ParseError) -> DKIMSignature {
        guard let tags = TagList.parse(value) else { throw .syntax("malformed tag list") }
        let t = TagList.Lookup(tags)
        for required in ["v", "a", "b", "bh", "d", "h", "s"] where t[required] == nil { throw .syntax("missing \(required)=") }
        guard TagList.text(t["v"]!) == "1" else { throw .unsupported("unsupported version v=\(TagList.text(t["v"]!))") }
        guard let algorithm = DKIMAlgorithm(rawValue: TagList.text(t["a"]!).lowercased()) else {
            throw .unsupported("unknown algorithm a=\(TagList.text(t["a"]!))")
        }
        guard let signature = Base64.decode(t["b"]!), !signature.isEmpty else { throw .syntax("b= is not base64") }
        guard let bodyHash = Base64.decode(t["bh"]!), !bodyHash.isEmpty else { throw .syntax("bh= is not base64") }
        var hc = Canonicalization.simple
        var bc = Canonicalization.simple
        if let c = t["c"] {
            let parts = TagList.text(c).lowercased().split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, let h = Canonicalization(rawValue: String(parts[0])) else { throw .syntax("bad c=") }
            hc = h
            if parts.count == 2 {
                guard let b = Canonicalization(rawValue: String(parts[1])) else { throw .syntax("bad c=") }
                bc = b
            }
        }
        let domain = TagList.text(t["d"]!).lowercased()
        guard !domain.isEmpty else { throw .syntax("empty d=") }
        let selector = TagList.text(t["s"]!).lowercased()
        guard !selector.isEmpty else { throw .syntax("empty s=") }
        let signed = TagList.names(t["h"]!)
        guard signed.contains("from") else { throw .syntax("h= does not include From") }
        var identity = "@" + domain
        if let i = t["i"] {
            identity = TagList.text(i)
            guard let at = identity.lastIndex(of: "@") else { throw .syntax("i= has no @") }
            let idDomain = identity[identity.index(after: at)...].lowercased()
            guard idDomain == domain || idDomain.hasSuffix("." + domain) else { throw .syntax("i= is not in the d= domain") }
        }
        func number(_ k: String) throws(ParseError) -> Int? {
            guard let v = t[k] else { return nil }
            guard !v.isEmpty, v.count <= 18, v.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(TagList.text(v)) else {
                throw .syntax("\(k)= is not a number")
            }
            return n
        }
        if let q = t["q"], !TagList.names(q).contains("dns/txt") {
            throw .unsupported("no supported query method in q=")
        }
        let l = try number("l")
        let ts = try number("t")
        let x = try number("x")
        if let ts, let x, x < ts { throw .syntax("x= is before t=") }
        return DKIMSignature(
            algorithm: algorithm, signature: signature, bodyHash: bodyHash, headerCanonicalization: hc, bodyCanonicalization: bc,
            domain: domain, selector: selector, signedHeaders: signed, identity: identity, bodyLength: l, timestamp: ts, expiration: x)
    }

    /// The name of the key record.
    public var keyName: String { "\(selector)._domainkey.\(domain)" }

    /// The raw field with the value of `b=` removed (with its whitespace), as it is hashed.
    public static func withoutSignatureValue(_ raw: [UInt8]) -> [UInt8] {
        guard let colon = raw.firstIndex(of: UInt8(ascii: ":")) else { return raw }
        var out = Array(raw[...colon])
        var i = colon + 1
        while i < raw.count {
            let end = raw[i...].firstIndex(of: UInt8(ascii: ";")) ?? raw.count
            let part = raw[i..<end]
            if let eq = part.firstIndex(of: UInt8(ascii: "=")), TagList.trim(part[..<eq]).elementsEqual("b".utf8) {
                out += raw[i...eq]
                // Keep a final CRLF that ended the field inside this tag.
                if end == raw.count, raw.count >= 2, raw[raw.count - 2] == 13, raw[raw.count - 1] == 10 { out += [13, 10] }
            } else {
                out += part
            }
            if end < raw.count { out.append(UInt8(ascii: ";")) }
            i = end + 1
        }
        return out
    }
}

/// A DKIM key record (RFC 6376 §3.6.1).
public struct DKIMKeyRecord: Sendable {
    public var keyType: KeyType
    /// `p=` decoded; empty means revoked.
    public var publicKey: [UInt8]
    /// `h=`: acceptable hash algorithms; nil allows all.
    public var hashes: [String]?
    /// `t=s`: the i= domain must equal d=.
    public var strict: Bool
    /// `t=y`: the domain is testing DKIM.
    public var testing: Bool

    public static func parse(_ text: [UInt8]) -> Result<DKIMKeyRecord, DKIMSignature.ParseError> {
        guard let tags = TagList.parse(text) else { return .failure(.syntax("malformed key record")) }
        var t: [String: [UInt8]] = [:]
        for (k, v) in tags { t[k] = v }
        if let v = t["v"] {
            guard tags.first?.0 == "v", TagList.text(v) == "DKIM1" else { return .failure(.syntax("key record v= is not DKIM1")) }
        }
        var keyType = KeyType.rsa
        if let k = t["k"] {
            guard let kt = KeyType(rawValue: TagList.text(k).lowercased()) else { return .failure(.unsupported("unknown key type k=\(TagList.text(k))")) }
            keyType = kt
        }
        guard let p = t["p"] else { return .failure(.syntax("key record without p=")) }
        guard let key = Base64.decode(p) else { return .failure(.syntax("p= is not base64")) }
        let hashes = t["h"].map(TagList.names)
        if let s = t["s"] {
            let services = TagList.names(s)
            guard services.contains("*") || services.contains("email") else { return .failure(.unsupported("key is not for email (s=)")) }
        }
        let flags = t["t"].map(TagList.names) ?? []
        return .success(DKIMKeyRecord(keyType: keyType, publicKey: key, hashes: hashes, strict: flags.contains("s"), testing: flags.contains("y")))
    }
}
