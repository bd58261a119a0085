import Reactor
import SMTP

/// How a delegate answers the end of a message.
public enum MessageDisposition {
    /// Reply now (250 after storing, or an error).
    case reply(Reply)
    /// The reply comes later through `InboundSession.complete(_:)` (e.g. after a group commit);
    /// the session stops reading until then.
    case later
}

/// What an inbound session asks of the code that owns the mail: policy and storage.
/// All calls happen on the session's event loop, while the session's state machine is running:
/// use the copy passed in (`smtp`: envelope, HELO name…), not `session.machine`.
public protocol InboundDelegate: AnyObject {
    func sessionOpened(_ session: InboundSession)
    /// Policy for MAIL FROM (with `policyEvents`); nil accepts.
    func checkSender(_ session: InboundSession, _ smtp: ServerStateMachine) -> Reply?
    /// Policy for MAIL FROM that may answer later (`InboundSession.completeSender`); the default
    /// asks `checkSender`.
    func senderDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision
    /// Policy for the last RCPT TO (with `policyEvents`); nil accepts.
    func checkRecipient(_ session: InboundSession, _ smtp: ServerStateMachine) -> Reply?
    /// Policy for the last RCPT TO that may answer later (`InboundSession.completeRecipient`);
    /// the default asks `checkRecipient`.
    func recipientDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision
    /// A message body begins; forget any body bytes of an earlier, refused message.
    func messageStart(_ session: InboundSession)
    /// The same, with a copy of the state machine (the envelope the body is for); the default
    /// calls `messageStart(_:)`.
    func messageStart(_ session: InboundSession, _ smtp: ServerStateMachine)
    /// Message content, dot-unstuffed, as a slice of the read buffer (valid during the call).
    func messageBody(_ session: InboundSession, _ bytes: UnsafeRawBufferPointer)
    func messageComplete(_ session: InboundSession, _ smtp: ServerStateMachine) -> MessageDisposition
    func sessionClosed(_ session: InboundSession, error: ReactorError?)
    /// AUTH credentials: the outcome now, or nil and later `InboundSession.completeAuth`. The
    /// default refuses.
    func authenticate(_ session: InboundSession, _ smtp: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome?
}

extension InboundDelegate {
    public func sessionOpened(_ session: InboundSession) {}
    public func checkSender(_ session: InboundSession, _ smtp: ServerStateMachine) -> Reply? { nil }
    public func senderDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision {
        checkSender(session, smtp).map { .reject($0) } ?? .accept
    }
    public func checkRecipient(_ session: InboundSession, _ smtp: ServerStateMachine) -> Reply? { nil }
    public func recipientDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision {
        checkRecipient(session, smtp).map { .reject($0) } ?? .accept
    }
    public func sessionClosed(_ session: InboundSession, error: ReactorError?) {}
    public func messageStart(_ session: InboundSession) {}
    public func messageStart(_ session: InboundSession, _ smtp: ServerStateMachine) { messageStart(session) }
    public func authenticate(_ session: InboundSession, _ smtp: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome? {
        .refused(.authFailed)
    }
}

/// What every session of one loop shares: the configuration, the delegate and the output buffer.
public final class InboundContext {
    /// The engine's settings; replaceable (SIGHUP): new sessions use the new ones. Loop thread only.
    public var server: ServerContext
    public let delegate: InboundDelegate
    /// The server certificates for TLS (STARTTLS is offered when the engine's configuration says
    /// so). Replaceable (certificate reload): new handshakes use the new one, running sessions
    /// keep theirs. Loop thread only.
    public var tls: TLSContext?
    /// Implicit TLS (RFC 8314, port 465): the handshake comes first, the greeting after it.
    public let implicitTLS: Bool
    let out = OutputBuffer(capacity: 64 * 1024)
    /// Where TLS sessions decrypt into: the machine parses there, in place, and only what it
    /// leaves unconsumed is copied into the session.
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * 1024, alignment: 16)

    deinit { scratch.deallocate() }

    public init(server: ServerContext, delegate: InboundDelegate, tls: TLSContext? = nil, implicitTLS: Bool = false) {
        self.server = server
        self.delegate = delegate
        self.tls = tls
        self.implicitTLS = implicitTLS
    }
}

/// Drives a `ServerStateMachine` over a reactor `Connection`: every command in a read is answered
/// and the replies leave in one write (RFC 2920).
public final class InboundSession: ConnectionHandler, ServerEventHandler {
    /// The session's state machine. Not to be read from delegate callbacks (it is running then).
    public private(set) var machine: ServerStateMachine
    let context: InboundContext
    public private(set) weak var connection: Connection?
    /// Free for the delegate: its per-session state.
    public var state: AnyObject? = nil
    /// After STARTTLS: the TLS session, and decrypted input the machine has not consumed yet.
    var tls: TLSConnection? = nil
    var plaintext: [UInt8] = []
    var tlsRequested = false
    /// The session runs over TLS (its handshake finished).
    public var isTLS: Bool { machine.isTLS }
    /// The TLS version and cipher, for the Received header ("TLSv1.3 TLS_AES_256_GCM_SHA384").
    public var tlsDescription: String? { tls.flatMap { $0.isEstablished ? "\($0.protocolVersion) \($0.cipher)" : nil } }

