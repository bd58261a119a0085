// The queue: the delivery workers that take what the spool says is due, deliver it, and record
// each outcome in the spool. Failures are reported to the sender (DSNs) before they are recorded,
// so a report is never lost to a crash between the two (the spool writes in order).
import Config
import Delivery
import Glibc
import Queue
import SMTP
import Spool
import Synchronization

/// Where the queue's log lines go: `mail` for what happened to a message, `error` for trouble.
public struct QueueLog: Sendable {
    public let mail: @Sendable (String) -> Void
    public let error: @Sendable (String) -> Void
    public init(mail: @escaping @Sendable (String) -> Void, error: @escaping @Sendable (String) -> Void) {
        self.mail = mail
        self.error = error
    }
}

public final class MailQueue: @unchecked Sendable {
    public let spool: Spool
    let lock = PThreadLock()
    /// Messages being delivered (guarded by `lock`).
    var inFlight: Set<UInt64> = []
    var running = true
    var workers: [pthread_t] = []
    /// How local users get their mail.
    public enum Local: Sendable {
        case maildir(Maildir)
        case mda([String], timeout: Int)
    }

    let local: Local
    let log: QueueLog
    /// Where remote deliveries go (set before the workers start; nil: they stay queued).
    public var courier: (any OutboundCourier)? = nil
    /// Messages whose remote deliveries are with the courier: how many submissions are out, and
    /// the failures (with the statuses that record them) held until all are back and the report
    /// is queued (guarded by `lock`).
    var withCourier: [UInt64: (left: Int, failed: [(SpoolStatus, FailedDelivery)])] = [:]
    /// First retry after this many seconds, doubling up to `retryMax`.
    public var retryMin: Int64 {
        get { timing.retryMin.load(ordering: .relaxed) }
        set { timing.retryMin.store(newValue, ordering: .relaxed) }
    }
    public var retryMax: Int64 {
        get { timing.retryMax.load(ordering: .relaxed) }
        set { timing.retryMax.store(newValue, ordering: .relaxed) }
    }
    public var lifetime: Int64 {
        get { timing.lifetime.load(ordering: .relaxed) }
        set { timing.lifetime.store(newValue, ordering: .relaxed) }
    }
    /// Seconds after arrival when a delivery still deferred is worth a delay warning (once); 0: never.
    public var delayWarning: Int64 {
        get { timing.delayWarning.load(ordering: .relaxed) }
        set { timing.delayWarning.store(newValue, ordering: .relaxed) }
    }
    /// The queue's times (`limits`), read by the workers and replaced by SIGHUP.
    final class Timing: Sendable {
        let retryMin = Atomic<Int64>(60)
        let retryMax = Atomic<Int64>(3600)
        let lifetime = Atomic<Int64>(5 * 24 * 3600)
        let delayWarning = Atomic<Int64>(4 * 3600)
    }
    let timing = Timing()
    /// Signs a DSN (From: MAILER-DAEMON@hostname) with DKIM when a key covers the host name.
    public var signReport: @Sendable ([UInt8]) -> [UInt8] = { $0 }
    let hostname: String
    /// Resolves a bounce's recipient (the original sender).
    let resolve: @Sendable (String) -> Resolution

    public init(spool: Spool, local: Local, lifetime: Int, hostname: String, log: QueueLog, resolve: @escaping @Sendable (String) -> Resolution) {
        self.spool = spool
        self.local = local
        self.log = log
        timing.lifetime.store(Int64(lifetime), ordering: .relaxed)
        self.hostname = hostname
        self.resolve = resolve
    }

    public var pending: Int { spool.pendingCount }

    /// Something became due: wake the workers.
    func wake() {
        lock.locked { lock.broadcast() }
    }

