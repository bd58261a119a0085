// TLS over OpenSSL 3, sans I/O: a connection reads and writes memory BIOs, so the reactor (either
// backend) moves the ciphertext and the protocol code sees plaintext. The call order follows
// OpenSSL's non-blocking model: feed what arrived (`receive`), let it work (`advance` during the
// handshake, `read` after), send what it produced (`takeOutput`).

import CTernSystem

public enum TLSError: Error, Equatable, CustomStringConvertible {
    /// A certificate or key file that cannot be used, named.
    case file(String, String)
    case setup(String)

    public var description: String {
        switch self {
        case .file(let path, let why): "\(path): \(why)"
        case .setup(let why): "TLS set-up failed: \(why)"
        }
    }

    static func openSSL() -> String { OpenSSL.takeError() }
}

/// OpenSSL's error queue.
public enum OpenSSL {
    /// The reason of the oldest error queued (the queue is emptied), or "unknown error".
    public static func takeError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "unknown error" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Settings shared by many connections: the role, Tern's protocol policy, the certificate (server)
/// or the trust store (client). Thread-safe once made.
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let isServer: Bool

    deinit { SSL_CTX_free(ctx) }

    private init(server: Bool) throws(TLSError) {
        guard let c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) else { throw .setup(TLSError.openSSL()) }
        ctx = c
        isServer = server
        guard tern_tls_configure(c, server ? 1 : 0) == 1 else { throw .setup(TLSError.openSSL()) }
    }

    /// A server context with a certificate chain (leaf first, PEM) and its private key.
    public static func server(certificateChain: String, privateKey: String) throws(TLSError) -> TLSContext {
        let t = try TLSContext(server: true)
        guard SSL_CTX_use_certificate_chain_file(t.ctx, certificateChain) == 1 else {
            throw .file(certificateChain, "not a usable PEM certificate chain (\(TLSError.openSSL()))")
        }
        guard SSL_CTX_use_PrivateKey_file(t.ctx, privateKey, SSL_FILETYPE_PEM) == 1, SSL_CTX_check_private_key(t.ctx) == 1 else {
            let why = TLSError.openSSL()
            if why.contains("mismatch") || why.contains("does not match") {
                throw .file(privateKey, "does not match the certificate in \(certificateChain)")
            }
            throw .file(privateKey, "not a usable PEM private key (\(why))")
        }
        return t
    }

    /// The server context for several certificates: `contexts[0]` answers by default, and a
    /// client's SNI name picks the first whose certificate carries that name.
    public static func selectingByName(_ contexts: [TLSContext]) throws(TLSError) -> TLSContext {
        guard let first = contexts.first else { throw .setup("no certificate") }
        if contexts.count > 1 {
            let pointers: [OpaquePointer?] = contexts.map { $0.ctx }
            guard pointers.withUnsafeBufferPointer({ tern_tls_set_sni(first.ctx, $0.baseAddress, Int32($0.count)) }) == 1 else {
                throw .setup("SNI table")
            }
        }
        return first
    }

    /// A client context. The peer's certificate is checked against `caFile` (PEM), or the system
    /// trust store when nil; the result is reported (`TLSConnection.verification`), not enforced
    /// here: the caller's policy decides.
    public static func client(caFile: String? = nil, maxVersion: Int32 = 0) throws(TLSError) -> TLSContext {
        let t = try TLSContext(server: false)
        if let caFile {
            guard SSL_CTX_load_verify_locations(t.ctx, caFile, nil) == 1 else { throw .file(caFile, "not a usable PEM CA file (\(TLSError.openSSL()))") }
        } else if SSL_CTX_set_default_verify_paths(t.ctx) != 1 {
            throw .setup(TLSError.openSSL())
        }
        SSL_CTX_set_verify(t.ctx, SSL_VERIFY_NONE, nil)
        if maxVersion != 0 { _ = tern_tls_set_max_version(t.ctx, maxVersion) }
        return t
    }
}

/// One TLS connection over memory buffers.
public final class TLSConnection {
    let ssl: OpaquePointer
    /// Ciphertext in (what the peer sent) and out (what to send).
    let incoming: OpaquePointer
    let outgoing: OpaquePointer
    public private(set) var isEstablished = false

    public enum Progress: Equatable {
        /// More bytes from the peer are needed (send the output first: `drainOutput`).
        case needMore
        case established
        /// The peer closed the TLS session (close_notify) or the connection.
        case closed
        case failed(String)
    }

    /// `serverName` (client): sent as SNI, and the name the certificate must carry.
    public init(_ context: TLSContext, serverName: String? = nil) throws(TLSError) {
        guard let s = SSL_new(context.ctx), let rb = BIO_new(BIO_s_mem()), let wb = BIO_new(BIO_s_mem()) else { throw .setup(TLSError.openSSL()) }
        ssl = s
        incoming = rb
        outgoing = wb
        SSL_set_bio(s, rb, wb)
        if context.isServer {
            SSL_set_accept_state(s)
        } else {
            SSL_set_connect_state(s)
            if let serverName, tern_tls_set_server_name(s, serverName) != 1 { throw .setup(TLSError.openSSL()) }
        }
    }

