// The daemon's inbound policy and storage: recipients are resolved (aliases, users, relay guard)
// at RCPT; at the end of DATA the message gets its Received header, goes into the spool, and the
// 250 is sent only once the spool's group commit made it durable.
import Config
import Delivery
import Glibc
import IPC
import MailAuth
import Policy
import Reactor
import SMTP
import Server
import Spool

/// Per-session state kept by the delegate.
final class SessionState {
    var resolutions: [[Destination]] = []
    /// The message's header section (kept: the end of data reads and rewrites it) and the rest of
    /// it, streamed to an unnamed file in the spool as it comes (never all in memory).
    var header = HeaderSplitter()
    var stream: BodyStream? = nil
    /// Reading is held until the stream has written what it buffered.
    var holding = false
    /// Set when the session closes: its AUTH check, if still waiting, is skipped.
    let gone = CancelToken()
    /// The SPF check of this transaction's sender: its `Received-SPF:` header, and the result
    /// for Authentication-Results.
    var receivedSPF: [UInt8] = []
    var spf: (result: SPFResult, mailFrom: String, helo: String)? = nil
    /// This message's DKIM signatures, verified as the body streams in (and, for a local sender,
    /// the body hash our own signature needs).
    var dkim: DKIMVerifier? = nil
    let peer: String
    /// The client's address for SPF; nil for the host itself (not checked) or an unparsable one.
    let spfClient: SPFAddress?
    /// The client is the host itself: SPF and DMARC do not apply, its mail is DKIM-signed.
    let isLocal: Bool
    /// The user this session authenticated as (taken at MAIL: AUTH cannot change within a
    /// transaction). Like a local client: no SPF or DMARC, DKIM-signed, may relay.
    var authenticatedUser: String? = nil
    var isTrusted: Bool { isLocal || authenticatedUser != nil }
    init(peer: String) {
        self.peer = peer
        let address = SPFAddress(peer)
        isLocal = address.map(MailDelegate.isThisHost) ?? false
        spfClient = isLocal ? nil : address
    }
}

extension AcceptOutcome {
    var condition: SpoolCondition? {
        if case .failed(let c) = self { return c }
        return nil
    }
}

final class MailDelegate: InboundDelegate {
    let daemon: Daemon
    var sessions: [ObjectIdentifier: InboundSession] = [:]

    init(daemon: Daemon) { self.daemon = daemon }


    func sessionOpened(_ session: InboundSession) {
        sessions[ObjectIdentifier(session)] = session
        session.state = SessionState(peer: session.connection?.peerAddress ?? "unknown")
    }

    func sessionClosed(_ session: InboundSession, error: ReactorError?) {
        sessions[ObjectIdentifier(session)] = nil
        (session.state as? SessionState)?.gone.cancel()
        // A session the server ended says why, with the client (fail2ban reads these lines).
        if let why = session.closeReason {
            Log.mail("closed client=\((session.state as? SessionState)?.peer ?? "unknown"): \(why)")
        }
    }

