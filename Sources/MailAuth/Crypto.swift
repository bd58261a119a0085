// The crypto DKIM needs, through OpenSSL's EVP API (the library TLS links anyway): SHA-256 that
// streams, RSA and Ed25519 keys (PEM private keys, DKIM `p=` public keys), signing, verifying,
// key generation. (Base64 lives in the SMTP module.) Digests are fetched once (OpenSSL 3 is slow at name lookups).

import CTernSystem
import Reactor
import SMTP
import Synchronization

/// The EVP digest, fetched once for the process.
nonisolated(unsafe) private let sha256Digest: OpaquePointer = EVP_MD_fetch(nil, "SHA256", nil)!

/// SHA-256 over bytes given in pieces.
public final class SHA256Stream {
    private let ctx: OpaquePointer

    public init() {
        ctx = EVP_MD_CTX_new()!
        EVP_DigestInit_ex(ctx, sha256Digest, nil)
    }

    deinit { EVP_MD_CTX_free(ctx) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(ctx, bytes.baseAddress, bytes.count) }
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The digest; the stream starts over afterwards.
    public func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &n)
        EVP_DigestInit_ex(ctx, sha256Digest, nil)
        return out
    }

    public static func digest(_ bytes: [UInt8]) -> [UInt8] {
        let s = SHA256Stream()
        s.update(bytes)
        return s.finish()
    }
}

/// The key types DKIM uses (RFC 6376 `k=rsa`, RFC 8463 `k=ed25519`).
public enum KeyType: String, Sendable, Equatable {
    case rsa
    case ed25519
}

public enum CryptoError: Error, Equatable, CustomStringConvertible {
    case unreadableKey(String)
    case unsupportedKey(String)
    case failed(String, reason: String)

    public var description: String {
        switch self {
        case .unreadableKey(let s): "cannot read the key: \(s)"
        case .unsupportedKey(let s): "unsupported key: \(s)"
        case .failed(let what, let reason): "\(what) failed: \(reason)"
        }
    }

    /// `what` failed; OpenSSL's reason is taken now, while it is queued.
    static func failure(_ what: String) -> CryptoError { .failed(what, reason: OpenSSL.takeError()) }
}

/// An OpenSSL key (private or public). Thread-safe for signing and verifying: OpenSSL keys may be
/// used from several threads once loaded.
public final class CryptoKey: @unchecked Sendable {
    let pkey: OpaquePointer
    public let type: KeyType

    private init(_ pkey: OpaquePointer) throws(CryptoError) {
        self.pkey = pkey
        switch EVP_PKEY_get_base_id(pkey) {
        case EVP_PKEY_RSA: type = .rsa
        case EVP_PKEY_ED25519: type = .ed25519
        default:
            EVP_PKEY_free(pkey)
            throw .unsupportedKey("only RSA and Ed25519 keys are used for DKIM")
        }
    }

    deinit {
        for c in verifiers.withLock({ $0 }) { EVP_PKEY_CTX_free(c.ctx) }
        EVP_PKEY_free(pkey)
    }

    /// Size in bits (2048 for RSA-2048, 253 for Ed25519).
    public var bits: Int { Int(EVP_PKEY_get_bits(pkey)) }

