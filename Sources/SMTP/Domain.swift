// Domain names as Tern compares them: IDNA A-labels and U-labels are equal, case is folded,
// a trailing dot is dropped (RFC 5890/5891, RFC 3492). The mapping is lower-casing per label;
// full UTS #46 mapping (width folding, NFC) is not applied.

public enum DomainError: Error, Equatable, Sendable {
    case empty
    case labelTooLong(String)
    case tooLong
    case invalidLabel(String)
    case invalidPunycode(String)
}

public struct Domain: Hashable, Sendable, CustomStringConvertible {
    /// The ASCII form: lower-case, A-labels for non-ASCII labels. Equality compares this.
    public let ascii: String
    /// The Unicode form: lower-case, U-labels.
    public let unicode: String

    public init(_ name: String) throws(DomainError) {
        var s = Substring(name)
        if s.hasSuffix(".") { s = s.dropLast() }
        guard !s.isEmpty else { throw .empty }
        var asciiLabels: [String] = []
        var unicodeLabels: [String] = []
        for label in s.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { throw .invalidLabel(String(label)) }
            let lowered = label.lowercased()
            if lowered.hasPrefix("xn--") {
                let rest = String(lowered.dropFirst(4))
                guard lowered.unicodeScalars.allSatisfy(\.isASCII), let u = Punycode.decode(rest),
                    !u.unicodeScalars.allSatisfy(\.isASCII), Self.isValidULabel(u), Punycode.encode(u.lowercased()) == rest
                else { throw .invalidPunycode(String(label)) }
                asciiLabels.append(lowered)
                unicodeLabels.append(u.lowercased())
            } else if lowered.unicodeScalars.allSatisfy(\.isASCII) {
                guard lowered.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 122) })
                else { throw .invalidLabel(String(label)) }
                asciiLabels.append(lowered)
                unicodeLabels.append(lowered)
            } else {
                guard Self.isValidULabel(lowered), let p = Punycode.encode(lowered) else { throw .invalidLabel(String(label)) }
                asciiLabels.append("xn--" + p)
                unicodeLabels.append(lowered)
            }
            guard asciiLabels.last!.utf8.count <= 63 else { throw .labelTooLong(String(label)) }
        }
        ascii = asciiLabels.joined(separator: ".")
        unicode = unicodeLabels.joined(separator: ".")
        guard ascii.utf8.count <= 253 else { throw .tooLong }
    }

    public var description: String { unicode }

    /// A U-label holds letters, digits, marks and hyphens only (an approximation of IDNA2008's
    /// PVALID set: no controls, symbols, punctuation or spaces).
    static func isValidULabel(_ s: String) -> Bool {
        s.unicodeScalars.allSatisfy { u in
            if u.isASCII { return u == "-" || u.properties.isAlphabetic || ("0"..."9").contains(u) }
            switch u.properties.generalCategory {
            case .lowercaseLetter, .uppercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
                .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .letterNumber, .otherNumber:
                return true
            default:
                return false
            }
        }
    }

    public static func == (a: Domain, b: Domain) -> Bool { a.ascii == b.ascii }
    public func hash(into h: inout Hasher) { h.combine(ascii) }
}

/// A mailbox `local@domain` with its domain normalised. Address literals are kept verbatim.
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    public let localPart: String
    /// Nil for an address literal (`user@[192.0.2.1]`) or the bare `postmaster`.
    public let domain: Domain?
    public let literal: String?

    public init(_ address: String) throws(DomainError) {
        guard let at = address.lastIndex(of: "@") else {
            localPart = address
            domain = nil
            literal = nil
            return
        }
        localPart = String(address[..<at])
        let d = String(address[address.index(after: at)...])
        if d.hasPrefix("[") {
            domain = nil
            literal = d.lowercased()
        } else {
            domain = try Domain(d)
            literal = nil
        }
    }

    public var description: String {
        if let d = domain { return "\(localPart)@\(d.unicode)" }
        if let l = literal { return "\(localPart)@\(l)" }
        return localPart
    }

    /// The form to use with a peer that lacks SMTPUTF8: A-label domain.
    public var asciiForm: String {
        if let d = domain { return "\(localPart)@\(d.ascii)" }
        return description
    }
}
