// A domain name as DNS carries it: labels of up to 63 bytes, at most 255 bytes on the wire.
// Compared and hashed without regard to ASCII case (RFC 4343); kept in lower case.

public struct DNSName: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// Wire form, lower-cased: length-prefixed labels ending with the empty root label.
    public let wire: [UInt8]

    public static let root = DNSName(uncheckedWire: [0])

    /// Hashes the wire bytes in one call (per-byte combining was a hot spot of cached lookups).
    public func hash(into hasher: inout Hasher) {
        wire.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    public static func == (a: DNSName, b: DNSName) -> Bool { a.wire == b.wire }

    init(uncheckedWire: [UInt8]) { wire = uncheckedWire }

    /// From labels (raw bytes); throws when a label is empty or too long or the name is too long.
    public init(labels: [[UInt8]]) throws(DNSNameError) {
        var w: [UInt8] = []
        w.reserveCapacity(labels.reduce(1) { $0 + $1.count + 1 })
        for l in labels {
            guard !l.isEmpty else { throw .emptyLabel }
            guard l.count <= 63 else { throw .labelTooLong }
            w.append(UInt8(l.count))
            for b in l { w.append(b >= 0x41 && b <= 0x5A ? b | 0x20 : b) }
        }
        w.append(0)
        guard w.count <= 255 else { throw .nameTooLong }
        wire = w
    }

    /// From text: `mx.example.test` or `mx.example.test.` (the same name), `\.` and `\DDD` escapes.
    /// `.` alone is the root.
    public init(_ text: String) throws(DNSNameError) {
        if text == "." { self = .root; return }
        // The common case, plain ASCII without escapes: the wire form in one pass.
        if let w = Self.plainWire(text) {
            self = DNSName(uncheckedWire: w)
            return
        }
        var labels: [[UInt8]] = []
        var label: [UInt8] = []
        let b = Array(text.utf8)
        guard !b.isEmpty else { throw .emptyLabel }
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: ".") {
                guard !label.isEmpty else { throw .emptyLabel }
                labels.append(label)
                label = []
                i += 1
                if i == b.count { break }  // trailing dot
                continue
            }
            if c == UInt8(ascii: "\\") {
                guard i + 1 < b.count else { throw .badEscape }
                let isDigit = { (x: UInt8) in x >= 0x30 && x <= 0x39 }
                if isDigit(b[i + 1]) {
                    guard i + 3 < b.count, isDigit(b[i + 2]), isDigit(b[i + 3]) else { throw .badEscape }
                    let v = Int(b[i + 1] - 0x30) * 100 + Int(b[i + 2] - 0x30) * 10 + Int(b[i + 3] - 0x30)
                    guard v <= 255 else { throw .badEscape }
                    label.append(UInt8(v))
                    i += 4
                } else {
                    label.append(b[i + 1])
                    i += 2
                }
                continue
            }
            label.append(c)
            i += 1
        }
        if !label.isEmpty { labels.append(label) }
        try self.init(labels: labels)
    }

    /// Wire form of an ASCII name without escapes, or nil (then the general parser decides,
    /// including which error to report).
    static func plainWire(_ text: String) -> [UInt8]? {
        var w: [UInt8] = [0]
        w.reserveCapacity(text.utf8.count + 2)
        var start = 0  // index of the current label's length byte
        for b in text.utf8 {
            if b == UInt8(ascii: ".") {
                let n = w.count - start - 1
                guard n > 0, n <= 63 else { return nil }
                w[start] = UInt8(n)
                start = w.count
                w.append(0)
            } else {
                guard b < 0x80, b != UInt8(ascii: "\\") else { return nil }
                w.append(b >= 0x41 && b <= 0x5A ? b | 0x20 : b)
            }
        }
        let n = w.count - start - 1
        if n == 0 {
            guard start > 0 else { return nil }  // empty text
        } else {
            guard n <= 63 else { return nil }
            w[start] = UInt8(n)
            w.append(0)
        }
        guard w.count <= 255 else { return nil }
        return w
    }

    /// The labels, in order.
    public var labels: [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        while i < wire.count, wire[i] != 0 {
            let n = Int(wire[i])
            out.append(wire[(i + 1)..<(i + 1 + n)])
            i += 1 + n
        }
        return out
    }

    public var labelCount: Int {
        var n = 0
        var i = 0
        while i < wire.count, wire[i] != 0 {
            n += 1
            i += 1 + Int(wire[i])
        }
        return n
    }
    public var isRoot: Bool { wire.count == 1 }

    /// The name without its first label (the root's parent is the root).
    public var parent: DNSName {
        guard !isRoot else { return self }
        return DNSName(uncheckedWire: Array(wire[(1 + Int(wire[0]))...]))
    }

    /// Whether `self` is `other` or below it.
    public func isSubdomain(of other: DNSName) -> Bool {
        guard wire.count >= other.wire.count else { return false }
        var n = self
        while n.wire.count > other.wire.count { n = n.parent }
        return n == other
    }

    /// `label.self`: prefixes one label (e.g. `_dmarc`).
    public func prepending(_ label: String) throws(DNSNameError) -> DNSName {
        try DNSName(labels: [Array(label.utf8)] + labels.map(Array.init))
    }

    /// Presentation form with the trailing dot, as `dig` prints it; special bytes escaped.
    public var description: String { presentation(trailingDot: true) }

    /// Without the trailing dot (what mail code compares against).
    public var text: String { isRoot ? "." : presentation(trailingDot: false) }

    func presentation(trailingDot: Bool) -> String {
        if isRoot { return "." }
        var out: [UInt8] = []
        out.reserveCapacity(wire.count + 4)
        var i = 0
        while i < wire.count, wire[i] != 0 {
            let n = Int(wire[i])
            if i > 0 { out.append(UInt8(ascii: ".")) }
            for b in wire[(i + 1)...(i + n)] {
                switch b {
                case UInt8(ascii: "."), UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: ";"), UInt8(ascii: "("), UInt8(ascii: ")"):
                    out.append(UInt8(ascii: "\\"))
                    out.append(b)
                case 0x21...0x7E:
                    out.append(b)
                default:
                    out.append(UInt8(ascii: "\\"))
                    out.append(0x30 + b / 100)
                    out.append(0x30 + b / 10 % 10)
                    out.append(0x30 + b % 10)
                }
            }
            i += 1 + n
        }
        if trailingDot { out.append(UInt8(ascii: ".")) }
        return String(decoding: out, as: UTF8.self)
    }

    public static func < (a: DNSName, b: DNSName) -> Bool { a.wire.lexicographicallyPrecedes(b.wire) }
}

public enum DNSNameError: Error, Sendable, Equatable {
    case emptyLabel, labelTooLong, nameTooLong, badEscape
}
