// One outbound SMTP connection, driven by a task running on the connection's loop: the reactor
// calls the handler methods, which run the client state machine over the replies (through
// TLS after STARTTLS) and hand its events to the task waiting in `next()`. Handler and task
// share the loop thread, so nothing here is locked (hence `@unchecked Sendable`).

import Reactor
import SMTP

final class OutboundSession: ConnectionHandler, @unchecked Sendable {
    let loop: EventLoop
    /// The MX host's name (SNI, and the name the certificate is checked for) and the address used.
    let hostName: String
    let address: String
    let out = OutputBuffer(capacity: 4096)
    var machine: ClientStateMachine
    var connection: Connection?
    let tlsContext: TLSContext
    let idleTimeout: UInt64
    /// A relay host we log in to: its certificate must verify before anything is sent over TLS.
    var requireVerifiedTLS = false
    var tls: TLSConnection? = nil
    /// Decrypted reply bytes not yet consumed by the machine.
    var plain: [UInt8] = []
    /// Events the task has not asked for yet, and the task waiting for one.
    var events: [ClientEvent] = []
    var waiter: UnsafeContinuation<ClientEvent, Never>? = nil
    var connectWaiter: UnsafeContinuation<String?, Never>? = nil
    /// Why the connection is gone (nil while it is up).
    private(set) var ended: String? = nil
    /// The TLS handshake failed (the driver may try again without STARTTLS).
    private(set) var tlsFailed = false
    private(set) var verification: TLSConnection.Verification? = nil

    init(loop: EventLoop, hostName: String, address: String, configuration: ClientConfiguration, tlsContext: TLSContext, idleTimeout: UInt64) {
        self.loop = loop
        self.hostName = hostName
        self.address = address
        self.tlsContext = tlsContext
        self.idleTimeout = idleTimeout
        machine = ClientStateMachine(configuration: configuration)
    }

    /// "mx.example.net[192.0.2.1]", as logs and bounces name a peer.
    /// "mx.example.net[192.0.2.1]"; an address literal is its own name ("[192.0.2.1]").
    var peerName: String { hostName.hasPrefix("[") ? hostName : "\(hostName)[\(address)]" }

    /// The security this session reached: plain, or TLS with or without a verified certificate.
    var securityLevel: SecurityLevel {
        guard machine.isTLS else { return .plain }
        return verification == .verified ? .tlsVerified : .tlsUnverified
    }

    var capabilities: ServerCapabilities { machine.capabilities }
    var isUsable: Bool { ended == nil && connection != nil }

    // MARK: Task side

    /// Connects; nil on success, else why not.
    func connect(port: Int, timeout: UInt64) async -> String? {
        do {
            let c = try loop.connect(host: address, port: port, handler: self)
            connection = c
            c.timeout = timeout
            if ended != nil || c.isClosed { return ended ?? "connection closed" }
            if connectedAt != nil {
                c.timeout = idleTimeout
                return nil
            }
        } catch {
            return error.description
        }
        // The body of `withUnsafeContinuation` runs as a job of its own on the loop, possibly
        // after the reactor has delivered the very event waited for: it looks again first.
        return await withUnsafeContinuation { c in
            if connectedAt != nil {
                c.resume(returning: nil)
            } else if let ended {
                c.resume(returning: ended)
            } else {
                connectWaiter = c
            }
        }
    }

    var connectedAt: UInt64? = nil

    /// The next event of the machine (a failure once the connection is gone).
    func next() async -> ClientEvent {
        if let e = takeEvent() { return e }
        let e = await withUnsafeContinuation { c in
            // Looked at again: the event may have come before this body ran (see `connect`).
            if let e = takeEvent() { c.resume(returning: e) } else { waiter = c }
        }
        // The task resumes on the connection's loop, never on the global pool (debug builds check).
        assert(loop.inEventLoop, "outbound session resumed off its loop")
        return e
    }

    func takeEvent() -> ClientEvent? {
        if !events.isEmpty { return events.removeFirst() }
        if let ended { return .failed(code: 0, text: ended) }
        return nil
    }

    /// Greeting, EHLO (HELO), STARTTLS when offered: `.ready`, or how it failed.
    func hello() async -> ClientEvent {
        while true {
            let e = await next()
            switch e {
            case .ready, .failed, .closed: return e
            default: continue
            }
        }
    }

    enum SendResult {
        case done(TransactionResult)
        /// The connection failed or closed during the transaction.
        case lost(String)
    }

    /// One transaction: commands (pipelined when offered), the body, the replies.
    func send(_ t: ClientTransaction, body: [UInt8]) async -> SendResult {
        guard isUsable else { return .lost(ended ?? "connection closed") }
        if machine.begin(t, into: out) { body.withUnsafeBytes { machine.writeChunkBody($0, into: out) } }
        flush()
        while true {
            switch await next() {
            case .sendBody:
                if machine.usesChunking {
                    body.withUnsafeBytes { machine.writeChunkBody($0, into: out) }
                } else {
                    DotStuffing.stuff(body).withUnsafeBytes { machine.writeDataBody($0, into: out) }
                }
                flush()
            case .transactionDone(let r):
                return .done(r)
            case .closed(let code):
                close()
                return .lost("\(peerName) closed the connection (\(code))")
            case .failed(let code, let text):
                close()
                return .lost(code == 0 ? text : RecipientOutcome.said(host: peerName, code: code, text: text))
            case .ready, .needInput, .startTLS:
                continue
            }
        }
    }

