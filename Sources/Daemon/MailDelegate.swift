// The smtp process's inbound policy (privilege separation): what the session decides it decides
// here — SPF at MAIL, DKIM and DMARC at the end of data, the relay guard on lookup's answer — and
// everything that needs the users files, the recipient tables or the spool it asks over this
// loop's channels (`SMTPLinks`): lookup checks AUTH, resolves recipients and checks senders; the
// queue says whether a message may come, takes the body in chunks as it arrives (a session never
// holds more than a chunk and what waits on the channel), and answers the end of data once its
// group commit made the message durable: only then is the 250 sent.
import Config
import Glibc
import IPC
import MailAuth
import Policy
import Reactor
import Spool
import SMTP
import Server

/// Per-session state kept by the delegate.
final class SessionState {
    var resolutions: [[Destination]] = []
    /// Lookup's answers, kept for this session and no longer (issue 17: a session asks lookup
    /// once per recipient and sender; a new session sees changed tables). The queue resolves
    /// every recipient again at the end of data, so an answer the tables no longer give is
    /// refused there (451 4.3.0), never delivered. At most `cacheLimit` entries each.
    var resolved: [String: Resolution] = [:]
    var sendersAllowed: [String: Bool] = [:]
    static let cacheLimit = 256
    /// The queue's transaction for the message coming in, and its chunk being filled.
    var transaction: UInt32? = nil
    var chunk: [UInt8] = []
    /// The timer that answers 451 when the queue does not answer the end of data.
    var timer: UInt64? = nil
    /// The end of data went to the queue: its answer is the session's final reply.
    var awaitingQueue = false
    /// The queue's answer came before the end of data (it refused early, or went away): the end
    /// of data gets it.
    var earlyAnswer: Reply? = nil
    /// Reading is held until the queue channel drains.
    var holding = false
    /// The SPF check of this transaction's sender: its `Received-SPF:` header, and the result
    /// for Authentication-Results.
    var receivedSPF: [UInt8] = []
    var spf: (result: SPFResult, mailFrom: String, helo: String)? = nil
    /// This message's DKIM signatures, verified as the body streams in.
    var dkim: DKIMVerifier? = nil
    let peer: String
    /// The client's address for SPF; nil for the host itself (not checked) or an unparsable one.
    let spfClient: SPFAddress?
    /// The client is the host itself: SPF and DMARC do not apply, its mail is DKIM-signed.
    let isLocal: Bool
    /// The user this session authenticated as (taken at MAIL: AUTH cannot change within a
    /// transaction). Like a local client: no SPF or DMARC, DKIM-signed, may relay.
    var authenticatedUser: String? = nil
    /// Lookup's token for the user this session logged in as (sent with each message: the queue
    /// believes the user only with it).
    var authToken: [UInt8] = []
    var isTrusted: Bool { isLocal || authenticatedUser != nil }
    init(peer: String) {
        self.peer = peer
        let address = SPFAddress(peer)
        isLocal = address.map(MailDelegate.isThisHost) ?? false
        spfClient = isLocal ? nil : address
    }
}

final class MailDelegate: InboundDelegate {
    let service: SMTPService
    let links: SMTPLinks
    var sessions: [ObjectIdentifier: InboundSession] = [:]

    init(service: SMTPService, links: SMTPLinks) {
        self.service = service
        self.links = links
    }

    func sessionOpened(_ session: InboundSession) {
        sessions[ObjectIdentifier(session)] = session
        session.state = SessionState(peer: session.connection?.peerAddress ?? "unknown")
    }

    func sessionClosed(_ session: InboundSession, error: ReactorError?) {
        sessions[ObjectIdentifier(session)] = nil
        guard let state = session.state as? SessionState else { return }
        // A message still coming in, or waiting for the queue, is withdrawn: the client got no 250.
        if let t = state.transaction { links.abort(t) }
        state.transaction = nil
        if let timer = state.timer { links.loop.cancel(timer) }
        state.timer = nil
        // A session the server ended says why, with the client (fail2ban reads these lines).
        if let why = session.closeReason {
            Log.mail("closed client=\(state.peer): \(why)")
        }
    }