    public func start(workers n: Int) {
        spool.onWork = { [weak self] in self?.wake() }
        for _ in 0..<n {
            let box = Unmanaged.passRetained(self)
            var tid = pthread_t()
            pthread_create(&tid, nil, { arg in
                Unmanaged<MailQueue>.fromOpaque(arg!).takeRetainedValue().work()
                return nil
            }, box.toOpaque())
            workers.append(tid)
        }
    }

    /// Stops the workers after their current delivery.
    public func stop() {
        lock.locked {
            running = false
            lock.broadcast()
        }
        for t in workers { pthread_join(t, nil) }
        workers = []
    }

    static func now() -> Int64 { Int64(time(nil)) }

    func work() {
        while true {
            lock.lock()
            var batch: [PendingMessage] = []
            while running {
                // While the spool cannot record statuses, nothing is delivered: a delivery whose
                // status is lost is repeated after a restart.
                let paused = spool.deliveriesPaused
                if !paused {
                    batch = spool.takeDue(now: Self.now(), limit: 16, excluding: inFlight)
                    if !batch.isEmpty { break }
                }
                let next = paused ? nil : spool.nextDue()
                lock.wait(seconds: paused ? 1 : next.map { Double(max($0 - Self.now(), 0)) + 0.05 } ?? 5)
            }
            if !running {
                lock.unlock()
                return
            }
            for p in batch { inFlight.insert(p.id) }
            lock.unlock()
            let handedOver = deliver(batch)
            lock.locked {
                // Messages with the courier stay in flight until it reports back.
                for p in batch where !handedOver.contains(p.id) {
                    inFlight.remove(p.id)
                    spool.reschedule(p.id)
                }
            }
        }
    }

    /// One delivery being attempted in a batch.
    struct Attempt {
        let message: SpoolMessage
        let index: Int
        let attempts: UInt32
        /// The sender was warned of a delay already.
        var warned = false
        var outcome: Result<String, DeliveryError>? = nil
        /// The enhanced status of a failure, when the attempt knows it (remote replies).
        var status: String? = nil
        var staged: Maildir.Staged? = nil
        /// A remote delivery went to a next hop without DSN (it will report nothing itself).
        var withoutDSN = false
    }

    /// Attempts every due delivery of a batch of messages. Maildir deliveries are written first
    /// and made durable together with one sync (see `Maildir.commit`); remote ones go to the
    /// courier, grouped by domain.
    /// - Returns: the messages handed to the courier (still in flight when this returns).
    func deliver(_ batch: [PendingMessage]) -> Set<UInt64> {
        let now = Self.now()
        var attempts: [Attempt] = []
        var remote: [(SpoolMessage, [String: [Attempt]])] = []
        for p in batch {
            let m: SpoolMessage
            do {
                m = try spool.readMessage(p.id)
            } catch {
                // Keep it scheduled: try again later rather than forget it until a restart.
                log.error("queue: cannot read message \(QueueID.text(p.id)): \(error); trying again later")
                for (k, d) in p.deliveries.enumerated() where d.phase == .pending {
                    spool.record(SpoolStatus(id: p.id, delivery: UInt32(k), state: .deferred, attempts: d.attempts, nextAttempt: now + backoff(d.attempts + 1), reason: "spool read failed"))
                }
                continue
            }
            var byDomain: [String: [Attempt]] = [:]
            for (k, d) in m.deliveries.enumerated() {
                let state = p.deliveries[k]
                guard state.phase == .pending, state.nextAttempt <= now else { continue }
                var a = Attempt(message: m, index: k, attempts: state.attempts + 1, warned: state.warned)
                if d.kind == .remote, courier != nil {
                    if let domain = Self.domain(of: d.destination) {
                        byDomain[domain, default: []].append(a)
                        continue
                    }
                    a.outcome = .failure(.permanent("\(d.destination) has no valid domain"))
                    a.status = "5.1.3"
                    attempts.append(a)
                    continue
                }
                switch prepare(d, m) {
                case .staged(let s): a.staged = s
                case .done(let outcome): a.outcome = outcome
                }
                attempts.append(a)
            }
            if !byDomain.isEmpty { remote.append((m, byDomain)) }
        }
        // Each staged delivery gets its own result: one broken Maildir defers only its own.
        let stagedAt = attempts.indices.filter { attempts[$0].staged != nil }
        let committed = Maildir.commit(stagedAt.map { attempts[$0].staged! })
        for (k, r) in zip(stagedAt, committed) {
            let final = attempts[k].staged!.final
            attempts[k].outcome = r.map { final }
        }
        var failures: [UInt64: (SpoolMessage, [(SpoolStatus, FailedDelivery)])] = [:]
        for a in attempts {
            let (status, failure) = finish(a, now: now)
            if let failure {
                failures[a.message.id, default: (a.message, [])].1.append((status, failure))
            } else {
                spool.record(status)
            }
        }
        for (_, (message, failed)) in failures.sorted(by: { $0.key < $1.key }) { report(message, failed) }
        guard let courier, !remote.isEmpty else { return [] }
        lock.locked {
            for (m, groups) in remote { withCourier[m.id] = (groups.count, []) }
        }
        for (m, groups) in remote {
            for (domain, group) in groups.sorted(by: { $0.key < $1.key }) {
                courier.submit(domain: domain, Self.outbound(m, group)) { [self] outcomes in
                    courierDone(m, group, outcomes)
                }
            }
        }
        return Set(remote.map(\.0.id))
    }

