// The queue process's door for smtp (privilege separation, docs/security.md): it answers MAIL's
// question (may a message come now; the sender domain's incoming TLS history), takes message
// bodies in chunks as they arrive and stages them in the spool, and at the end stores the message
// through `Intake` and says `messageStored` only once the group commit made it durable.
//
// Every smtp channel is hostile. Its `ChannelGuard` refuses anything malformed or out of order
// (the channel is then closed and logged, the others go on). What smtp says about a message is
// checked here, never trusted: each recipient is resolved again with the queue's own tables and
// the relay guard (`Policy.recipient`), and a message whose recipients do not resolve as smtp
// said is refused with a 451; the trace fields must be whole header fields and the Received
// start one field; the header section's size and the Received count (loop detection) are
// checked here, on the bytes that reach the spool; incoming Authentication-Results claiming our
// name are removed here. That the session authenticated (`user`) it believes only with lookup's
// token for that user (`UserToken`); that the client really is this host (`sign` for a local
// client) it cannot check and takes from smtp: docs/security.md says so.
import Config
import Delivery
import Glibc
import IPC
import MailAuth
import Policy
import Reactor
import SMTP
import Spool

final class QueueService: IPCChannelDelegate {
    let daemon: Daemon
    let log: (String) -> Void
    /// Body bytes the spool's stager may owe the disk (over every stream) before the queue stops
    /// reading the channels that bring more (smtp's sessions then stop reading their clients:
    /// TCP pushes back all the way); reading goes on once a quarter of it is left.
    let diskBacklog: Int

    /// A message coming in on a channel (its loop only).
    final class Incoming {
        let envelope: IPCEnvelope
        var header = HeaderSplitter()
        let stream: BodyStream
        /// The relaxed body hash our own DKIM signature needs (when the queue holds keys).
        let hasher: BodyHasher?
        /// Once the message is ended and on its way into the spool.
        var pending: PendingAnswer? = nil
        /// When smtp answers 451 by itself (monotonic ns; 0: never said).
        var deadline: UInt64 = 0

        init(envelope: IPCEnvelope, stream: BodyStream, hasher: BodyHasher?) {
            self.envelope = envelope
            self.stream = stream
            self.hasher = hasher
        }
    }

    final class Peer {
        let channel: IPCChannel
        var transactions: [UInt32: Incoming] = [:]
        /// Reading is paused until the disk catches up.
        var waitingForDisk = false
        init(_ channel: IPCChannel) { self.channel = channel }
    }

    /// The open channels (an IPCChannel's delegate is weak; the service keeps them). Loop thread:
    /// each channel's messages come on the loop that adopted it, and the dictionary is only
    /// touched there (one service per loop).
    var peers: [ObjectIdentifier: Peer] = [:]
    /// Channels closed for breaking the protocol (for tests and the status output).
    private(set) var refusedChannels = 0
    /// The spool state last sent to this loop's channels, and whether its check is scheduled.
    var sentState: (refusal: Reply?, reason: String, room: UInt64)? = nil
    var watching = false
    /// How often the spool's state is looked at for a change to push.
    static let stateInterval: UInt64 = 100_000_000

    /// The key of lookup's user tokens: a transaction that names a user carries one (`UserToken`).
    let tokenKey: [UInt8]

    init(daemon: Daemon, tokenKey: [UInt8], diskBacklog: Int = 4 << 20, log: @escaping (String) -> Void) {
        self.daemon = daemon
        self.tokenKey = tokenKey
        self.diskBacklog = diskBacklog
        self.log = log
    }

    /// Serves an smtp channel on `loop` (its thread only).
    func adopt(fd: Int32, loop: EventLoop) throws(ReactorError) {
        let c = try RoleProcess.adoptChannel(fd: fd, loop: loop, rules: ChannelGuard(local: .queue, peer: .smtp, maxBody: daemon.loaded.configuration.limits.messageSize + 2 * 1024 * 1024), delegate: self)
        peers[ObjectIdentifier(c)] = Peer(c)
        let state = sentState ?? spoolState()
        sentState = state
        Self.send(state, to: c)
        watch(loop)
    }