    /// A client address as a party of the password-check pool (FNV-1a of its text).
    static func party(_ peer: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in peer.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// Mail from the host itself (127.0.0.1, ::1) is not checked: SPF says nothing about local
    /// submissions (policyd-spf skips them too), and a test server on loopback asks no DNS.
    static func isThisHost(_ ip: SPFAddress) -> Bool {
        ip.bytes == [127, 0, 0, 1] || ip.bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// MAIL FROM: the SPF check (RFC 7208) of the sender, or of the HELO name for `<>`, from the
    /// client's address, through the configured resolver. The reply waits for it (the session
    /// stops reading meanwhile); `fail` is refused with 550 5.7.23 unless `spf tag`.
    func senderDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision {
        guard let state = session.state as? SessionState else { return .reject(Policy.storageError) }
        // A spool that cannot take mail now says so at MAIL, before the client sends the data;
        // so does one whose disk has no room for the declared SIZE.
        let spool = daemon.queue.spool
        let condition = spool.condition
        let size = smtp.envelope.declaredSize
        if let refusal = Policy.admission(condition: condition, declaredSize: size, fits: size.flatMap { spool.hasRoom(for: $0) }) {
            let why = condition != .ok ? "\(condition)" : "SIZE=\(size ?? 0) does not fit on the spool's disk"
            Log.mail("refused from=<\(smtp.envelope.sender)> client=\(state.peer): \(why)")
            return .reject(refusal)
        }
        state.resolutions.removeAll()
        state.receivedSPF = []
        state.spf = nil
        state.authenticatedUser = smtp.authenticatedUser
        if let user = smtp.authenticatedUser {
            if let refusal = Policy.senderRefusal(user: user, sender: smtp.envelope.sender, tables: daemon.resolver.current) {
                Log.mail("refused from=<\(smtp.envelope.sender)> user=\(user) client=\(state.peer): not a sender this user may use")
                return .reject(refusal)
            }
            return .accept
        }
        guard let ip = state.spfClient, let dns = daemon.dns, let c = session.connection else { return .accept }
        let sender = smtp.envelope.sender
        let helo = smtp.heloName ?? ""
        let loop = c.loop
        let hostname = daemon.hostname
        let checker = SPFChecker(resolver: dns, receivingHost: hostname)
        let rejects = daemon.spfRejects
        let history = daemon.tlsHistory
        let box = Transfer((session, state))
        Task(executorPreference: loop) {
            let outcome = await checker.check(ip: ip, helo: helo, mailFrom: sender)
            loop.execute {
                let (session, state) = box.value
                state.receivedSPF = Array(outcome.receivedSPF(ip: ip, mailFrom: sender, helo: helo, receiver: hostname).utf8)
                state.spf = (outcome.result, sender, helo)
                if let refusal = Policy.spfRefusal(outcome, reject: rejects) {
                    Log.mail("refused from=<\(sender)> client=\(state.peer): SPF fail: \(outcome.reason)")
                    session.completeSender(refusal)
                    return
                }
                let tlsRefusal: Reply? = outcome.result == .pass ? incomingTLSCheck(history, sender: sender, overTLS: session.isTLS, peer: state.peer) : nil
                session.completeSender(tlsRefusal)
            }
        }
        return .later
    }

    /// AUTH: the password is checked off the loop; the answer comes back to this session's loop.
    func authenticate(_ session: InboundSession, _ smtp: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome? {
        guard let state = session.state as? SessionState, let loop = session.connection?.loop else { return .refused(.authFailed) }
        let box = Transfer(session)
        let peer = state.peer
        // The client's address is the party: a flood from one address (however many sessions)
        // waits its turn behind everyone else's checks.
        daemon.authenticator.check(user: user, password: password, client: peer, party: Self.party(peer), cancel: state.gone, loop: loop) { outcome in
            if case .authenticated = outcome {
                Log.mail("auth: \(user) logged in from \(peer)")
            } else {
                Log.mail("auth: failed for \(user) from \(peer)")
            }
            box.value.completeAuth(outcome)
        }
        return nil
    }

    func checkRecipient(_ session: InboundSession, _ smtp: ServerStateMachine) -> Reply? {
        guard let state = session.state as? SessionState else { return Policy.storageError }
        let envelope = smtp.envelope
        let rcpt = envelope.recipient(envelope.recipientCount - 1)
        switch Policy.recipient(daemon.resolver.current.resolve(rcpt), recipient: rcpt, authenticated: state.authenticatedUser != nil) {
        case .accept(let destinations):
            state.resolutions.append(destinations)
            return nil
        case .refuse(let reply):
            Log.mail("refused rcpt=<\(rcpt)> from=<\(envelope.sender)> client=\(state.peer): \(reply.description)")
            return reply
        }
    }

    func messageStart(_ session: InboundSession) {
        guard let state = session.state as? SessionState else { return }
        clearBody(state)
        state.stream = BodyStream(spool: daemon.queue.spool)
        let sign = state.isTrusted && !daemon.auth.signingKeys.isEmpty
        state.dkim = DKIMVerifier(now: Int(time(nil)), hashForSigning: sign)
    }

    func messageBody(_ session: InboundSession, _ bytes: UnsafeRawBufferPointer) {
        guard let state = session.state as? SessionState else { return }
        state.dkim?.update(bytes)
        let at = state.header.take(bytes)
        guard at < bytes.count, !state.header.isOversized, let stream = state.stream else { return }
        stream.write(UnsafeRawBufferPointer(rebasing: bytes[at...]))
        // A disk slower than the client: stop reading until the stream has caught up, so a
        // session never holds more than about `Self.bodyBuffer` of a message.
        if stream.buffered > Self.bodyBuffer, !state.holding, let loop = session.connection?.loop {
            state.holding = true
            session.holdInput()
            let box = Transfer((session, state))
            stream.whenDrained(below: Self.bodyBuffer / 4) {
                loop.execute {
                    let (session, state) = box.value
                    state.holding = false
                    session.releaseInput()
                }
            }
        }
    }

    /// At most this much of a message body waits in memory for its staged file (beyond the
    /// 64 KiB a small message keeps in memory and the header section).
    static let bodyBuffer = 64 * 1024

    /// What the checks at the end of DATA found.
    struct Checks {
        var dkim: [DKIMVerification]
        var dmarc: DMARCOutcome?
    }

    /// End of DATA: DKIM (and DMARC for remote clients) first — they may have to ask DNS, then the
    /// reply waits — then the spool.
    func messageComplete(_ session: InboundSession, _ smtp: ServerStateMachine) -> MessageDisposition {
        guard let state = session.state as? SessionState, let c = session.connection, let verifier = state.dkim else { return .reply(Policy.storageError) }
        state.dkim = nil
        if state.header.isOversized {
            Log.mail("refused from=<\(smtp.envelope.sender)> client=\(state.peer): header section over \(state.header.limit) bytes")
            clearBody(state)
            return .reply(Policy.headerTooLarge)
        }
        if let refusal = Policy.loopRefusal(receivedFields: Self.receivedCount(state.header.header)) {
            clearBody(state)
            return .reply(refusal)
        }
        let facts = MessageFacts(smtp, tls: session.tlsDescription, authenticated: state.authenticatedUser != nil)
        let settings = daemon.auth
        let dns = daemon.dns
        let needsDMARC = state.spfClient != nil && dns != nil && state.authenticatedUser == nil
        if !needsDMARC, let results = verifier.finishWithoutLookups() {
            return store(session, state, facts, Checks(dkim: results, dmarc: nil), verifier: verifier, settings: settings)
        }
        guard let dns else { return .reply(Policy.storageError) }
        let loop = c.loop
        let spfResult = state.spf?.result ?? SPFResult.none
        let spfDomain = Self.spfDomain(mailFrom: facts.envelope.sender, helo: facts.helo)
        let box = Transfer((self, session, state, verifier))
        Task(executorPreference: loop) {
            let (_, _, _, verifier) = box.value
            let dkim = await verifier.finish(resolver: dns)
            let dmarc: DMARCOutcome? =
                needsDMARC
                ? await DMARCChecker(resolver: dns, suffixes: settings.suffixes).check(
                    header: verifier.header, inputs: DMARCInputs(spf: spfResult, spfDomain: spfDomain, dkim: dkim))
                : nil
            loop.execute {
                let (delegate, session, state, verifier) = box.value
                if case .reply(let r) = delegate.store(session, state, facts, Checks(dkim: dkim, dmarc: dmarc), verifier: verifier, settings: settings) {
                    session.complete(r)
                }
            }
        }
        return .later
    }

    /// The domain SPF checked: MAIL FROM's, or the HELO name for the null sender.
    static func spfDomain(mailFrom: String, helo: String) -> String {
        guard let at = mailFrom.lastIndex(of: "@") else { return helo }
        return String(mailFrom[mailFrom.index(after: at)...])
    }

    func clearBody(_ state: SessionState) {
        // (A stream dropped unfinished takes its staged file with it.)
        state.stream = nil
        state.header.reset()
    }

    /// The session facts the end of a message needs, taken when DATA ends (the checks may finish
    /// later).
    struct MessageFacts: @unchecked Sendable {
        let envelope: Envelope
        let helo: String
        let isExtended: Bool
        /// "TLSv1.3 TLS_AES_256_GCM_SHA384" when the session runs over TLS.
        let tls: String?
        let authenticated: Bool
        init(_ m: ServerStateMachine, tls: String?, authenticated: Bool) {
            self.authenticated = authenticated
            envelope = m.envelope
            helo = m.heloName ?? ""
            isExtended = m.isExtended
            self.tls = tls
        }
    }

    /// DMARC's verdict applied (`dmarc reject|quarantine-header|none`), our DKIM signature made
    /// for a local sender, the trace fields prepended; then into the spool, answered once durable.
    /// `signature`: our DKIM signature when it was made already (nil: not yet). Signing is
    /// RSA or Ed25519 work of a millisecond or more: it runs off the loop, and the message is
    /// stored when it is done (the session waits for its reply meanwhile, as for DNS).
    func store(_ session: InboundSession, _ state: SessionState, _ facts: MessageFacts, _ checks: Checks, verifier: DKIMVerifier, settings: Daemon.AuthSettings, signature made: [UInt8]? = nil) -> MessageDisposition {
        // The client left while the checks ran: it got no 250, so nothing is stored.
        guard let loop = session.connection?.loop else {
            clearBody(state)
            return .reply(Policy.storageError)
        }
        let envelope = facts.envelope
        var marks: [UInt8] = []
        switch Policy.dmarc(checks.dmarc, action: settings.dmarc) {
        case .accept: break
        case .quarantine(let header): marks = Array(header.utf8)
        case .reject(let reply):
            Log.mail("refused from=<\(envelope.sender)> client=\(state.peer): DMARC fail for \(checks.dmarc?.fromDomain ?? "") (p=reject)")
            clearBody(state)
            return .reply(reply)
        }
        let froms = verifier.header.all("from")
        if made == nil, let bodyHash = verifier.signingBodyHash, froms.count == 1, let from = FromAddress.singleDomain(froms[0].unfoldedValue),
            let keys = settings.signingKeys[from]
        {
            let header = verifier.header
            let box = Transfer((self, session, state, verifier))
            Task.detached {
                var signature: [UInt8] = []
                do {
                    signature = try DKIMSigner.signatures(header: header, bodyHash: bodyHash, keys: keys, time: Int(time(nil)))
                } catch {
                    Log.error("dkim: signing for \(from) failed: \(error)")
                }
                let signed = Transfer(signature)
                loop.execute {
                    let (delegate, session, state, verifier) = box.value
                    if case .reply(let r) = delegate.store(session, state, facts, checks, verifier: verifier, settings: settings, signature: signed.value) {
                        session.complete(r)
                    }
                }
            }
            return .later
        }
        let stream = state.stream ?? BodyStream(spool: daemon.queue.spool)
        let content = AuthenticationResults.removingOurs(state.header.header, authservID: daemon.hostname)
        defer { clearBody(state) }
        let signature = made ?? []
        let spool = daemon.queue.spool
        let id = spool.newID()
        let recipients = state.resolutions.enumerated().filter { $0.offset < envelope.recipientCount }.map { i, dests in
            IntakeRecipient(address: envelope.recipient(i), notify: envelope.recipients[i].notify.rawValue, originalRecipient: envelope.originalRecipient(i) ?? "", destinations: dests)
        }
        let deliveries = Intake.deliveries(recipients)
        // Authentication-Results (RFC 8601) first, then Received-SPF, then our Received; an incoming
        // Authentication-Results claiming our name is dropped.
        let authResults = Array(AuthenticationResults.header(authservID: daemon.hostname, spf: state.spf, dkim: checks.dkim, dmarc: checks.dmarc).utf8)
        let receivedField = Intake.receivedStart(
            helo: facts.helo, peer: state.peer, hostname: daemon.hostname, extended: facts.isExtended, tls: facts.tls, authenticated: facts.authenticated,
            smtpUTF8: envelope.smtpUTF8) + Intake.receivedEnd(id: id, recipients: envelope.recipientCount == 1 ? [envelope.recipient(0)] : [])
        let received = authResults + state.receivedSPF + marks + Array(receivedField.utf8) + signature
        let message = Intake.spoolMessage(
            id: id, sender: envelope.sender, deliveries: deliveries, body: envelope.body == .binaryMIME ? .binaryMIME : envelope.body == .eightBitMIME ? .eightBitMIME : .sevenBit,
            smtpUTF8: envelope.smtpUTF8, envelopeID: envelope.envelopeID ?? "", ret: envelope.ret == .headers ? 1 : envelope.ret == .full ? 2 : 0)
        let peer = state.peer
        let sender = envelope.sender, rcpts = envelope.recipientCount, deliveryCount = deliveries.count
        let sessionBox = Transfer(session)
        _ = Intake.commit(
            spool: spool, loop: loop, message: message, parts: [received, content], stream: stream, timeout: daemon.spoolTimeout,
            summary: { size in "\(hex(id)): from=<\(sender)> rcpts=\(rcpts) deliveries=\(deliveryCount) size=\(size) client=\(peer)" },
            answer: { sessionBox.value.complete($0) })
        return .later
    }

    /// Counts Received: header fields in the header section.
    static func receivedCount(_ m: [UInt8]) -> Int {
        var count = 0
        var i = 0
        let key = Array("received:".utf8)
        while i < m.count {
            // A header line starts at i; an empty line ends the header section.
            if m[i] == 13 || m[i] == 10 { break }
            if i + key.count <= m.count, zip(m[i..<(i + key.count)], key).allSatisfy({ ($0 | 0x20) == $1 || $0 == $1 }) { count += 1 }
            guard let lf = m[i...].firstIndex(of: 10) else { break }
            i = lf + 1
        }
        return count
    }
}

/// The incoming TLS history of the sender's domain (the one place it is kept): a sender whose
/// SPF passed — so the domain's own servers, not a forger who could otherwise raise or spoil
/// its level — that reached TLS before must use it again; the level reached is recorded
/// (`plain` or `tls-unverified`: client certificates are not checked). As chasquid does.
func incomingTLSCheck(_ history: TLSHistory, sender: String, overTLS: Bool, peer: String) -> Reply? {
    guard let at = sender.lastIndex(of: "@"), let domain = try? Domain(String(sender[sender.index(after: at)...])) else { return nil }
    let level: SecurityLevel = overTLS ? .tlsUnverified : .plain
    do {
        let known = try history.security(of: domain.ascii).incoming
        guard level >= known else {
            Log.mail("refused from=<\(sender)> client=\(peer): \(domain.ascii) sent mail over \(known) before, this session is \(level) (ternctl tls reset \(domain.ascii) accepts it)")
            return Reply(451, EnhancedStatus(4, 7, 3), "Mail from \(domain.ascii) came over TLS before; use STARTTLS and try again")
        }
        if level > known {
            try history.record(level, with: domain.ascii, .incoming)
            Log.info("tls: incoming mail from \(domain.ascii) reached \(level) (\(peer))")
        }
    } catch {
        Log.error("tls history: \(error)")
    }
    return nil
}
