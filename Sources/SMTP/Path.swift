// RFC 5321 §4.1.2 path grammar, checked over bytes in place (no allocation), with the
// RFC 6531 extensions for UTF-8 local parts and U-label domains.
//
//   Path = "<" [ A-d-l ":" ] Mailbox ">"      ; source routes are parsed and ignored
//   Mailbox = Local-part "@" ( Domain / address-literal )
//   Local-part = Dot-string / Quoted-string

/// Where the parts of a parsed path lie in the command line.
public struct ParsedPath: Sendable, Equatable {
    /// The mailbox `local@domain` (without brackets and source route); empty for `<>`.
    public var mailbox: Range<Int>
    public var localPart: Range<Int>
    public var domain: Range<Int>
    /// Index just after the closing `>`.
    public var end: Int
    public var isNull: Bool { mailbox.isEmpty }
    /// The mailbox has bytes outside ASCII (needs SMTPUTF8).
    public var isUTF8: Bool
}

/// Why a path did not parse.
public enum PathError: Error, Sendable, Equatable {
    case syntax
    case tooLong
    case nullNotAllowed
}

public enum PathParser {
    public static let maxLocalPart = 64
    public static let maxDomain = 255
    public static let maxPath = 256

    /// Parses a path starting at `start` (which must be `<`).
    /// - Parameters:
    ///   - allowNull: `<>` is allowed (reverse path).
    ///   - allowPostmaster: `<postmaster>` without a domain is allowed (RCPT).
    public static func parse(
        _ b: UnsafeRawBufferPointer, from start: Int, to end: Int,
        allowNull: Bool, allowPostmaster: Bool
    ) -> Result<ParsedPath, PathError> {
        var i = start
        guard i < end, b[i] == UInt8(ascii: "<") else { return .failure(.syntax) }
        i += 1
        if i < end, b[i] == UInt8(ascii: ">") {
            return allowNull
                ? .success(ParsedPath(mailbox: i..<i, localPart: i..<i, domain: i..<i, end: i + 1, isUTF8: false))
                : .failure(.nullNotAllowed)
        }
        // Source route: "@" Domain *( "," "@" Domain ) ":"
        if i < end, b[i] == UInt8(ascii: "@") {
            while true {
                guard i < end, b[i] == UInt8(ascii: "@") else { return .failure(.syntax) }
                guard let d = scanDomain(b, from: i + 1, to: end, utf8: false), d.upperBound > i + 1 else {
                    return .failure(.syntax)
                }
                i = d.upperBound
                guard i < end else { return .failure(.syntax) }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: ":") { i += 1; break }
                return .failure(.syntax)
            }
        }
        let mailboxStart = i
        var utf8 = false
        // Local part
        if i < end, b[i] == UInt8(ascii: "\"") {
            i += 1
            while true {
                guard i < end else { return .failure(.syntax) }
                let c = b[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c == UInt8(ascii: "\\") {
                    guard i + 1 < end, b[i + 1] >= 32, b[i + 1] <= 126 else { return .failure(.syntax) }
                    i += 2
                    continue
                }
                if c >= 0x80 { utf8 = true; i += 1; continue }
                guard c >= 32, c <= 126 else { return .failure(.syntax) }
                i += 1
            }
        } else {
            var atomStart = i
            while true {
                while i < end, isAtext(b[i]) || b[i] >= 0x80 {
                    if b[i] >= 0x80 { utf8 = true }
                    i += 1
                }
                guard i > atomStart else { return .failure(.syntax) }
                if i < end, b[i] == UInt8(ascii: ".") {
                    i += 1
                    atomStart = i
                    continue
                }
                break
            }
        }
        let localPart = mailboxStart..<i
        if i < end, b[i] == UInt8(ascii: ">"), allowPostmaster, !utf8,
            localPart.count == 10, b.matchesKeyword("postmaster", at: mailboxStart)
        {
            return .success(ParsedPath(mailbox: localPart, localPart: localPart, domain: i..<i, end: i + 1, isUTF8: false))
        }
        guard i < end, b[i] == UInt8(ascii: "@") else { return .failure(.syntax) }
        i += 1
        let domainStart = i
        if i < end, b[i] == UInt8(ascii: "[") {
            guard let lit = scanAddressLiteral(b, from: i, to: end) else { return .failure(.syntax) }
            i = lit
        } else {
            guard let d = scanDomain(b, from: i, to: end, utf8: true), !d.isEmpty else { return .failure(.syntax) }
            if b.containsNonASCII(from: d.lowerBound, to: d.upperBound) { utf8 = true }
            i = d.upperBound
        }
        let domain = domainStart..<i
        guard i < end, b[i] == UInt8(ascii: ">") else { return .failure(.syntax) }
        if utf8, !isValidUTF8(b, from: mailboxStart, to: i) { return .failure(.syntax) }
        if localPart.count > maxLocalPart || domain.count > maxDomain || (i + 1 - start) > maxPath {
            return .failure(.tooLong)
        }
        return .success(ParsedPath(mailbox: mailboxStart..<i, localPart: localPart, domain: domain, end: i + 1, isUTF8: utf8))
    }

