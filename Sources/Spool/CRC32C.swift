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
}
