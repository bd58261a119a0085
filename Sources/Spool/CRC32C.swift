// CRC-32C (Castagnoli) for spool record checksums: a torn or garbled record is detected at
// recovery and the log is cut there. The CPU's crc32 instruction where there is one (SSE 4.2; about
// 10 times the table's speed), slicing-by-8 tables otherwise; both give the same values (tested).

import CTernSystem

public enum CRC32C {
    static let hardware = tern_crc32c_hw_available() == 1

    public static func checksum(_ b: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard hardware, let base = b.baseAddress else { return software(b, seed: seed) }
        return ~tern_crc32c_hw(~seed, base, b.count)
    }

    static let tables: [[UInt32]] = {
        var t = Array(repeating: Array(repeating: UInt32(0), count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }()

    /// The portable implementation (also the reference the hardware path is tested against).
    public static func software(_ b: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var c = ~seed
        var i = 0
        let n = b.count
        tables.withUnsafeBufferPointer { t in
            let t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3], t4 = t[4], t5 = t[5], t6 = t[6], t7 = t[7]
            while i + 8 <= n {
                let lo = c ^ (UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24)
                c = t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)] ^ t5[Int((lo >> 16) & 0xFF)] ^ t4[Int(lo >> 24)]
                    ^ t3[Int(b[i + 4])] ^ t2[Int(b[i + 5])] ^ t1[Int(b[i + 6])] ^ t0[Int(b[i + 7])]
                i += 8
            }
            while i < n {
                c = t0[Int((c ^ UInt32(b[i])) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }

    /// The checksum of A followed by B, from `first` (A's checksum, or any seed) and `second`
    /// (B's, computed with seed 0) and B's length: `checksum(B, seed: first)` without reading B
    /// again. A body streamed into the spool is checksummed as it arrives, before the envelope
    /// that precedes it in the record is known. (The GF(2) matrix method, as zlib's crc32_combine.)
    public static func combine(_ first: UInt32, _ second: UInt32, length: Int) -> UInt32 {
        guard length > 0 else { return first }
        func times(_ m: [UInt32], _ v: UInt32) -> UInt32 {
            var v = v, sum: UInt32 = 0, i = 0
            while v != 0 {
                if v & 1 != 0 { sum ^= m[i] }
                v >>= 1
                i += 1
            }
            return sum
        }
        func square(_ m: [UInt32]) -> [UInt32] { (0..<32).map { times(m, m[$0]) } }
        // The operator for one zero bit, then for two, four… zero bits (squared each time).
        var odd = [UInt32](repeating: 0, count: 32)
        odd[0] = 0x82F6_3B78
        var row: UInt32 = 1
        for n in 1..<32 {
            odd[n] = row
            row <<= 1
        }
        var even = square(odd)  // 2 zero bits
        odd = square(even)  // 4 zero bits
        var crc = first
        var len = length
        repeat {
            // The first squaring gives one zero byte.
            even = square(odd)
            if len & 1 != 0 { crc = times(even, crc) }
            len >>= 1
            if len == 0 { break }
            odd = square(even)
            if len & 1 != 0 { crc = times(odd, crc) }
            len >>= 1
        } while len != 0
        return crc ^ second
    }
}
