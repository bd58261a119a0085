// The queue's side of the courier process (privilege separation, docs/security.md): the queue's
// remote deliveries leave here as jobs over the courier's channel, and their outcomes come back.
// The parent hands the queue each courier's channel over the control socket (tag "c"); the
// newest one takes new jobs, an older one (a courier a reload replaces) finishes its own.
//
// The courier is hostile, as smtp is: its `ChannelGuard` refuses outcomes for a job it was not
// given or in the wrong number, and what it says is checked here before it reaches the spool —
// a TLS level it reports raises the history of a well-formed domain only (the history only goes
// up), an MTA-STS policy must parse before it is written under SPOOL/mta-sts. A courier that
// dies with jobs it has not answered: each of their recipients is deferred (a temporary failure,
// tried again at the next retry; one the receiver had taken before the crash arrives twice).
//
// Memory: the courier holds the bodies of the jobs it has; at most `maxJobs` jobs and
// `maxBytes` of body are out at once (always one), the rest wait here in order. Bodies are
// written in chunks while the channel's output stays under `highWater`.
import Delivery
import Glibc
import IPC
import MailAuth
import Reactor
import Synchronization

final class CourierLink: OutboundCourier, IPCChannelDelegate, @unchecked Sendable {
    /// The queue loop every channel and job of the link lives on.
    let loop: EventLoop
    let history: TLSHistory
    /// Where the MTA-STS policies the courier fetches are kept.
    let mtaSTSDirectory: String
    /// The relay routes in force (a recipient domain's TLS history is kept under the relay host it
    /// goes through); replaced on reload.
    let routes: Mutex<CourierSettings>
    let log: @Sendable (String) -> Void
    let maxJobs: Int
    let maxBytes: Int
    static let highWater = 1 << 20

    /// A delivery handed to the link: one job, or several when its recipients do not fit in one
    /// frame (`pieces`), whose outcomes are put together before `done`.
    final class Submission {
        let domain: String
        let message: OutboundMessage
        let done: Courier.Completion
        var outcomes: [RecipientOutcome?]
        var left: Int
        init(domain: String, message: OutboundMessage, done: @escaping Courier.Completion, pieces: Int) {
            self.domain = domain
            self.message = message
            self.done = done
            outcomes = Array(repeating: nil, count: message.recipients.count)
            left = pieces
        }
    }

    struct Job {
        let submission: Submission
        /// The recipients of the submission this job carries.
        let range: Range<Int>
        var size: Int { submission.message.body.count }
    }

    final class Peer {
        let channel: IPCChannel
        var jobs: [UInt32: Job] = [:]
        var bytes = 0
        /// Jobs whose body is still being written: the job, and how much of it went out.
        var writing: [(job: UInt32, at: Int)] = []
        init(_ channel: IPCChannel) { self.channel = channel }
    }

    var peers: [ObjectIdentifier: Peer] = [:]
    /// The channel new jobs go to: the courier started last, unless it said it is draining.
    var newest: Peer? = nil
    /// Jobs no courier has room for yet, in order (from `head` on).
    var waiting: [Job] = []
    var head = 0
    var nextJob: UInt32 = 0
    var stopped = false
    /// Channels closed for breaking the protocol (for tests).
    private(set) var refusedChannels = 0

    init(loop: EventLoop, history: TLSHistory, mtaSTSDirectory: String, settings: CourierSettings, maxJobs: Int = 4096, maxBytes: Int = 128 << 20, log: @escaping @Sendable (String) -> Void) {
        self.loop = loop
        self.history = history
        self.mtaSTSDirectory = mtaSTSDirectory
        routes = Mutex(settings)
        self.maxJobs = maxJobs
        self.maxBytes = maxBytes
        self.log = log
    }

    /// The relay routes of a reload.
    func replaceRoutes(_ s: CourierSettings) { routes.withLock { $0 = s } }

    // MARK: Jobs in (any thread)