    /// A private key from PEM text (PKCS#8 `BEGIN PRIVATE KEY`, or the traditional RSA form).
    public static func privateKey(pem: [UInt8]) throws(CryptoError) -> CryptoKey {
        let bio = pem.withUnsafeBytes { BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }
        defer { BIO_free(bio) }
        if let k = PEM_read_bio_PrivateKey(bio, nil, nil, nil) { return try CryptoKey(k) }
        ERR_clear_error()
        // dkimpy's Ed25519 key files: the 32-byte seed in base64, no PEM armour.
        if let seed = Base64.decode(pem), seed.count == 32,
            let k = seed.withUnsafeBytes({ EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32) })
        {
            return try CryptoKey(k)
        }
        throw .unreadableKey("not a PEM private key (nor a base64 Ed25519 seed)")
    }

    /// A public key as DKIM publishes it in `p=`: SubjectPublicKeyInfo DER for RSA (RFC 6376 §3.6.1;
    /// the bare PKCS#1 form is accepted too), the raw 32 bytes for Ed25519 (RFC 8463 §4).
    public static func publicKey(_ type: KeyType, der: [UInt8]) throws(CryptoError) -> CryptoKey {
        switch type {
        case .ed25519:
            guard der.count == 32,
                let k = der.withUnsafeBytes({ EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, 32) })
            else { throw .unreadableKey("an Ed25519 key is 32 bytes") }
            return try CryptoKey(k)
        case .rsa:
            let k: OpaquePointer? = der.withUnsafeBytes { raw in
                let base = raw.bindMemory(to: UInt8.self).baseAddress
                var p = base
                if let k = d2i_PUBKEY(nil, &p, raw.count) { return k }
                p = base
                return d2i_PublicKey(EVP_PKEY_RSA, nil, &p, raw.count)
            }
            guard let k else {
                ERR_clear_error()
                throw .unreadableKey("not an RSA public key")
            }
            let key = try CryptoKey(k)
            guard key.type == .rsa else { throw .unsupportedKey("k=rsa with a non-RSA key") }
            return key
        }
    }

    /// A new key: RSA of `bits`, or Ed25519.
    public static func generate(_ type: KeyType, bits: Int = 2048) throws(CryptoError) -> CryptoKey {
        guard let ctx = EVP_PKEY_CTX_new_id(type == .rsa ? EVP_PKEY_RSA : EVP_PKEY_ED25519, nil) else { throw .failure("key generation") }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1 else { throw .failure("key generation") }
        if type == .rsa, EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, Int32(bits)) != 1 { throw .failure("key generation") }
        var k: OpaquePointer? = nil
        guard EVP_PKEY_generate(ctx, &k) == 1, let k else { throw .failure("key generation") }
        return try CryptoKey(k)
    }

    /// The private key as PKCS#8 PEM.
    public func privatePEM() throws(CryptoError) -> [UInt8] {
        let bio = BIO_new(BIO_s_mem())
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, pkey, nil, nil, 0, nil, nil) == 1 else { throw .failure("writing the key") }
        var data: UnsafeMutablePointer<CChar>? = nil
        let n = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &data)
        guard n > 0, let data else { throw .failure("writing the key") }
        return Array(UnsafeRawBufferPointer(start: data, count: n))
    }

    /// The public half as DKIM's `p=` wants it (see `publicKey(_:der:)`).
    public func publicKeyBytes() throws(CryptoError) -> [UInt8] {
        switch type {
        case .ed25519:
            var out = [UInt8](repeating: 0, count: 32)
            var n = 32
            guard EVP_PKEY_get_raw_public_key(pkey, &out, &n) == 1 else { throw .failure("exporting the key") }
            return Array(out.prefix(n))
        case .rsa:
            var p: UnsafeMutablePointer<UInt8>? = nil
            let n = i2d_PUBKEY(pkey, &p)
            guard n > 0, let p else { throw .failure("exporting the key") }
            defer { CRYPTO_free(p, #fileID, #line) }
            return Array(UnsafeBufferPointer(start: p, count: Int(n)))
        }
    }

    /// Signs `data`: RSA with SHA-256 (PKCS#1 v1.5), Ed25519 as is (pure Ed25519; DKIM passes it the
    /// SHA-256 of the header data, RFC 8463 §3).
    public func sign(_ data: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard let ctx = EVP_MD_CTX_new() else { throw .failure("signing") }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestSignInit(ctx, nil, type == .rsa ? sha256Digest : nil, nil, pkey) == 1 else { throw .failure("signing") }
        var n = 0
        let ok = data.withUnsafeBytes { d -> Bool in
            let base = d.bindMemory(to: UInt8.self).baseAddress
            guard EVP_DigestSign(ctx, nil, &n, base, d.count) == 1 else { return false }
            return true
        }
        guard ok else { throw .failure("signing") }
        var sig = [UInt8](repeating: 0, count: n)
        let done = data.withUnsafeBytes { d in EVP_DigestSign(ctx, &sig, &n, d.bindMemory(to: UInt8.self).baseAddress, d.count) }
        guard done == 1 else { throw .failure("signing") }
        return Array(sig.prefix(n))
    }

    /// RSA verification contexts, initialised once (OpenSSL 3 looks the algorithm up on every
    /// init, which cost a third of a verification) and reused, one caller at a time each.
    private let verifiers = Mutex<[VerifyContext]>([])

    struct VerifyContext: @unchecked Sendable {
        let ctx: OpaquePointer
    }

    private func takeVerifier() -> OpaquePointer? {
        if let c = verifiers.withLock({ $0.popLast() }) { return c.ctx }
        guard let ctx = EVP_PKEY_CTX_new(pkey, nil) else { return nil }
        guard EVP_PKEY_verify_init(ctx) == 1, EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1,
            EVP_PKEY_CTX_set_signature_md(ctx, sha256Digest) == 1
        else {
            EVP_PKEY_CTX_free(ctx)
            ERR_clear_error()
            return nil
        }
        return ctx
    }

    private func giveBack(_ ctx: OpaquePointer) {
        let kept = verifiers.withLock { pool -> Bool in
            guard pool.count < 16 else { return false }
            pool.append(VerifyContext(ctx: ctx))
            return true
        }
        if !kept { EVP_PKEY_CTX_free(ctx) }
    }

    /// RSA only: whether `signature` signs the SHA-256 digest `sha256` (PKCS#1 v1.5).
    public func verify(sha256 digest: [UInt8], signature: [UInt8]) -> Bool {
        guard type == .rsa, let ctx = takeVerifier() else { return false }
        let rc = signature.withUnsafeBytes { s in
            digest.withUnsafeBytes { d in
                EVP_PKEY_verify(ctx, s.bindMemory(to: UInt8.self).baseAddress, s.count, d.bindMemory(to: UInt8.self).baseAddress, d.count)
            }
        }
        if rc != 1 { ERR_clear_error() }
        giveBack(ctx)
        return rc == 1
    }

    /// Whether `signature` is this key's signature of `data` (same algorithms as `sign`).
    public func verify(_ data: [UInt8], signature: [UInt8]) -> Bool {
        if type == .rsa { return verify(sha256: SHA256Stream.digest(data), signature: signature) }
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestVerifyInit(ctx, nil, type == .rsa ? sha256Digest : nil, nil, pkey) == 1 else {
            ERR_clear_error()
            return false
        }
        let rc = data.withUnsafeBytes { d in
            signature.withUnsafeBytes { s in
                EVP_DigestVerify(ctx, s.bindMemory(to: UInt8.self).baseAddress, s.count, d.bindMemory(to: UInt8.self).baseAddress, d.count)
            }
        }
        if rc != 1 { ERR_clear_error() }
        return rc == 1
    }
}