    /// The courier's destination for a remote address: its domain (A-labels), or its address
    /// literal as written ("[192.0.2.1]", lower-case).
    static func domain(of address: String) -> String? {
        guard let m = try? Mailbox(address) else { return nil }
        return m.domain?.ascii ?? m.literal
    }

    /// What the courier sends for `group`, deliveries of `m` to one domain.
    static func outbound(_ m: SpoolMessage, _ group: [Attempt]) -> OutboundMessage {
        var o = OutboundMessage(
            id: m.id, sender: m.sender, recipients: group.map { m.deliveries[$0.index].destination }, body: m.body,
            smtpUTF8: m.bodyFlags & 0x80 != 0, eightBit: m.bodyFlags & 0x7f != 0)
        o.binary = m.bodyFlags & 0x7f == 2
        o.envelopeID = m.envelopeID
        o.ret = m.ret
        o.notify = group.map { m.deliveries[$0.index].notify }
        o.originalRecipients = group.map { m.deliveries[$0.index].originalRecipient }
        return o
    }

    /// The courier's outcomes for one group: recorded (failures held back); when the message's
    /// last group is back, its failures are reported and then recorded, and the message is
    /// scheduled again (if it still owes deliveries). A recipient not attempted (nil: shutdown)
    /// keeps its state.
    func courierDone(_ m: SpoolMessage, _ group: [Attempt], _ outcomes: [RecipientOutcome?]) {
        let now = Self.now()
        var failed: [(SpoolStatus, FailedDelivery)] = []
        for (var a, o) in zip(group, outcomes) {
            guard let o else { continue }
            switch o.kind {
            case .delivered:
                a.outcome = .success(o.text)
                a.withoutDSN = o.withoutDSN
            case .temporary: a.outcome = .failure(.temporary(o.text))
            case .permanent: a.outcome = .failure(.permanent(o.text))
            }
            a.status = o.status
            let (status, failure) = finish(a, now: now)
            if let failure { failed.append((status, failure)) } else { spool.record(status) }
        }
        let done: [(SpoolStatus, FailedDelivery)]? = lock.locked {
            guard var entry = withCourier[m.id] else { return nil }
            entry.left -= 1
            entry.failed += failed
            guard entry.left == 0 else {
                withCourier[m.id] = entry
                return nil
            }
            withCourier[m.id] = nil
            return entry.failed
        }
        guard let done else { return }
        if !done.isEmpty { report(m, done) }
        lock.locked {
            inFlight.remove(m.id)
            spool.reschedule(m.id)
            lock.broadcast()
        }
    }