    deinit { SSL_free(ssl) }  // frees both BIOs too

    /// Ciphertext from the peer.
    public func receive(_ bytes: UnsafeRawBufferPointer) {
        var off = 0
        while off < bytes.count {
            var n = 0
            guard BIO_write_ex(incoming, bytes.baseAddress! + off, bytes.count - off, &n) == 1, n > 0 else { return }
            off += n
        }
    }

    public func receive(_ bytes: [UInt8]) { bytes.withUnsafeBytes { receive($0) } }

    /// Ciphertext to send to the peer, copied (empty when there is none); `drainOutput` hands it
    /// over without a copy.
    public func takeOutput() -> [UInt8] {
        var out: [UInt8] = []
        drainOutput { out = Array($0) }
        return out
    }

    /// Hands the ciphertext waiting to be sent to `body` without copying it (valid during the
    /// call), then forgets it.
    public func drainOutput(_ body: (UnsafeRawBufferPointer) -> Void) {
        var p: UnsafeMutablePointer<CChar>? = nil
        let n = tern_bio_mem_data(outgoing, &p)
        guard n > 0, let p else { return }
        body(UnsafeRawBufferPointer(start: p, count: n))
        tern_bio_reset(outgoing)
    }

    /// Runs the handshake as far as the bytes received allow.
    public func advance() -> Progress {
        if isEstablished { return .established }
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            isEstablished = true
            return .established
        }
        let p = progress(after: rc)
        // A handshake that ends unfinished failed, whatever the way it ended.
        if p == .closed { return .failed(lastError ?? "the handshake ended unfinished") }
        return p
    }

    /// The OpenSSL reason of the last failure, when there was one.
    public private(set) var lastError: String? = nil

    func progress(after rc: Int32) -> Progress {
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .needMore
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            if ERR_peek_error() != 0 { lastError = TLSError.openSSL() }
            return .closed
        default:
            let why = TLSError.openSSL()
            lastError = why
            return .failed(why)
        }
    }

    /// Decrypts into `buffer` as much as it holds: the bytes written and what stopped it
    /// (`.needMore` when all received ciphertext is used up or the buffer is full).
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> (count: Int, progress: Progress) {
        var total = 0
        while total < buffer.count {
            var n = 0
            if SSL_read_ex(ssl, buffer.baseAddress! + total, buffer.count - total, &n) == 1 {
                total += n
                continue
            }
            let p = progress(after: 0)
            if p == .needMore, !isEstablished, SSL_is_init_finished(ssl) == 1 { isEstablished = true }
            return (total, p)
        }
        return (total, .needMore)
    }

    /// Plaintext received so far, appended to `into`; `.needMore` when all of it was taken. (The
    /// servers decrypt into a scratch buffer instead: `read(into:)` with a buffer pointer.)
    public func read(into buffer: inout [UInt8]) -> Progress {
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 1)
        defer { chunk.deallocate() }
        while true {
            let (n, p) = read(into: chunk)
            buffer += chunk.prefix(n)
            if n < chunk.count || p != .needMore { return p }
        }
    }

    /// Encrypts `plaintext`; the ciphertext waits for `drainOutput`. Returns how much was taken
    /// (all of it with memory BIOs, unless the connection failed).
    @discardableResult
    public func write(_ plaintext: UnsafeRawBufferPointer) -> Int {
        var off = 0
        while off < plaintext.count {
            var n = 0
            guard SSL_write_ex(ssl, plaintext.baseAddress! + off, plaintext.count - off, &n) == 1 else {
                ERR_clear_error()
                break
            }
            off += n
        }
        return off
    }

    @discardableResult
    public func write(_ plaintext: [UInt8]) -> Int { plaintext.withUnsafeBytes { write($0) } }

    /// close_notify was sent.
    public private(set) var closeNotifySent = false

    /// Ends the session in good order (RFC 8446 §6.1): close_notify, once, handed to `write` with
    /// anything else still queued. Every orderly close of an established TLS session — ours after
    /// QUIT or 221, or an answer to the peer's close_notify — goes through here before the socket
    /// is closed, so strict peers (that do not ignore an unexpected EOF) see a clean end.
    public func shutdown(_ write: (UnsafeRawBufferPointer) -> Void) {
        guard isEstablished, !closeNotifySent else { return }
        closeNotifySent = true
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
        drainOutput(write)
    }

    /// "TLSv1.3", "TLSv1.2".
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// The negotiated cipher suite.
    public var cipher: String { SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "" }

    /// The SNI name a client asked for (server side).
    public var requestedServerName: String? {
        SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }
    }

    public enum Verification: Equatable {
        /// The chain leads to a trusted root and the certificate carries the name asked for.
        case verified
        /// The session is encrypted, but the certificate could not be trusted (the reason says why).
        case unverified(String)
    }

    /// Client side, once established: what the peer's certificate is worth.
    public var verification: Verification {
        guard let cert = SSL_get1_peer_certificate(ssl) else { return .unverified("no certificate") }
        X509_free(cert)
        let result = SSL_get_verify_result(ssl)
        if result == X509_V_OK { return .verified }
        return .unverified(String(cString: X509_verify_cert_error_string(result)))
    }
}