    /// What smtp may answer MAIL from without asking: the spool takes messages, and this many
    /// bytes fit (UInt64.max when the disk does not say).
    func spoolState() -> (refusal: Reply?, reason: String, room: UInt64) {
        let spool = daemon.queue.spool
        let condition = spool.condition
        let refusal = Policy.admission(condition: condition, declaredSize: nil, fits: nil)
        return (refusal, refusal == nil ? "" : "\(condition)", spool.room.map { UInt64($0) } ?? .max)
    }

    static func send(_ state: (refusal: Reply?, reason: String, room: UInt64), to c: IPCChannel) {
        c.send(.spoolState(refusal: state.refusal, reason: state.reason, room: state.room))
    }

    /// The spool's state now, sent to this loop's channels when it changed (loop thread): at
    /// once when it stops or starts taking messages, and when the room moved by more than a
    /// 64th (a size refused a little late is refused at the end).
    func pushState() {
        let now = spoolState()
        // (A stall's reason counts its seconds: only a change of reply is news.)
        if let was = sentState, was.refusal == now.refusal, Self.near(was.room, now.room) { return }
        sentState = now
        for peer in peers.values { Self.send(now, to: peer.channel) }
    }

    /// Looks at the spool's state every `stateInterval` while channels are open.
    func watch(_ loop: EventLoop) {
        guard !watching else { return }
        watching = true
        _ = loop.schedule(after: Self.stateInterval) { [weak self] in
            guard let self else { return }
            self.watching = false
            guard !self.peers.isEmpty else { return }
            self.pushState()
            self.watch(loop)
        }
    }

    static func near(_ a: UInt64, _ b: UInt64) -> Bool {
        let d = a > b ? a - b : b - a
        return d <= max(a, b) / 64
    }

    func channel(_ channel: IPCChannel, received message: IPCMessage) {
        guard let peer = peers[ObjectIdentifier(channel)] else { return }
        switch message {
        case .mailCheck(let request, let sender, let size, let tls):
            channel.send(.mailAnswer(request: request, mailCheck(sender: sender, size: size, tls: tls)))
        case .messageBegin(let t, let envelope):
            // smtp says the session authenticated: only lookup's token for that user makes it so
            // (it lets the message relay and be signed). A good smtp never sends one without.
            if !envelope.user.isEmpty, !UserToken.holds(envelope.userToken, key: tokenKey, user: envelope.user, now: Int64(time(nil))) {
                fail(peer, "transaction \(t): user \(envelope.user) without a token lookup issued")
                return
            }
            // Only mail that may be signed (an authenticated user, or the host itself) pays for the
            // body hash; the end says whether to sign.
            let mayBeSigned = !envelope.user.isEmpty || SPFAddress(envelope.client).map(MailDelegate.isThisHost) == true
            let hasher = daemon.auth.signingKeys.isEmpty || !mayBeSigned ? nil : BodyHasher(.relaxed, limit: nil)
            peer.transactions[t] = Incoming(envelope: envelope, stream: BodyStream(spool: daemon.queue.spool), hasher: hasher)
        case .messageChunk(let t, let bytes):
            guard let m = peer.transactions[t] else { return }
            take(bytes, into: m, peer: peer)
        case .messageEnd(let t, let trace, let received, let sign, let deadline):
            guard let m = peer.transactions[t] else { return }
            guard Intake.isTrace(trace), Intake.isReceivedStart(received) else {
                fail(peer, "transaction \(t): trace fields that are not whole header fields, or a Received start that is not one field")
                return
            }
            end(t, m, peer: peer, trace: trace, received: received, sign: sign, deadline: deadline)
        case .messageAbort(let t):
            peer.transactions[t]?.pending?.withdraw()
            peer.transactions[t] = nil
        default:
            // (ChannelGuard lets nothing else through from smtp.)
            break
        }
    }