    public init(context: InboundContext) {
        self.context = context
        machine = ServerStateMachine(context: context.server)
    }

    public func connectionActive(_ c: Connection) {
        connection = c
        context.delegate.sessionOpened(self)
        if context.implicitTLS {
            // The client speaks first (ClientHello); the greeting follows the handshake.
            guard let ctx = context.tls, let t = try? TLSConnection(ctx) else {
                c.close()
                return
            }
            tls = t
            startClocks(c)
            return
        }
        machine.start(into: context.out)
        startClocks(c)
        flush(c)
    }

    public func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        if let tls {
            receiveTLS(c, tls, bytes)
            return bytes.count
        }
        let consumed = drive(c, bytes)
        flush(c)
        if tlsRequested {
            // The 220 left in plaintext; what the client pipelined behind STARTTLS was consumed
            // by the machine and is dropped with the rest of this read.
            tlsRequested = false
            guard let ctx = context.tls, let t = try? TLSConnection(ctx) else {
                c.close()
                return bytes.count
            }
            tls = t
            return bytes.count
        }
        if machine.isClosed {
            c.close()
            return bytes.count
        }
        armDeadline(c)
        return consumed
    }

    /// Ciphertext in: the handshake first, then decrypted commands through the machine.
    func receiveTLS(_ c: Connection, _ tls: TLSConnection, _ bytes: UnsafeRawBufferPointer) {
        tls.receive(bytes)
        if !tls.isEstablished {
            let progress = tls.advance()
            tls.drainOutput { c.write($0) }
            switch progress {
            case .needMore: return
            case .established:
                machine.tlsEstablished()
                if context.implicitTLS { machine.start(into: context.out) }
            case .failed(let why):
                tlsFailure = why
                c.close()
                return
            case .closed:
                c.close()
                return
            }
        }
        let scratch = context.scratch
        while true {
            let (n, progress) = tls.read(into: scratch)
            if n > 0 { takePlaintext(c, UnsafeRawBufferPointer(rebasing: scratch[0..<n])) }
            if c.isClosed || machine.isClosed { break }
            if progress == .needMore {
                if n == scratch.count { continue }
                break
            }
            // The peer closed TLS: answer what it sent, then close.
            if plaintext.isEmpty || !machine.isAwaitingDecision {
                flush(c)
                closeInOrder(c)
                return
            }
            break
        }
        drivePlaintext(c)
    }

    /// Decrypted bytes: parsed where they are when nothing is pending, kept otherwise.
    func takePlaintext(_ c: Connection, _ p: UnsafeRawBufferPointer) {
        guard plaintext.isEmpty, !machine.isAwaitingDecision else {
            plaintext.append(contentsOf: p)
            return
        }
        let consumed = drive(c, p)
        if consumed < p.count, !machine.isClosed { plaintext.append(contentsOf: p[consumed...]) }
    }

    /// Runs the machine over the decrypted input kept so far.
    func drivePlaintext(_ c: Connection) {
        if !plaintext.isEmpty, !machine.isAwaitingDecision {
            let consumed = plaintext.withUnsafeBytes { drive(c, $0) }
            plaintext.removeFirst(consumed)
        }
        flush(c)
        if machine.isClosed {
            closeInOrder(c)
            return
        }
        armDeadline(c)
    }

    /// Closes after the last reply: under TLS close_notify goes first (`TLSConnection.shutdown`).
    func closeInOrder(_ c: Connection) {
        tls?.shutdown { c.write($0) }
        c.close()
    }

    /// Runs the state machine over `bytes`; a sender or message answered `.later` pauses reading.
    func drive(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        let wasData = machine.isReceivingData, lines = machine.linesRead
        let consumed = machine.consume(bytes, into: context.out, handler: self)
        if machine.isAwaitingDecision { c.pauseReading() }
        noteProgress(consumed: consumed, wasData: wasData, lines: lines)
        return consumed
    }

    // MARK: Time limits
    //
    // The one place a session's time limits are kept. The reactor does not move the deadline on
    // reads (a byte every few seconds would hold a session for ever); the session moves it:
    // - a command must arrive whole within `commandTimeout` of the one before (bytes of it do not
    //   extend that);
    // - data (DATA, BDAT) must arrive within `dataTimeout`, extended only while it averages at
    //   least `minDataRate` bytes a second since the last extension;
    // - the client must take our replies: no progress in sending for `writeTimeout` aborts the
    //   connection (no 421: it would not be read either);
    // - the whole session ends at `sessionTimeout`.
    // A decision the server is waiting for (the spool, a DNS check) never times the client out.

