// Password hashing for AUTH: scrypt (RFC 7914) through OpenSSL's KDF, stored as a PHC-style
// string, compared in constant time.

import CTernSystem
import SMTP

public enum PasswordError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not a `$scrypt$ln=…,r=…,p=…$SALT$HASH` string, or parameters out of range.
    case malformedHash(String)
    /// OpenSSL refused (out of memory, parameters it will not run).
    case kdfFailed(String)

    public var description: String {
        switch self {
        case .malformedHash(let why): return "not a Tern password hash: \(why)"
        case .kdfFailed(let why): return "scrypt failed: \(why)"
        }
    }
}

public enum Scrypt {
    /// scrypt(P, S, N, r, p, dkLen) of RFC 7914.
    public static func derive(password: [UInt8], salt: [UInt8], n: UInt64, r: UInt64, p: UInt64, length: Int) throws(PasswordError) -> [UInt8] {
        // N·r·128 bytes of work memory, plus a little: allow what the parameters ask for.
        let memory = 128 * r * n + 128 * r * p + (1 << 20)
        var key = [UInt8](repeating: 0, count: length)
        let rc = password.withUnsafeBufferPointer { pw in
            salt.withUnsafeBufferPointer { s in
                key.withUnsafeMutableBufferPointer { k in
                    // OpenSSL takes NULL for an empty password or salt.
                    EVP_PBE_scrypt(
                        pw.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, pw.count,
                        s.baseAddress, s.count, n, r, p, memory, k.baseAddress, length)
                }
            }
        }
        guard rc == 1 else {
            ERR_clear_error()
            throw .kdfFailed("N=\(n) r=\(r) p=\(p)")
        }
        return key
    }
}

/// A stored password: `$scrypt$ln=14,r=8,p=1$<salt, base64>$<key, base64>`.
public struct PasswordHash: Sendable, Equatable, CustomStringConvertible {
    /// log2 of N, r, p.
    public var logN: Int
    public var r: Int
    public var p: Int
    public var salt: [UInt8]
    public var key: [UInt8]

    /// The parameters of new hashes: N = 2^14, r = 8 (16 MiB, a few tens of milliseconds here).
    public static let defaultLogN = 14

    /// Hashes a new password with a random 16-byte salt.
    public static func make(password: [UInt8], logN: Int = defaultLogN, r: Int = 8, p: Int = 1) throws(PasswordError) -> PasswordHash {
        var salt = [UInt8](repeating: 0, count: 16)
        guard RAND_bytes(&salt, Int32(salt.count)) == 1 else { throw .kdfFailed("no random bytes") }
        let key = try Scrypt.derive(password: password, salt: salt, n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p), length: 32)
        return PasswordHash(logN: logN, r: r, p: p, salt: salt, key: key)
    }

    public init(logN: Int, r: Int, p: Int, salt: [UInt8], key: [UInt8]) {
        self.logN = logN
        self.r = r
        self.p = p
        self.salt = salt
        self.key = key
    }

    public init(parsing s: String) throws(PasswordError) {
        let parts = s.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0].isEmpty, parts[1] == "scrypt" else { throw .malformedHash("expected $scrypt$ln=N,r=R,p=P$SALT$HASH") }
        var params: [Substring: Int] = [:]
        for kv in parts[2].split(separator: ",") {
            let pair = kv.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, let v = Int(pair[1]) else { throw .malformedHash("bad parameter '\(kv)'") }
            params[pair[0]] = v
        }
        guard let ln = params["ln"], let r = params["r"], let p = params["p"], params.count == 3 else {
            throw .malformedHash("parameters must be ln, r and p")
        }
        // Bounds that keep a hash file from asking for absurd memory or time.
        guard (1...22).contains(ln), (1...32).contains(r), (1...16).contains(p) else { throw .malformedHash("parameters out of range") }
        guard let salt = Base64.decode(parts[3].utf8), !salt.isEmpty, let key = Base64.decode(parts[4].utf8), key.count >= 16 else {
            throw .malformedHash("salt or hash is not base64")
        }
        self.init(logN: ln, r: r, p: p, salt: salt, key: key)
    }

    public var description: String {
        "$scrypt$ln=\(logN),r=\(r),p=\(p)$\(Base64.encode(salt))$\(Base64.encode(key))"
    }

    /// Whether `password` is this one; the comparison takes the same time wherever they differ.
    public func matches(_ password: [UInt8]) -> Bool {
        guard let derived = try? Scrypt.derive(password: password, salt: salt, n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p), length: key.count) else {
            return false
        }
        return derived.withUnsafeBytes { a in key.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, key.count) == 0 } }
    }
}