    /// Scans `sub-domain *("." sub-domain)` with an optional trailing dot. Returns the range scanned,
    /// or nil on a malformed label. Labels are 1–63 bytes; bytes ≥ 0x80 count as letters when `utf8`.
    static func scanDomain(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int, utf8: Bool) -> Range<Int>? {
        var i = start
        var labels = 0
        while true {
            let labelStart = i
            while i < end {
                let c = b[i]
                if isLetDig(c) || c == UInt8(ascii: "-") || (utf8 && c >= 0x80) { i += 1 } else { break }
            }
            let len = i - labelStart
            if len == 0 {
                // Allow one trailing dot after at least one label ("example.com.").
                if labels > 0, b[i - 1] == UInt8(ascii: ".") { return start..<i }
                return labels == 0 ? start..<start : nil
            }
            if len > 63 || b[labelStart] == UInt8(ascii: "-") || b[i - 1] == UInt8(ascii: "-") { return nil }
            labels += 1
            if i < end, b[i] == UInt8(ascii: ".") { i += 1; continue }
            return start..<i
        }
    }

    /// Scans `"[" ( IPv4 / "IPv6:" IPv6 / tag ":" dcontent ) "]"`; returns the index after `]`.
    static func scanAddressLiteral(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int) -> Int? {
        guard let close = b.firstIndex(of: UInt8(ascii: "]"), from: start + 1, to: end) else { return nil }
        let inner = (start + 1)..<close
        guard !inner.isEmpty else { return nil }
        if isIPv4(b, inner) { return close + 1 }
        if inner.count > 5, b.matchesKeyword("ipv6:", at: inner.lowerBound) {
            return isIPv6(b, (inner.lowerBound + 5)..<inner.upperBound) ? close + 1 : nil
        }
        // General-address-literal: Standardized-tag ":" 1*dcontent
        guard let colon = b.firstIndex(of: UInt8(ascii: ":"), from: inner.lowerBound, to: inner.upperBound),
            colon > inner.lowerBound, colon + 1 < inner.upperBound
        else { return nil }
        for k in inner.lowerBound..<colon where !(isLetDig(b[k]) || b[k] == UInt8(ascii: "-")) { return nil }
        for k in (colon + 1)..<inner.upperBound {
            let c = b[k]
            if c < 33 || c > 126 || c == UInt8(ascii: "[") || c == UInt8(ascii: "]") || c == UInt8(ascii: "\\") {
                return nil
            }
        }
        return close + 1
    }

    static func isIPv4(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Bool {
        var parts = 0
        var i = r.lowerBound
        while i < r.upperBound {
            var value = 0
            var digits = 0
            while i < r.upperBound, isDigit(b[i]) {
                value = value * 10 + Int(b[i] - 48)
                digits += 1
                i += 1
                if digits > 3 { return false }
            }
            if digits == 0 || value > 255 { return false }
            parts += 1
            if i < r.upperBound {
                guard b[i] == UInt8(ascii: "."), parts < 4 else { return false }
                i += 1
                if i == r.upperBound { return false }
            }
        }
        return parts == 4
    }

    static func isIPv6(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Bool {
        guard r.count >= 2, r.count <= 45 else { return false }
        var groups = 0
        var doubleColon = false
        var i = r.lowerBound
        if b[i] == UInt8(ascii: ":") {
            guard i + 1 < r.upperBound, b[i + 1] == UInt8(ascii: ":") else { return false }
            doubleColon = true
            i += 2
            if i == r.upperBound { return true }
        }
        while i < r.upperBound {
            let groupStart = i
            while i < r.upperBound, isHex(b[i]) { i += 1 }
            let len = i - groupStart
            if i < r.upperBound, b[i] == UInt8(ascii: ".") {
                // Embedded IPv4 at the end.
                return isIPv4(b, groupStart..<r.upperBound) && (groups + 2 == 8 || (doubleColon && groups + 2 < 8))
            }
            guard len >= 1, len <= 4 else { return false }
            groups += 1
            if i == r.upperBound { break }
            guard b[i] == UInt8(ascii: ":") else { return false }
            i += 1
            if i < r.upperBound, b[i] == UInt8(ascii: ":") {
                if doubleColon { return false }
                doubleColon = true
                i += 1
                if i == r.upperBound { break }
            } else if i == r.upperBound {
                return false
            }
        }
        return doubleColon ? groups < 8 : groups == 8
    }

    @inline(__always) static func isHex(_ c: UInt8) -> Bool {
        isDigit(c) || ((c | 0x20) >= 97 && (c | 0x20) <= 102)
    }

    /// Strict UTF-8 validation (no overlongs, no surrogates, ≤ U+10FFFF).
    public static func isValidUTF8(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int) -> Bool {
        var i = start
        while i < end {
            let c = b[i]
            if c < 0x80 { i += 1; continue }
            var need = 0
            var min: UInt32 = 0
            var cp: UInt32 = 0
            if c & 0xE0 == 0xC0 { need = 1; min = 0x80; cp = UInt32(c & 0x1F) }
            else if c & 0xF0 == 0xE0 { need = 2; min = 0x800; cp = UInt32(c & 0x0F) }
            else if c & 0xF8 == 0xF0 { need = 3; min = 0x10000; cp = UInt32(c & 0x07) }
            else { return false }
            guard i + need < end else { return false }
            for k in 1...need {
                let cc = b[i + k]
                guard cc & 0xC0 == 0x80 else { return false }
                cp = (cp << 6) | UInt32(cc & 0x3F)
            }
            if cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) { return false }
            i += need + 1
        }
        return true
    }
}
