// What lets the queue believe smtp's "this session authenticated as USER" (privilege separation,
// docs/security.md): lookup, when it accepts a user and password, issues a token — the expiry
// and an HMAC-SHA256 over the user and that expiry, keyed with a secret only lookup and the
// queue hold (the parent makes it at start and hands it to each as descriptor 4). smtp passes
// the token with every message of that session; the queue checks it before it lets the message
// relay or be signed as the user's. A smtp process that never saw the user log in cannot make
// one. This is the one place tokens are made and checked.
import CTernSystem
import Glibc

public enum UserToken {
    /// The key's size in bytes.
    public static let keySize = 32
    /// How long a token holds (a session never lasts this long: the session time limit).
    public static let lifetime: Int64 = 24 * 3600

    /// A token for `user` (as lookup accepted it), valid until `now + lifetime`.
    public static func make(key: [UInt8], user: String, now: Int64) -> [UInt8] {
        let expiry = UInt64(max(now, 0) + lifetime)
        var out: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: expiry >> (56 - 8 * $0)) }
        out += mac(key: key, user: user, expiry: expiry)
        return out
    }

    /// Whether `token` was made with `key` for exactly `user` and has not expired at `now`.
    public static func holds(_ token: [UInt8], key: [UInt8], user: String, now: Int64) -> Bool {
        guard key.count == keySize, token.count == 8 + 32 else { return false }
        let expiry = token[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard expiry >= UInt64(max(now, 0)) else { return false }
        let want = mac(key: key, user: user, expiry: expiry)
        // Constant time: every byte compared.
        var diff: UInt8 = 0
        for (a, b) in zip(want, token[8...]) { diff |= a ^ b }
        return diff == 0 && want.count == 32
    }

    static func mac(key: [UInt8], user: String, expiry: UInt64) -> [UInt8] {
        var data = Array("tern-user-token-1\u{0}".utf8) + Array(user.utf8) + [0]
        data += (0..<8).map { UInt8(truncatingIfNeeded: expiry >> (56 - 8 * $0)) }
        var out = [UInt8](repeating: 0, count: 32)
        var n = 0
        let ok = key.withUnsafeBytes { k in
            data.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, k.baseAddress, k.count, d.baseAddress, d.count, o.baseAddress, 32, &n) != nil
                }
            }
        }
        return ok && n == 32 ? out : []
    }

    /// A new random key.
    public static func newKey() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<keySize).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    /// The descriptor the parent hands lookup and the queue the key on.
    public static let keyDescriptor: Int32 = 4

    /// The key a child was handed as descriptor `fd` (then closed); nil when that is not the
    /// parent's memory file (`tern_secret_fd`), which is then left alone.
    public static func readKey(fd: Int32 = keyDescriptor) -> [UInt8]? {
        var link = [CChar](repeating: 0, count: 256)
        let n0 = readlink("/proc/self/fd/\(fd)", &link, link.count - 1)
        guard n0 > 0, String(decoding: link[0..<n0].map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("/memfd:tern-secret") else { return nil }
        var key = [UInt8](repeating: 0, count: keySize)
        let n = read(fd, &key, keySize)
        close(fd)
        return n == keySize ? key : nil
    }
}