    /// Reports failures (and delays) to the sender, then records their statuses: the spool writes
    /// in order, so the report is on disk before the failure is.
    func report(_ message: SpoolMessage, _ held: [(SpoolStatus, FailedDelivery)]) {
        bounce(message, held.map(\.1))
        for (status, _) in held { spool.record(status) }
    }

    /// Queues a DSN to the sender of `message` for its failed deliveries, and one warning of
    /// the delayed ones.
    func bounce(_ message: SpoolMessage, _ reported: [FailedDelivery]) {
        let failed = reported.filter { $0.action == .failed && Bounce.wanted($0.delivery) }
        let delayed = reported.filter { $0.delayed && Bounce.wantsDelay($0.delivery) }
        // (Success reports are made only for deliveries that asked: see `finish`.)
        let succeeded = reported.filter { $0.action == .delivered || $0.action == .relayed }
        for wanted in [failed, delayed, succeeded] where !wanted.isEmpty { queueReport(message, wanted) }
    }

    func queueReport(_ message: SpoolMessage, _ wanted: [FailedDelivery]) {
        let kind = wanted[0].delayed ? "delay warning" : wanted[0].action == .failed ? "bounce" : "success report"
        guard !message.sender.isEmpty else {
            log.mail("\(QueueID.text(message.id)): no \(kind) for the null sender (a bounce is never bounced)")
            return
        }
        var deliveries: [SpoolDelivery] = []
        switch resolve(message.sender) {
        case .deliver(let dests):
            deliveries = dests.map { SpoolDelivery($0, recipient: message.sender) }
        case .notLocal:
            deliveries.append(SpoolDelivery(kind: .remote, recipient: message.sender, destination: message.sender))
        default:
            log.mail("\(QueueID.text(message.id)): no bounce: the sender <\(message.sender)> is a local address that does not exist")
            return
        }
        let dsn = SpoolMessage(
            id: spool.newID(), arrival: Self.now(), sender: "", body: signReport(Bounce.message(original: message, failed: wanted, hostname: hostname, retryUntil: time_t(message.arrival + lifetime))),
            deliveries: deliveries, bodyFlags: Bounce.isGlobal(original: message, failed: wanted) ? 0x80 : 0)
        // Never refused: written as soon as the disk allows, before the statuses recorded after it.
        spool.storeReport(dsn)
        log.mail("\(QueueID.text(message.id)): \(kind) \(QueueID.text(dsn.id)) queued to <\(message.sender)> for \(wanted.count) recipient(s)")
    }