    /// QUIT, without waiting long for the 221: the connection closes either way.
    func quit() async {
        guard isUsable else { return close() }
        machine.quit(into: out)
        flush()
        connection?.timeout = 5_000_000_000
        while true {
            switch await next() {
            case .closed, .failed: return close()
            default: continue
            }
        }
    }

    /// Closes the connection; under TLS close_notify goes first (`TLSConnection.shutdown`).
    func close() {
        let c = connection
        connection = nil
        if ended == nil { ended = "closed" }
        if let c { tls?.shutdown { c.write($0) } }
        c?.close()
    }

    // MARK: Reactor side

    func flush() {
        guard !out.isEmpty, let c = connection else { return out.clear() }
        if let tls, tls.isEstablished {
            _ = tls.write(out.bytes)
            tls.drainOutput { c.write($0) }
        } else {
            c.write(out.bytes)
        }
        out.clear()
    }

    func deliver(_ e: ClientEvent) {
        if let w = waiter {
            waiter = nil
            w.resume(returning: e)
        } else {
            events.append(e)
        }
    }

    func end(_ why: String) {
        guard ended == nil else { return }
        ended = why
        if let w = connectWaiter {
            connectWaiter = nil
            w.resume(returning: why)
        }
        deliver(.failed(code: 0, text: why))
    }

    func connectionActive(_ c: Connection) {
        connectedAt = ReactorSystem.now()
        c.timeout = idleTimeout
        if machine.configuration.implicitTLS { startTLS(c) }
        if let w = connectWaiter {
            connectWaiter = nil
            w.resume(returning: nil)
        }
    }

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let tls else { return replies(bytes) }
        tls.receive(bytes)
        if !tls.isEstablished {
            let progress = tls.advance()
            tls.drainOutput { c.write($0) }
            switch progress {
            case .needMore:
                return bytes.count
            case .established:
                verification = tls.verification
                if requireVerifiedTLS, case .unverified(let why)? = verification {
                    end("the certificate of \(peerName) does not verify (\(why)): not logging in")
                    c.close()
                    return bytes.count
                }
                // STARTTLS: EHLO again; implicit TLS: the greeting comes over TLS.
                if !machine.configuration.implicitTLS { machine.tlsEstablished(into: out) }
                flush()
            case .closed:
                tlsFailed = true
                end("TLS handshake with \(peerName) failed: connection closed")
                c.close()
                return bytes.count
            case .failed(let why):
                tlsFailed = true
                end("TLS handshake with \(peerName) failed: \(why)")
                c.close()
                return bytes.count
            }
        }
        let progress = tls.read(into: &plain)
        if !plain.isEmpty {
            let k = plain.withUnsafeBytes { replies($0) }
            plain.removeFirst(k)
        }
        if case .failed(let why) = progress {
            end("TLS with \(peerName) failed: \(why)")
            c.close()
        }
        if progress == .closed {
            end("\(peerName) closed the TLS session")
            tls.shutdown { c.write($0) }
            c.close()
        }
        return bytes.count
    }

    /// Begins the TLS handshake (after STARTTLS's 220, or at connect for implicit TLS).
    func startTLS(_ c: Connection) {
        // No SNI for an address literal (RFC 6066 §3 has names only): the certificate is then
        // checked without a name, and an address literal keeps no TLS history.
        guard let t = try? TLSConnection(tlsContext, serverName: hostName.hasPrefix("[") ? nil : hostName) else {
            end("cannot start TLS with \(peerName)")
            return c.close()
        }
        tls = t
        _ = t.advance()
        t.drainOutput { c.write($0) }
    }

    /// Runs the machine over reply bytes (decrypted under TLS).
    func replies(_ bytes: UnsafeRawBufferPointer) -> Int {
        var consumed = 0
        while consumed < bytes.count {
            let (k, event) = machine.process(UnsafeRawBufferPointer(rebasing: bytes[consumed...]), into: out)
            consumed += k
            switch event {
            case .needInput:
                flush()
                return consumed
            case .startTLS:
                flush()
                if let c = connection { startTLS(c) }
                // Whatever followed the 220 in clear is dropped (a STARTTLS injection).
                return bytes.count
            default:
                deliver(event)
            }
        }
        flush()
        return consumed
    }

    func connectionEndOfInput(_ c: Connection) {
        end("\(peerName) closed the connection")
        c.close()
    }

    func connectionTimedOut(_ c: Connection) {
        end(connectedAt == nil ? "connect to \(peerName) timed out" : "\(peerName) did not answer in time")
        c.close()
    }

    func connectionClosed(_ c: Connection, error: ReactorError?) {
        if connection === c { connection = nil }
        end(error.map { connectedAt == nil ? "connect to \(peerName): \($0)" : "connection to \(peerName): \($0)" } ?? "connection to \(peerName) closed")
    }
}