    var sessionDeadline: UInt64 = .max
    var commandDeadline: UInt64 = .max
    var dataDeadline: UInt64 = .max
    var dataMark: (at: UInt64, bytes: Int) = (0, 0)
    /// Output waiting since `at`, when the connection had sent `sent` bytes in all.
    var writeMark: (at: UInt64, sent: UInt64)? = nil
    /// A write timeout ended the session (the machine never knew).
    var abortReason: String? = nil

    var limits: ServerConfiguration { machine.configuration }

    func startClocks(_ c: Connection) {
        c.movesDeadlineOnRead = false
        let now = ReactorSystem.now()
        if limits.sessionTimeout > 0 { sessionDeadline = now &+ limits.sessionTimeout }
        commandDeadline = now &+ limits.commandTimeout
        armDeadline(c)
    }

    func noteProgress(consumed: Int, wasData: Bool, lines: Int) {
        guard machine.isReceivingData || wasData || machine.linesRead != lines else { return }
        let now = ReactorSystem.now()
        if machine.isReceivingData {
            if !wasData {
                dataMark = (now, 0)
                dataDeadline = now &+ limits.dataTimeout
            }
            dataMark.bytes += consumed
            let seconds = max(1, Double(now &- dataMark.at) / 1e9)
            if Double(dataMark.bytes) >= Double(limits.minDataRate) * seconds {
                dataMark = (now, 0)
                dataDeadline = now &+ limits.dataTimeout
            }
        } else {
            // A command (or the end of the data) arrived: the next one has its full time.
            commandDeadline = now &+ limits.commandTimeout
        }
    }

    /// The earliest limit that applies now, as the connection's deadline.
    func armDeadline(_ c: Connection) {
        guard !c.isClosed else { return }
        var due = min(sessionDeadline, machine.isReceivingData ? dataDeadline : commandDeadline)
        if machine.isClosed { due = .max }
        if let w = writeMark { due = min(due, w.at &+ limits.writeTimeout) }
        if due != .max { c.expire(at: due) }
    }

    /// After output was written: whether some of it waits for the client to read.
    func noteOutput(_ c: Connection) {
        if c.bufferedOutput > 0 {
            if writeMark == nil {
                writeMark = (ReactorSystem.now(), c.bytesSent)
                armDeadline(c)
            }
        } else {
            writeMark = nil
        }
    }

    public func connectionTimedOut(_ c: Connection) {
        let now = ReactorSystem.now()
        if let w = writeMark {
            if c.bufferedOutput == 0 {
                writeMark = nil
            } else if c.bytesSent != w.sent {
                writeMark = (now, c.bytesSent)
            } else if now &- w.at >= limits.writeTimeout {
                abortReason = "write timeout: the client read none of our replies for \(limits.writeTimeout / 1_000_000_000) s"
                c.abort()
                return
            }
        }
        if machine.isClosed {
            // Closing after the last reply: only the write timeout is left to watch.
            armDeadline(c)
            return
        }
        if now >= sessionDeadline {
            return expire(c, "session time limit (\(limits.sessionTimeout / 1_000_000_000) s) (421 4.4.2)")
        }
        if machine.isAwaitingDecision {
            // Ours to answer, not the client's to send: its time starts again after our reply.
            commandDeadline = max(commandDeadline, now &+ limits.commandTimeout)
            armDeadline(c)
            return
        }
        if machine.isReceivingData, now >= dataDeadline {
            return expire(c, "data timeout: under \(limits.minDataRate) bytes/s for \(limits.dataTimeout / 1_000_000_000) s (421 4.4.2)")
        }
        if !machine.isReceivingData, now >= commandDeadline {
            return expire(c, "command timeout: no whole command in \(limits.commandTimeout / 1_000_000_000) s (421 4.4.2)")
        }
        armDeadline(c)
    }

    func expire(_ c: Connection, _ why: String) {
        machine.timedOut(why, into: context.out)
        flush(c)
        closeInOrder(c)
        armDeadline(c)
    }

    /// Gives the final reply to a message answered `.later`, and resumes reading.
    public func complete(_ reply: Reply) {
        guard let c = connection, !c.isClosed else { return }
        machine.finishMessage(reply, into: context.out)
        resume(c)
    }

    /// Gives the MAIL FROM reply decided later (nil accepts), and resumes reading: the commands
    /// the client pipelined behind MAIL are answered then.
    public func completeSender(_ rejection: Reply?) {
        guard let c = connection, !c.isClosed else { return }
        _ = machine.resolveSender(rejection, into: context.out)
        resume(c)
    }

