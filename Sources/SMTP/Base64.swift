// Base64 for the SMTP engine (SASL, RFC 4954) and for mail authentication (DKIM).

/// Base64 (RFC 4648): SASL responses (AUTH), DKIM's `b=`/`bh=`/`p=` values. Decoding skips
/// whitespace (folded DKIM values).
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let values: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        let alphabet = Self.alphabet
        var i = 0
        while i + 3 <= bytes.count {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            for s in [18, 12, 6, 0] { out.append(alphabet[Int(v >> UInt32(s) & 63)]) }
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let v = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(rest == 2 ? alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil when a character outside the alphabet (other than whitespace and final padding) appears.
    public static func decode<S: Sequence>(_ text: S) -> [UInt8]? where S.Element == UInt8 {
        if let r = text.withContiguousStorageIfAvailable({ decode(buffer: $0) }) { return r }
        return Array(text).withUnsafeBufferPointer { decode(buffer: $0) }
    }

    static func decode(buffer text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var ok = false
        let bytes = values.withUnsafeBufferPointer { table in
            [UInt8](unsafeUninitializedCapacity: text.count * 3 / 4 + 3) { out, written in
                var acc: UInt32 = 0
                var n = 0
                var padding = 0
                var o = 0
                written = 0
                for c in text {
                    if c == 32 || c == 9 || c == 13 || c == 10 { continue }
                    if c == UInt8(ascii: "=") {
                        padding += 1
                        continue
                    }
                    let v = table[Int(c)]
                    guard v != 0xFF, padding == 0 else { return }
                    acc = acc << 6 | UInt32(v)
                    n += 1
                    if n == 4 {
                        out[o] = UInt8(truncatingIfNeeded: acc >> 16)
                        out[o + 1] = UInt8(truncatingIfNeeded: acc >> 8)
                        out[o + 2] = UInt8(truncatingIfNeeded: acc)
                        o += 3
                        acc = 0
                        n = 0
                    }
                }
                guard padding <= 2 else { return }
                switch n {
                case 0: break
                case 2:
                    out[o] = UInt8(truncatingIfNeeded: acc >> 4)
                    o += 1
                case 3:
                    out[o] = UInt8(truncatingIfNeeded: acc >> 10)
                    out[o + 1] = UInt8(truncatingIfNeeded: acc >> 2)
                    o += 2
                default: return
                }
                written = o
                ok = true
            }
        }
        return ok ? bytes : nil
    }
}