    /// The status that records one attempt's outcome, and the failure to report when it failed
    /// for good (or earned a delay warning).
    func finish(_ a: Attempt, now: Int64) -> (SpoolStatus, FailedDelivery?) {
        let m = a.message
        let d = m.deliveries[a.index]
        let k = UInt32(a.index)
        let status: SpoolStatus
        var failure: FailedDelivery? = nil
        switch a.outcome! {
        case .success(let detail):
            status = SpoolStatus(id: m.id, delivery: k, state: .delivered, attempts: a.attempts, reason: detail)
            log.mail("\(QueueID.text(m.id)): to=<\(d.recipient)> delivered=\(d.shownDestination) \(detail)")
            // NOTIFY=SUCCESS: delivered here, or relayed to a next hop that will not report
            // (one that offers DSN got the NOTIFY and reports itself, RFC 3461 §6.2.2).
            if Bounce.wantsSuccess(d), d.kind != .remote || a.withoutDSN {
                failure = FailedDelivery(delivery: d, status: "2.0.0", diagnostic: detail, action: d.kind == .remote ? .relayed : .delivered)
            }
        case .failure(.permanent(let why)):
            status = SpoolStatus(id: m.id, delivery: k, state: .failed, attempts: a.attempts, reason: why)
            failure = FailedDelivery(delivery: d, status: a.status ?? "5.0.0", diagnostic: why)
            log.mail("\(QueueID.text(m.id)): to=<\(d.recipient)> failed: \(why)")
        case .failure(.temporary(let why)):
            var rng = SystemRandomNumberGenerator()
            switch retryPolicy.afterTemporaryFailure(attempts: a.attempts, arrival: m.arrival, now: now, warned: a.warned, using: &rng) {
            case .expire:
                status = SpoolStatus(id: m.id, delivery: k, state: .failed, attempts: a.attempts, reason: "expired: \(why)")
                failure = FailedDelivery(delivery: d, status: "4.4.7", diagnostic: "delivery time expired: \(why)")
                log.mail("\(QueueID.text(m.id)): to=<\(d.recipient)> expired after \(a.attempts) attempts: \(why)")
            case .retry(let next, let warn):
                status = SpoolStatus(
                    id: m.id, delivery: k, state: a.warned || warn ? .deferredWarned : .deferred, attempts: a.attempts, nextAttempt: next, reason: why)
                log.mail("\(QueueID.text(m.id)): to=<\(d.recipient)> deferred (attempt \(a.attempts), next in \(next - now) s): \(why)")
                if warn { failure = FailedDelivery(delivery: d, status: a.status ?? "4.0.0", diagnostic: why, delayed: true) }
            }
        }
        return (status, failure)
    }

    /// The retry policy of the current `limits` (SIGHUP may change them between two calls).
    var retryPolicy: RetryPolicy {
        RetryPolicy(first: retryMin, limit: retryMax, lifetime: lifetime, delayWarning: delayWarning)
    }

    /// The wait after attempt number `attempts` failed (`RetryPolicy.backoff`).
    func backoff(_ attempts: UInt32) -> Int64 {
        var rng = SystemRandomNumberGenerator()
        return retryPolicy.backoff(after: attempts, using: &rng)
    }

    enum Prepared {
        /// Written to a Maildir's tmp/, to be committed with the batch.
        case staged(Maildir.Staged)
        case done(Result<String, DeliveryError>)
    }

    /// Stages a Maildir delivery, or runs the MDA or a pipe alias; remote ones wait for the courier.
    func prepare(_ d: SpoolDelivery, _ m: SpoolMessage) -> Prepared {
        switch d.kind {
        case .mailbox:
            guard let at = d.destination.lastIndex(of: "@") else { return .done(.failure(.permanent("bad mailbox \(d.destination)"))) }
            let user = String(d.destination[..<at])
            let domain = String(d.destination[d.destination.index(after: at)...])
            let prefix = Array("Return-Path: <\(m.sender)>\r\nDelivered-To: \(d.destination)\r\n".utf8)
            switch local {
            case .maildir(let maildir):
                do {
                    return .staged(try maildir.stage(prefix: prefix, message: m.body, user: user, domain: domain))
                } catch {
                    return .done(.failure(error))
                }
            case .mda(let argv, let timeout):
                let args = CommandDelivery.expand(argv, user: user, domain: domain, rcpt: d.destination, sender: m.sender)
                return .done(CommandDelivery.run(args, input: prefix + m.body, environment: Self.environment(d, m), timeout: Double(timeout)))
            }
        case .pipe:
            let argv = d.pipeArguments
            let prefix = Array("Return-Path: <\(m.sender)>\r\nDelivered-To: \(d.recipient)\r\n".utf8)
            return .done(CommandDelivery.run(argv, input: prefix + m.body, environment: Self.environment(d, m), timeout: 300))
        case .remote:
            return .done(.failure(.temporary("outbound delivery is not available yet; kept in the queue")))
        }
    }

    /// What a delivery command learns from its environment.
    static func environment(_ d: SpoolDelivery, _ m: SpoolMessage) -> [String: String] {
        ["SENDER": m.sender, "RECIPIENT": d.destination, "ORIGINAL_RECIPIENT": d.recipient]
    }
}

