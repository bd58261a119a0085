// One loop that drives a server state machine over a buffer, shared by the reactor's inbound
// session, the dialog runner and the benchmarks.

/// What the code driving a server session does with its events.
public protocol ServerEventHandler: AnyObject {
    /// A message body begins: forget body bytes of an earlier, refused message.
    func messageStart()
    /// The same, with a copy of the running state machine (its envelope: the recipients the body
    /// is for). The default calls `messageStart()`.
    func messageStart(_ session: ServerStateMachine)
    /// Message content, dot-unstuffed, valid during the call.
    func messageBody(_ bytes: UnsafeRawBufferPointer)
    /// MAIL FROM (with `policyEvents`): nil accepts, a reply refuses. `session` is a copy of the
    /// running state machine (its envelope, HELO name…): the machine itself is busy during the call.
    func checkSender(_ session: ServerStateMachine) -> Reply?
    /// The last RCPT TO (with `policyEvents`): nil accepts, a reply refuses.
    func checkRecipient(_ session: ServerStateMachine) -> Reply?
    /// The end of a message: the final reply, or nil when it comes later through `finishMessage`.
    func messageComplete(_ session: ServerStateMachine) -> Reply?
    /// MAIL FROM, when the decision may take time (an SPF check asks DNS): `.later` leaves the
    /// machine awaiting `resolveSender`. The default asks `checkSender`.
    func senderDecision(_ session: ServerStateMachine) -> PolicyDecision
    /// The last RCPT TO, when the decision may take time (another process resolves it):
    /// `.later` leaves the machine awaiting `resolveRecipient`. The default asks `checkRecipient`.
    func recipientDecision(_ session: ServerStateMachine) -> PolicyDecision
    /// STARTTLS was accepted and its 220 is in the output: flush it, then run the TLS handshake
    /// and call `tlsEstablished()` on the machine. Whatever followed the STARTTLS line in the
    /// input has been consumed and must be dropped. Only drivers whose configuration offers
    /// STARTTLS receive it.
    func startTLS()
    /// AUTH credentials to check: the outcome now, or nil when it comes later through
    /// `resolveAuth` (the machine waits; the driver stops reading). The default refuses.
    func authenticate(_ session: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome?
}

/// The answer to an AUTH attempt.
public enum AuthOutcome: Sendable, Equatable {
    /// The credentials are good: the session is authenticated as this user.
    case authenticated(String)
    /// 535 5.7.8 for bad credentials (wrong user and wrong password alike), 454 4.7.0 when the
    /// client may not try now.
    case refused(Reply)
}

/// A policy answer that may come later.
public enum PolicyDecision: Sendable, Equatable {
    case accept
    case reject(Reply)
    /// The driver pauses; the answer comes through `resolveSender` or `resolveRecipient` (the
    /// session stops reading).
    case later
}

extension ServerEventHandler {
    public func messageStart(_ session: ServerStateMachine) { messageStart() }

    public func senderDecision(_ session: ServerStateMachine) -> PolicyDecision {
        checkSender(session).map { .reject($0) } ?? .accept
    }

    public func recipientDecision(_ session: ServerStateMachine) -> PolicyDecision {
        checkRecipient(session).map { .reject($0) } ?? .accept
    }

    public func startTLS() {}

    public func authenticate(_ session: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome? {
        .refused(.authFailed)
    }
}

extension ServerStateMachine {
    /// Runs `process` over `bytes` until it needs more input, waits for a decision
    /// (`isAwaitingDecision`: a sender or message whose reply comes later), starts TLS, or closes
    /// (`isClosed`).
    /// - Returns: the number of bytes consumed; the rest must be presented again.
    @inlinable
    public mutating func consume(_ bytes: UnsafeRawBufferPointer, into out: OutputBuffer, handler: some ServerEventHandler) -> Int {
        var consumed = 0
        while true {
            if isAwaitingDecision { return consumed }
            let (k, event) = process(UnsafeRawBufferPointer(rebasing: bytes[consumed...]), into: out)
            let base = consumed
            consumed += k
            switch event {
            case .needInput:
                return consumed
            case .messageStart:
                handler.messageStart(self)
            case .body(let r):
                handler.messageBody(UnsafeRawBufferPointer(rebasing: bytes[(base + r.lowerBound)..<(base + r.upperBound)]))
            case .checkSender:
                switch handler.senderDecision(self) {
                case .accept: _ = resolveSender(nil, into: out)
                case .reject(let r): if resolveSender(r, into: out) == .close { return bytes.count }
                case .later: return consumed
                }
            case .checkRecipient:
                switch handler.recipientDecision(self) {
                case .accept: _ = resolveRecipient(nil, into: out)
                case .reject(let r): if resolveRecipient(r, into: out) == .close { return bytes.count }
                case .later: return consumed
                }
            case .message:
                if let reply = handler.messageComplete(self) { finishMessage(reply, into: out) }
            case .startTLS:
                // Plaintext pipelined behind STARTTLS is consumed here and never reaches the
                // session: the driver drops it.
                handler.startTLS()
                return bytes.count
            case .authenticate:
                let (user, password) = takeCredentials()
                guard let outcome = handler.authenticate(self, user: user, password: password) else { return consumed }
                if resolveAuth(outcome, into: out) == .close { return bytes.count }
            case .close:
                return bytes.count
            }
        }
    }
}
