// Case-insensitive comparison of local parts, as chasquid normalises them (PRECIS
// UsernameCaseMapped: width mapping and Unicode full case folding; canonical equivalence comes with
// Swift's String equality and hashing). `Straße`, `STRASSE` and `strasse` are one user;
// `ＢＯＢ` (fullwidth) is `bob`; the Greek final sigma matches the medial one.

public enum CaseFolding {
    /// The folded form of `s`. ASCII-only input (the common case) takes a byte fast path.
    public static func fold(_ s: String) -> String {
        var ascii = true
        var upper = false
        for b in s.utf8 {
            if b >= 0x80 { ascii = false; break }
            if b >= 0x41 && b <= 0x5A { upper = true }
        }
        if ascii {
            guard upper else { return s }
            return String(decoding: s.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
        }
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for scalar in s.unicodeScalars {
            if let mapped = exceptions[scalar.value] {
                out += mapped
            } else {
                out += scalar.properties.lowercaseMapping
            }
        }
        return out
    }
}