    func submit(domain: String, _ message: OutboundMessage, done: @escaping Courier.Completion) {
        let ranges = Self.pieces(message)
        let box = Transfer((Submission(domain: domain, message: message, done: done, pieces: ranges.count), ranges))
        loop.execute { [self] in
            let (s, ranges) = box.value
            guard !stopped else { return s.done(s.outcomes) }
            for r in ranges { waiting.append(Job(submission: s, range: r)) }
            pump()
        }
    }

    /// The recipients of `m` in pieces one `deliver` frame holds: at most `IPCLimits.items`, and
    /// their addresses at most a quarter of a frame.
    static func pieces(_ m: OutboundMessage) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0, bytes = 0
        for (k, r) in m.recipients.enumerated() {
            let n = r.utf8.count + (k < m.originalRecipients.count ? m.originalRecipients[k].utf8.count : 0) + 16
            if k > start, k - start >= IPCLimits.items || bytes + n > IPCLimits.frame / 4 {
                out.append(start..<k)
                start = k
                bytes = 0
            }
            bytes += n
        }
        out.append(start..<m.recipients.count)
        return out
    }

    /// Sends waiting jobs while the newest courier has room.
    func pump() {
        guard let peer = newest else { return }
        while head < waiting.count, peer.jobs.isEmpty || (peer.jobs.count < maxJobs && peer.bytes + waiting[head].size <= maxBytes) {
            send(waiting[head], to: peer)
            head += 1
        }
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: waiting.count < 1024)
            head = 0
        } else if head > 4096, head * 2 > waiting.count {
            waiting.removeFirst(head)
            head = 0
        }
        write(peer)
    }

    func send(_ job: Job, to peer: Peer) {
        let j = nextJob
        nextJob &+= 1
        let m = job.submission.message
        let domain = job.submission.domain
        var recipients: [String] = [], notify: [UInt8] = [], orcpts: [String] = []
        for k in job.range {
            recipients.append(m.recipients[k])
            notify.append(k < m.notify.count ? m.notify[k] : 0)
            orcpts.append(k < m.originalRecipients.count ? m.originalRecipients[k] : "")
        }
        // The history is kept under the relay host when the domain has one, as the courier keeps it.
        let key = domain.hasPrefix("[") ? "" : (routes.withLock { $0.route(for: domain)?.smarthost.host } ?? domain)
        let floor = key.isEmpty ? 0 : UInt8((try? history.outgoing(key))?.rawValue ?? 0)
        peer.jobs[j] = job
        peer.bytes += job.size
        peer.channel.send(
            .deliver(
                job: j,
                IPCOutbound(
                    id: m.id, domain: domain, sender: m.sender, recipients: recipients, notify: notify, originalRecipients: orcpts,
                    envelopeID: m.envelopeID, ret: m.ret, body: m.binary ? .binaryMIME : m.eightBit ? .eightBitMIME : .sevenBit, smtpUTF8: m.smtpUTF8,
                    size: UInt64(m.body.count), historyKey: key, tlsFloor: floor)))
        peer.writing.append((j, 0))
    }

    /// Writes bodies in order while the channel keeps up.
    func write(_ peer: Peer) {
        while let (j, at) = peer.writing.first {
            guard let job = peer.jobs[j] else {
                peer.writing.removeFirst()
                continue
            }
            let body = job.submission.message.body
            var at = at
            while at < body.count, (peer.channel.connection?.bufferedOutput ?? 0) < Self.highWater {
                let end = min(body.count, at + IPCLimits.chunk)
                peer.channel.send(.messageChunk(transaction: j, bytes: Array(body[at..<end])))
                at = end
            }
            guard at == body.count else {
                peer.writing[0].at = at
                return
            }
            peer.writing.removeFirst()
        }
    }

    // MARK: Channels (loop thread)

    /// Takes a courier's channel (passed by the parent): it gets the MTA-STS policies kept, and
    /// every new job from now on.
    func adopt(fd: Int32) throws(ReactorError) {
        let c = try RoleProcess.adoptChannel(fd: fd, loop: loop, rules: ChannelGuard(local: .queue, peer: .courier, maxBody: Int.max, maxOutstanding: maxJobs), delegate: self)
        let peer = Peer(c)
        peers[ObjectIdentifier(c)] = peer
        for p in MTASTSPolicyFiles.all(in: mtaSTSDirectory) {
            c.send(.mtaSTSPolicy(domain: p.domain, id: p.id, fetched: p.fetched, text: p.policy))
        }
        newest = peer
        pump()
    }

    func channel(_ channel: IPCChannel, received message: IPCMessage) {
        guard let peer = peers[ObjectIdentifier(channel)] else { return }
        switch message {
        case .delivered(let j, let outcomes):
            guard let job = peer.jobs.removeValue(forKey: j) else { return }
            peer.bytes -= job.size
            finish(job, outcomes.map(Self.outcome))
            pump()
        case .tlsReached(let domain, let level):
            guard let l = SecurityLevel(rawValue: Int(level)) else { return }
            do {
                try history.record(l, with: domain, .outgoing)
            } catch {
                log("queue: the courier's TLS level for '\(domain)' is not recorded: \(error)")
            }
        case .courierDraining:
            // It answers what it has; new jobs wait for the next courier (a reload's) or the
            // queue's stop.
            if newest === peer { newest = nil }
        case .mtaSTSPolicy(let domain, let id, let fetched, let text):
            // Written only when it is a policy, for a name that is a domain (never a path).
            guard MTASTSPolicyFiles.isDomainName(domain), !id.isEmpty, id.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) }),
                (try? MTASTSPolicy.parse(String(decoding: text, as: UTF8.self))) != nil
            else { return log("queue: an MTA-STS policy from the courier for '\(domain)' is not one; not kept") }
            MTASTSPolicyFiles.write(domain, id: id, fetched: fetched, text: text, in: mtaSTSDirectory)
        default:
            break
        }
    }

    func channelWritable(_ channel: IPCChannel) {
        if let peer = peers[ObjectIdentifier(channel)] { write(peer) }
    }

    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?) {
        guard let peer = peers.removeValue(forKey: ObjectIdentifier(channel)) else { return }
        if newest === peer { newest = nil }
        if let error {
            if case .protocolError = error { refusedChannels += 1 }
            log("queue: courier channel closed: \(error)")
        }
        // Jobs it did not answer: the courier ended in the middle (a crash, a kill): deferred.
        let cut = RecipientOutcome.temporary("4.4.2", "the courier process ended before it reported this delivery (ternd restarts it); tried again later")
        for (_, job) in peer.jobs.sorted(by: { $0.key < $1.key }) { finish(job, Array(repeating: cut, count: job.range.count)) }
        peer.jobs = [:]
    }

    static func outcome(_ o: IPCOutcome) -> RecipientOutcome? {
        var r: RecipientOutcome
        switch o.kind {
        case .notAttempted: return nil
        case .delivered: r = RecipientOutcome(.delivered, o.status, o.text)
        case .temporary: r = .temporary(o.status, o.text)
        case .permanent: r = .permanent(o.status, o.text)
        }
        r.withoutDSN = o.withoutDSN
        return r
    }

    func finish(_ job: Job, _ outcomes: [RecipientOutcome?]) {
        let s = job.submission
        for (k, o) in zip(job.range, outcomes) { s.outcomes[k] = o }
        s.left -= 1
        if s.left == 0 { s.done(s.outcomes) }
    }

    /// The queue is stopping (the courier stopped first): nothing more is sent; what waits ends
    /// as not attempted (the spool keeps it), and so do jobs a courier still has.
    func stop() {
        stopped = true
        let left = waiting[head...]
        waiting = []
        head = 0
        for job in left { finish(job, Array(repeating: nil, count: job.range.count)) }
        for peer in peers.values {
            for (_, job) in peer.jobs.sorted(by: { $0.key < $1.key }) { finish(job, Array(repeating: nil, count: job.range.count)) }
            peer.jobs = [:]
            peer.channel.close()
        }
        peers = [:]
        newest = nil
    }
}