    /// Mail from the host itself (127.0.0.1, ::1) is not checked: SPF says nothing about local
    /// submissions (policyd-spf skips them too), and a test server on loopback asks no DNS.
    static func isThisHost(_ ip: SPFAddress) -> Bool {
        ip.bytes == [127, 0, 0, 1] || ip.bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// MAIL FROM: for an authenticated session, lookup says whether the user may use this sender
    /// (`submission-senders`); for a remote client, the SPF check (RFC 7208) of the sender, or of
    /// the HELO name for `<>`, through the configured resolver (`fail` is refused with 550
    /// 5.7.23 unless `spf tag`); then the queue says whether it can take a message now (and one
    /// of the declared SIZE), and for a sender whose SPF passed, whether its domain's TLS history
    /// allows this session. The reply waits for all of it (the session stops reading meanwhile).
    func senderDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision {
        guard let state = session.state as? SessionState, let c = session.connection else { return .reject(Policy.storageError) }
        state.resolutions.removeAll()
        state.receivedSPF = []
        state.spf = nil
        state.authenticatedUser = smtp.authenticatedUser
        let sender = smtp.envelope.sender
        let size = smtp.envelope.declaredSize
        let box = Transfer(session)
        if let user = smtp.authenticatedUser {
            let key = user + "\0" + sender
            if let allowed = state.sendersAllowed[key] {
                guard allowed else {
                    Log.mail("refused from=<\(sender)> user=\(user) client=\(state.peer): not a sender this user may use")
                    return .reject(Policy.senderNotOwned)
                }
                return admit(session, state, sender: sender, size: size, tls: 0, within: true)
            }
            links.ask(links.lookup, { .senderCheck(request: $0, user: user, sender: sender) }) { m in
                guard case .senderAnswer(_, let allowed)? = m else { return box.value.completeSender(Policy.localError) }
                if state.sendersAllowed.count >= SessionState.cacheLimit { state.sendersAllowed.removeAll() }
                state.sendersAllowed[key] = allowed
                guard allowed else {
                    Log.mail("refused from=<\(sender)> user=\(user) client=\(state.peer): not a sender this user may use")
                    return box.value.completeSender(Policy.senderNotOwned)
                }
                _ = self.admit(box.value, state, sender: sender, size: size, tls: 0, within: false)
            }
            return .later
        }
        guard let ip = state.spfClient, let dns = service.dns else {
            return admit(session, state, sender: sender, size: size, tls: 0, within: true)
        }
        let helo = smtp.heloName ?? ""
        let loop = c.loop
        let hostname = service.hostname
        let checker = SPFChecker(resolver: dns, receivingHost: hostname)
        let rejects = service.spfRejects
        let all = Transfer((self, session, state))
        Task(executorPreference: loop) {
            let outcome = await checker.check(ip: ip, helo: helo, mailFrom: sender)
            loop.execute {
                let (delegate, session, state) = all.value
                state.receivedSPF = Array(outcome.receivedSPF(ip: ip, mailFrom: sender, helo: helo, receiver: hostname).utf8)
                state.spf = (outcome.result, sender, helo)
                if let refusal = Policy.spfRefusal(outcome, reject: rejects) {
                    Log.mail("refused from=<\(sender)> client=\(state.peer): SPF fail: \(outcome.reason)")
                    session.completeSender(refusal)
                    return
                }
                // The incoming TLS history is the queue's (the one place it is kept): asked only
                // for a sender whose SPF passed, so a forger cannot raise or spoil a domain's level.
                _ = delegate.admit(session, state, sender: sender, size: size, tls: outcome.result == .pass ? (session.isTLS ? 2 : 1) : 0, within: false)
            }
        }
        return .later
    }

    /// The queue's part of MAIL: may a message come now (and one of `size`), and the incoming
    /// TLS history for a sender whose SPF passed (`tls` 1 plain, 2 TLS; 0 not asked). The spool
    /// state the queue pushes answers the first part here, no round trip: go on, or refuse (the
    /// spool in trouble, no room for SIZE); only the TLS history is asked (before the first
    /// state, everything is). `within`: called inside `senderDecision` (the decision is
    /// returned, never completed within the call).
    func admit(_ session: InboundSession, _ state: SessionState, sender: String, size: Int?, tls: UInt8, within: Bool) -> PolicyDecision {
        // The spool in trouble (or no room for SIZE) is refused here at once: a question to the
        // queue would wait behind the bodies it cannot take.
        if let verdict = links.spoolVerdict(size: size), verdict != nil || tls == 0 {
            if let refusal = verdict { Log.mail("refused from=<\(sender)> client=\(state.peer): \(refusal.why) (the queue's spool state)") }
            if within { return verdict.map { .reject($0.reply) } ?? .accept }
            session.completeSender(verdict?.reply)
            return .later
        }
        let box = Transfer(session)
        links.ask(links.queue, { .mailCheck(request: $0, sender: sender, size: UInt64(size ?? 0), tls: tls) }) { m in
            guard case .mailAnswer(_, let refusal)? = m else { return box.value.completeSender(Policy.localError) }
            if let refusal { Log.mail("refused from=<\(sender)> client=\(state.peer): \(refusal.description)") }
            box.value.completeSender(refusal)
        }
        return .later
    }

    /// AUTH: lookup checks the password (scrypt, off its loop); the answer comes back here.
    func authenticate(_ session: InboundSession, _ smtp: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome? {
        guard let state = session.state as? SessionState else { return .refused(.authFailed) }
        let box = Transfer(session)
        let peer = state.peer
        links.ask(links.lookup, { .authCheck(request: $0, user: user, password: password, client: peer) }) { m in
            let outcome: AuthOutcome
            switch m {
            case .authAnswer(_, .accepted, let token)?:
                Log.mail("auth: \(user) logged in from \(peer)")
                state.authToken = token
                outcome = .authenticated(user)
            case .authAnswer(_, .refused, _)?:
                Log.mail("auth: failed for \(user) from \(peer)")
                outcome = .refused(.authFailed)
            default:
                Log.mail("auth: failed for \(user) from \(peer) (too many failures, or the users file cannot be read)")
                outcome = .refused(Reply.authTooManyFromClient)
            }
            box.value.completeAuth(outcome)
        }
        return nil
    }

    /// RCPT TO: lookup resolves the recipient (aliases, users, `+tag`); the relay guard decides.
    func recipientDecision(_ session: InboundSession, _ smtp: ServerStateMachine) -> PolicyDecision {
        guard let state = session.state as? SessionState else { return .reject(Policy.storageError) }
        let envelope = smtp.envelope
        let rcpt = envelope.recipient(envelope.recipientCount - 1)
        let sender = envelope.sender
        let authenticated = state.authenticatedUser != nil
        /// The relay guard on lookup's answer: nil to accept.
        func decide(_ resolution: Resolution) -> Reply? {
            switch Policy.recipient(resolution, recipient: rcpt, authenticated: authenticated) {
            case .accept(let destinations):
                state.resolutions.append(destinations)
                return nil
            case .refuse(let reply):
                Log.mail("refused rcpt=<\(rcpt)> from=<\(sender)> client=\(state.peer): \(reply.description)")
                return reply
            }
        }
        if let resolution = state.resolved[rcpt] {
            return decide(resolution).map { .reject($0) } ?? .accept
        }
        let box = Transfer(session)
        links.ask(links.lookup, { .resolveRecipient(request: $0, recipient: rcpt) }) { m in
            guard case .resolved(_, let resolution)? = m else { return box.value.completeRecipient(Policy.localError) }
            if state.resolved.count >= SessionState.cacheLimit { state.resolved.removeAll() }
            state.resolved[rcpt] = resolution
            box.value.completeRecipient(decide(resolution))
        }
        return .later
    }

    /// The body begins: the queue opens a transaction for it (the envelope goes with it).
    func messageStart(_ session: InboundSession, _ smtp: ServerStateMachine) {
        guard let state = session.state as? SessionState else { return }
        if let t = state.transaction { links.abort(t) }
        state.chunk.removeAll(keepingCapacity: true)
        state.dkim = DKIMVerifier(now: Int(time(nil)))
        let envelope = smtp.envelope
        let recipients = state.resolutions.enumerated().filter { $0.offset < envelope.recipientCount }.map { i, dests in
            IPCRecipient(address: envelope.recipient(i), notify: envelope.recipients[i].notify.rawValue, originalRecipient: envelope.originalRecipient(i) ?? "", destinations: dests)
        }
        let kind: BodyKind = envelope.body == .binaryMIME ? .binaryMIME : envelope.body == .eightBitMIME ? .eightBitMIME : .sevenBit
        let env = IPCEnvelope(
            sender: envelope.sender, body: kind, smtpUTF8: envelope.smtpUTF8, envelopeID: envelope.envelopeID ?? "",
            ret: envelope.ret == .headers ? 1 : envelope.ret == .full ? 2 : 0, client: state.peer, user: state.authenticatedUser ?? "",
            userToken: state.authenticatedUser != nil ? state.authToken : [], recipients: recipients)
        let box = Transfer(session)
        state.awaitingQueue = false
        state.earlyAnswer = nil
        state.transaction = links.begin(env) { m in
            let session = box.value
            guard let state = session.state as? SessionState else { return }
            state.transaction = nil
            if let timer = state.timer { session.connection?.loop.cancel(timer) }
            state.timer = nil
            let reply: Reply
            switch m {
            case .messageStored(_, let id)?: reply = Reply(250, EnhancedStatus(2, 0, 0), "Ok: queued as \(QueueID.text(id))")
            case .messageRefused(_, let r)?: reply = r
            default: reply = Policy.localError
            }
            // The final reply only once the session waits for it; before that, its end gets it.
            if state.awaitingQueue {
                state.awaitingQueue = false
                session.complete(reply)
            } else {
                state.earlyAnswer = reply
            }
        }
    }

    func messageBody(_ session: InboundSession, _ bytes: UnsafeRawBufferPointer) {
        guard let state = session.state as? SessionState, let t = state.transaction else { return }
        state.dkim?.update(bytes)
        var rest = bytes
        while rest.count > 0 {
            let n = min(SMTPLinks.chunkTarget - state.chunk.count, rest.count)
            state.chunk.append(contentsOf: UnsafeRawBufferPointer(rebasing: rest[0..<n]))
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if state.chunk.count == SMTPLinks.chunkTarget {
                links.chunk(t, state.chunk)
                state.chunk.removeAll(keepingCapacity: true)
            }
        }
        // A queue slower than the client: stop reading until the channel has drained, so a
        // session never holds more than a chunk of a message.
        if links.mustHold, !state.holding {
            state.holding = true
            session.holdInput()
            let box = Transfer((session, state))
            links.whenDrained {
                let (session, state) = box.value
                state.holding = false
                session.releaseInput()
            }
        }
    }

    /// End of DATA: DKIM (and DMARC for remote clients) first — they may have to ask DNS, then the
    /// reply waits — then the queue's verdict.
    func messageComplete(_ session: InboundSession, _ smtp: ServerStateMachine) -> MessageDisposition {
        guard let state = session.state as? SessionState, let c = session.connection, let verifier = state.dkim, state.transaction != nil else {
            let early = (session.state as? SessionState)?.earlyAnswer
            (session.state as? SessionState)?.earlyAnswer = nil
            return .reply(early ?? Policy.localError)
        }
        state.dkim = nil
        let facts = MessageFacts(smtp, tls: session.tlsDescription, authenticated: state.authenticatedUser != nil)
        let settings = service.auth
        let dns = service.dns
        let needsDMARC = state.spfClient != nil && dns != nil && state.authenticatedUser == nil
        if !needsDMARC, let results = verifier.finishWithoutLookups() {
            return end(session, state, facts, dkim: results, dmarc: nil, settings: settings)
        }
        guard let dns else { return .reply(Policy.localError) }
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
                let (delegate, session, state, _) = box.value
                if case .reply(let r) = delegate.end(session, state, facts, dkim: dkim, dmarc: dmarc, settings: settings) {
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

    /// DMARC's verdict applied (`dmarc reject|quarantine-header|none`), the trace fields and the
    /// start of our Received field handed to the queue with the last chunk; the queue ends the
    /// Received field, signs mail from a local or authenticated sender, and answers once the
    /// message is durable (the 250 comes then, through `messageStart`'s answer).
    func end(_ session: InboundSession, _ state: SessionState, _ facts: MessageFacts, dkim: [DKIMVerification], dmarc: DMARCOutcome?, settings: SMTPService.Settings) -> MessageDisposition {
        // The client left while the checks ran (its transaction was withdrawn), or the queue
        // answered meanwhile.
        guard let t = state.transaction, let loop = session.connection?.loop else {
            let early = state.earlyAnswer
            state.earlyAnswer = nil
            return .reply(early ?? Policy.localError)
        }
        let envelope = facts.envelope
        var marks: [UInt8] = []
        switch Policy.dmarc(dmarc, action: settings.dmarc) {
        case .accept: break
        case .quarantine(let header): marks = Array(header.utf8)
        case .reject(let reply):
            Log.mail("refused from=<\(envelope.sender)> client=\(state.peer): DMARC fail for \(dmarc?.fromDomain ?? "") (p=reject)")
            links.abort(t)
            state.transaction = nil
            return .reply(reply)
        }
        if !state.chunk.isEmpty {
            links.chunk(t, state.chunk)
            state.chunk.removeAll(keepingCapacity: true)
        }
        // An idle session keeps no body buffer (it grows to a chunk while a message comes in).
        if state.chunk.capacity > 4096 { state.chunk = [] }
        // Authentication-Results (RFC 8601) first, then Received-SPF, then our Received.
        let trace = Array(AuthenticationResults.header(authservID: service.hostname, spf: state.spf, dkim: dkim, dmarc: dmarc).utf8) + state.receivedSPF + marks
        let received = Intake.receivedStart(
            helo: facts.helo, peer: state.peer, hostname: service.hostname, extended: facts.isExtended, tls: facts.tls, authenticated: facts.authenticated,
            smtpUTF8: envelope.smtpUTF8)
        state.awaitingQueue = true
        // The queue gives up by the spool-timeout from now (its own answer then comes first); an
        // end that reaches it later than that is refused there: our 451 below is never a lie.
        let deadline = ReactorSystem.now() + UInt64(service.spoolTimeout) * 1_000_000_000
        links.end(t, trace: trace, received: Array(received.utf8), sign: state.isTrusted, deadline: deadline)
        // A queue that does not answer (hung, or its disk frozen past its own spool-timeout) still
        // gets the client an answer: 451, and the message withdrawn.
        let seconds = service.spoolTimeout + 5
        let box = Transfer((self, session, state))
        state.timer = loop.schedule(after: UInt64(seconds) * 1_000_000_000) {
            let (delegate, session, state) = box.value
            state.timer = nil
            guard state.transaction == t, state.awaitingQueue else { return }
            Log.error("smtp: the queue did not answer for transaction \(t) in \(seconds) s: answered 451 and withdrawn")
            delegate.links.abort(t)
            state.transaction = nil
            state.awaitingQueue = false
            session.complete(Policy.spoolTimedOut)
        }
        return .later
    }
}