    /// MAIL FROM: the spool's condition and room for a declared SIZE, then, for a sender whose
    /// SPF passed (`tls` 1 plain, 2 over TLS), its domain's incoming TLS history.
    func mailCheck(sender: String, size: UInt64, tls: UInt8) -> Reply? {
        let spool = daemon.queue.spool
        let condition = spool.condition
        let declared = size > 0 ? Int(clamping: size) : nil
        if let refusal = Policy.admission(condition: condition, declaredSize: declared, fits: declared.flatMap { spool.hasRoom(for: $0) }) {
            Log.mail("refused from=<\(sender)>: \(condition != .ok ? "\(condition)" : "SIZE=\(size) does not fit on the spool's disk") (asked by smtp)")
            return refusal
        }
        guard tls != 0 else { return nil }
        return incomingTLSCheck(daemon.tlsHistory, sender: sender, overTLS: tls == 2, peer: "smtp")
    }

    /// The next piece of a message: the header section is kept (the end reads it), the rest
    /// goes to the spool's stager; a disk slower than smtp stops reading this channel.
    func take(_ bytes: [UInt8], into m: Incoming, peer: Peer) {
        bytes.withUnsafeBytes { raw in
            let at = m.header.take(raw)
            guard at < raw.count, !m.header.isOversized else { return }
            let body = UnsafeRawBufferPointer(rebasing: raw[at...])
            m.hasher?.update(body)
            m.stream.write(body)
        }
        // (Frames already read keep coming after the pause: a channel that waits already waits.)
        let backlog = daemon.queue.spool.backlog
        guard !peer.waitingForDisk, backlog.current > diskBacklog, let c = peer.channel.connection else { return }
        peer.waitingForDisk = true
        c.pauseReading()
        let loop = c.loop
        let box = Transfer(peer)
        backlog.whenBelow(diskBacklog / 4) {
            loop.execute {
                box.value.waitingForDisk = false
                box.value.channel.connection?.resumeReading()
            }
        }
    }

    /// The end of a message: checked, resolved again, signed when asked, stored; the answer goes
    /// back once the spool has it (or refused it).
    func end(_ t: UInt32, _ m: Incoming, peer: Peer, trace: [UInt8], received: [UInt8], sign: Bool, deadline: UInt64) {
        let envelope = m.envelope
        func refuse(_ reply: Reply, _ why: String) { self.refuse(t, m, peer: peer, reply, why) }
        // (Checked when it is stored: signing may take a while.)
        m.deadline = deadline
        if m.header.isOversized { return refuse(Policy.headerTooLarge, "header section over \(m.header.limit) bytes") }
        if let r = Policy.loopRefusal(receivedFields: Intake.receivedCount(m.header.header)) { return refuse(r, "too many Received fields") }
        guard !envelope.recipients.isEmpty else { return refuse(Reply(554, EnhancedStatus(5, 5, 1), "No valid recipients"), "no recipients (smtp sent none)") }
        // Each recipient again, with the queue's own tables: smtp's destinations are compared,
        // never used.
        let tables = daemon.resolver.current
        var recipients: [IntakeRecipient] = []
        for r in envelope.recipients {
            switch Policy.recipient(tables.resolve(r.address), recipient: r.address, authenticated: !envelope.user.isEmpty) {
            case .accept(let destinations) where destinations == r.destinations:
                recipients.append(IntakeRecipient(address: r.address, notify: r.notify, originalRecipient: r.originalRecipient, destinations: destinations))
            case .accept:
                return refuse(Policy.tablesChanged, "rcpt=<\(r.address)> resolves differently here than smtp said (tables reloaded meanwhile, or a lying smtp)")
            case .refuse(let reply):
                return refuse(Policy.tablesChanged, "rcpt=<\(r.address)> is refused here (\(reply.description)) though smtp accepted it")
            }
        }
        var signing: (header: MessageHeader, hash: [UInt8], keys: [DKIMSigningKey], from: String)? = nil
        if sign, let hasher = m.hasher {
            let header = MessageHeader.parse(m.header.header).0
            let froms = header.all("from")
            if froms.count == 1, let from = FromAddress.singleDomain(froms[0].unfoldedValue), let keys = daemon.auth.signingKeys[from] {
                signing = (header, hasher.finish(), keys, from)
            }
        }
        guard let signing, let loop = peer.channel.connection?.loop else {
            return store(t, m, peer: peer, recipients: recipients, trace: trace, received: received, signature: [])
        }
        // RSA or Ed25519 work of a millisecond or more: off the loop, then stored.
        let box = Transfer((self, m, peer, recipients, trace, received))
        Task.detached {
            var signature: [UInt8] = []
            do {
                signature = try DKIMSigner.signatures(header: signing.header, bodyHash: signing.hash, keys: signing.keys, time: Int(time(nil)))
            } catch {
                Log.error("dkim: signing for \(signing.from) failed: \(error)")
            }
            let signed = Transfer(signature)
            loop.execute {
                let (service, m, peer, recipients, trace, received) = box.value
                // Aborted, or the channel closed, while signing: nothing to store.
                guard peer.transactions[t] === m, service.peers[ObjectIdentifier(peer.channel)] != nil else { return }
                service.store(t, m, peer: peer, recipients: recipients, trace: trace, received: received, signature: signed.value)
            }
        }
    }

    /// Refuses transaction `t` before it is stored, with the log line that says why.
    func refuse(_ t: UInt32, _ m: Incoming, peer: Peer, _ reply: Reply, _ why: String) {
        Log.mail("refused from=<\(m.envelope.sender)> client=\(m.envelope.client): \(why)")
        peer.transactions[t] = nil
        peer.channel.send(.messageRefused(transaction: t, reply))
    }

    static let lateEnd = "the end of data came after smtp's deadline (it waited behind other bodies for a slow disk): smtp answers 451 by itself"

    /// The seconds the spool may take with `m`: the spool-timeout, and not past smtp's deadline
    /// (smtp's own 451 comes 5 s after it: the message must be stored or given up on before, so
    /// that 451 is never followed by a delivery; rounding up to a whole second stays within
    /// those 5 s). nil: the deadline has passed.
    func spoolTimeout(_ m: Incoming) -> Int? {
        guard m.deadline != 0 else { return daemon.spoolTimeout }
        let now = ReactorSystem.now()
        guard m.deadline > now else { return nil }
        return min(daemon.spoolTimeout, max(1, Int((m.deadline - now + 999_999_999) / 1_000_000_000)))
    }

    func store(_ t: UInt32, _ m: Incoming, peer: Peer, recipients: [IntakeRecipient], trace: [UInt8], received: [UInt8], signature: [UInt8]) {
        guard let loop = peer.channel.connection?.loop else { return }
        guard let timeout = spoolTimeout(m) else { return refuse(t, m, peer: peer, Policy.spoolTimedOut, Self.lateEnd) }
        let envelope = m.envelope
        let spool = daemon.queue.spool
        let id = spool.newID()
        let deliveries = Intake.deliveries(recipients)
        let end = Intake.receivedEnd(id: id, recipients: recipients.count == 1 ? [recipients[0].address] : [])
        let content = AuthenticationResults.removingOurs(m.header.header, authservID: daemon.hostname)
        let message = Intake.spoolMessage(
            id: id, sender: envelope.sender, deliveries: deliveries, body: envelope.body, smtpUTF8: envelope.smtpUTF8, envelopeID: envelope.envelopeID, ret: envelope.ret)
        let sender = envelope.sender, rcpts = recipients.count, count = deliveries.count, client = envelope.client
        let box = Transfer(peer)
        m.pending = Intake.commit(
            spool: spool, loop: loop, message: message, parts: [trace + received + Array(end.utf8) + signature, content], stream: m.stream, timeout: timeout,
            summary: { size in "\(QueueID.text(id)): from=<\(sender)> rcpts=\(rcpts) deliveries=\(count) size=\(size) client=\(client)" },
            answer: { reply in
                let peer = box.value
                peer.transactions[t] = nil
                peer.channel.send(reply.code == 250 ? .messageStored(transaction: t, queueID: id) : .messageRefused(transaction: t, reply))
            })
    }

    /// smtp sent something well-formed that no honest smtp sends: the channel is closed.
    func fail(_ peer: Peer, _ why: String) {
        log("queue: closing a channel from smtp: \(why)")
        refusedChannels += 1
        peer.channel.close()
    }

    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?) {
        guard let peer = peers.removeValue(forKey: ObjectIdentifier(channel)) else { return }
        // Nobody is left to say 250: messages not yet durable are withdrawn, the rest dropped
        // (their staged files go with them).
        var withdrawn = 0, open = 0
        for m in peer.transactions.values {
            if let p = m.pending { if p.withdraw() { withdrawn += 1 } } else { open += 1 }
        }
        if withdrawn + open > 0 { log("queue: a channel from smtp closed with \(open) message(s) coming in and \(withdrawn) waiting for the spool: dropped") }
        if let error {
            if case .protocolError = error { refusedChannels += 1 }
            log("queue: closed a channel from smtp: \(error)")
        }
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