    /// Gives the RCPT TO reply decided later (nil accepts), and resumes reading.
    public func completeRecipient(_ rejection: Reply?) {
        guard let c = connection, !c.isClosed else { return }
        _ = machine.resolveRecipient(rejection, into: context.out)
        resume(c)
    }

    /// Gives the AUTH outcome decided later, and resumes reading.
    public func completeAuth(_ outcome: AuthOutcome) {
        guard let c = connection, !c.isClosed else { return }
        _ = machine.resolveAuth(outcome, into: context.out)
        resume(c)
    }

    /// The delegate cannot take more input now (a message body it streams to disk has more
    /// buffered than it should hold): reading stops until `releaseInput()`. TCP flow control
    /// pushes back on the client meanwhile; the data deadline is not moved by the wait.
    public func holdInput() {
        inputHeld = true
        connection?.pauseReading()
    }

    /// Reading goes on after `holdInput()` (unless a decision is still awaited: then it goes on
    /// with that decision's reply).
    public func releaseInput() {
        guard inputHeld else { return }
        inputHeld = false
        guard let c = connection, !c.isClosed, !machine.isAwaitingDecision else { return }
        c.resumeReading()
        if tls != nil { drivePlaintext(c) }
    }

    var inputHeld = false

    /// After a decision that came later: its reply goes out, then the session closes (the
    /// decision ended it) or reads on, answering what the client pipelined meanwhile.
    func resume(_ c: Connection) {
        // Our reply came: the client's time for its next command starts now (a long wait for
        // the spool must not have used it up).
        commandDeadline = ReactorSystem.now() &+ limits.commandTimeout
        flush(c)
        if machine.isClosed {
            closeInOrder(c)
            return
        }
        if shutdownPending {
            shutdown()
            return
        }
        if inputHeld { return }
        c.resumeReading()
        if tls != nil { drivePlaintext(c) }
    }

    /// Sends the replies written so far (encrypted once TLS runs).
    func flush(_ c: Connection) {
        let out = context.out
        guard !out.isEmpty else { return }
        if let tls, tls.isEstablished {
            tls.write(out.bytes)
            tls.drainOutput { c.write($0) }
        } else {
            c.write(out.bytes)
        }
        out.clear()
        noteOutput(c)
    }

    /// Why the TLS handshake failed, when it did.
    var tlsFailure: String? = nil

    /// Why the server ended the session, for its log line: a TLS handshake that failed, or what
    /// the state machine closed it for (nil: the client quit or went away).
    public var closeReason: String? {
        if let tlsFailure { return "TLS handshake failed: \(tlsFailure)" }
        return abortReason ?? machine.closeReason
    }

    /// A shutdown came while a decision was pending: the 421 follows its reply.
    var shutdownPending = false

    /// Says 421 and closes (server shutdown). A session waiting for a decision — above all a
    /// message waiting for the spool — first gets that decision's reply: a message the spool
    /// stores is answered 250, never 421 (the client would send it again: a second copy), and
    /// one it does not store in time is withdrawn and answered 451 (spool-timeout).
    public func shutdown() {
        guard let c = connection, !c.isClosed else { return }
        if machine.isAwaitingDecision {
            shutdownPending = true
            return
        }
        machine.shutdown(into: context.out)
        flush(c)
        closeInOrder(c)
    }

    public func connectionClosed(_ c: Connection, error: ReactorError?) {
        context.delegate.sessionClosed(self, error: error)
    }

    // MARK: ServerEventHandler: forwards to the delegate.

    public func messageStart() { context.delegate.messageStart(self) }
    public func messageStart(_ smtp: ServerStateMachine) { context.delegate.messageStart(self, smtp) }
    public func messageBody(_ bytes: UnsafeRawBufferPointer) { context.delegate.messageBody(self, bytes) }
    public func checkSender(_ smtp: ServerStateMachine) -> Reply? { context.delegate.checkSender(self, smtp) }
    public func senderDecision(_ smtp: ServerStateMachine) -> PolicyDecision { context.delegate.senderDecision(self, smtp) }
    public func checkRecipient(_ smtp: ServerStateMachine) -> Reply? { context.delegate.checkRecipient(self, smtp) }
    public func recipientDecision(_ smtp: ServerStateMachine) -> PolicyDecision { context.delegate.recipientDecision(self, smtp) }
    public func startTLS() { tlsRequested = true }
    public func authenticate(_ smtp: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome? {
        context.delegate.authenticate(self, smtp, user: user, password: password)
    }
    public func messageComplete(_ smtp: ServerStateMachine) -> Reply? {
        switch context.delegate.messageComplete(self, smtp) {
        case .reply(let r): return r
        case .later: return nil
        }
    }
}
