// Byte-level helpers: SMTP verbs and keywords are compared as bytes with ASCII case folding.

@usableFromInline let CR: UInt8 = 13
@usableFromInline let LF: UInt8 = 10
@usableFromInline let SP: UInt8 = 32

@inline(__always) func lower(_ b: UInt8) -> UInt8 {
    (b >= 65 && b <= 90) ? b | 0x20 : b
}

@inline(__always) func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }
@inline(__always) func isAlpha(_ b: UInt8) -> Bool { let l = b | 0x20; return l >= 97 && l <= 122 }
@inline(__always) func isLetDig(_ b: UInt8) -> Bool { isAlpha(b) || isDigit(b) }

/// RFC 5322 atext (ASCII part).
@inline(__always) func isAtext(_ b: UInt8) -> Bool {
    if isLetDig(b) { return true }
    switch b {
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
        UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"),
        UInt8(ascii: "="), UInt8(ascii: "?"), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
        UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

extension UnsafeRawBufferPointer {
    /// Case-insensitive ASCII comparison of `self[range]` with a lower-case keyword.
    @inline(__always)
    func matchesKeyword(_ keyword: StaticString, at start: Int) -> Bool {
        let n = keyword.utf8CodeUnitCount
        guard start + n <= count else { return false }
        let k = keyword.utf8Start
        for i in 0..<n where lower(self[start + i]) != k[i] { return false }
        return true
    }

    /// Index of the first `byte` in `self[from..<to]`, using memchr-like scanning.
    @inline(__always)
    func firstIndex(of byte: UInt8, from: Int, to: Int) -> Int? {
        guard from < to, let base = baseAddress else { return nil }
        var i = from
        // Word-at-a-time would be faster; the loop is tight enough that the compiler vectorises it poorly,
        // so check 8 bytes per step via a has-zero-byte trick.
        let pattern = UInt64(byte) &* 0x0101_0101_0101_0101
        while i + 8 <= to {
            let w = (base + i).loadUnaligned(as: UInt64.self) ^ pattern
            if (w &- 0x0101_0101_0101_0101) & ~w & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        while i < to {
            if base.load(fromByteOffset: i, as: UInt8.self) == byte { return i }
            i += 1
        }
        return nil
    }

    /// Whether `self[from..<to]` contains any byte with the high bit set.
    func containsNonASCII(from: Int, to: Int) -> Bool {
        var i = from
        while i < to {
            if self[i] >= 0x80 { return true }
            i += 1
        }
        return false
    }
}
