// The courier: outbound delivery as a tree of Swift tasks on the reactor's executors. Each
// destination (a recipient domain) belongs to one loop and has one task while it has work; that
// task owns the destination's connections as child tasks (a discarding task group), and each
// connection carries message after message (connection reuse) with all of a message's
// recipients for the domain in one transaction. Nothing here hops to the global pool: the
// tasks prefer their loop as executor, and the sessions' I/O callbacks run on that loop too.
//
// Routing (MXRoute), TLS policy (STARTTLS whenever offered; the level reached with a domain is
// recorded and a lower one is a temporary failure, never a silent plaintext send: TLSHistory),
// per-recipient outcomes (OutboundEnvelope, reply codes). When to try again is the queue's.

import Config
import DNS
import Glibc
import MailAuth
import Reactor
import SMTP
import Synchronization

/// How the courier behaves (the `outbound` statements of the configuration).
public struct CourierSettings: Sendable, Equatable {
    /// The port receivers listen on (25; `outbound port N` for tests and closed networks).
    public var port = 25
    /// Our name in EHLO.
    public var heloName = "localhost"
    /// Where receivers' certificates are checked (PEM); nil: the system's trust store.
    public var caFile: String? = nil
    /// Connections at once per destination, and in all.
    public var connectionsPerDestination = 10
    public var connections = 200
    /// Messages carried by one connection before it says QUIT.
    public var messagesPerConnection = 100
    /// Recipients per transaction: a message for more goes in several on the same connection
    /// (RFC 5321 §4.5.3.1.8: receivers take at least 100).
    public var recipientsPerTransaction = 100
    /// A new connection to a destination opens only while more than this many messages wait per
    /// open connection (so that connections are reused rather than multiplied).
    public var backlogPerConnection = 50
    /// How long an idle connection waits for the next message, seconds.
    public var idleReuse: Double = 2
    /// Seconds to wait for a connect, and for each reply.
    public var connectTimeout = 30
    public var replyTimeout = 300
    /// After no host of a destination could be reached: seconds before trying it again.
    public var destinationBackoff = 60
    /// MTA-STS (RFC 8461) for MX deliveries, and the HTTPS port policies are fetched from (443).
    public var mtaSTS = true
    public var mtaSTSPort = 443
    /// Relay hosts by recipient domain (ASCII), and for every other domain.
    public var routes: [String: Route] = [:]
    public var defaultRoute: Route? = nil

    /// A relay host and the password to log in with (when its URL names a user).
    public struct Route: Sendable, Equatable {
        public var smarthost: Smarthost
        public var password: String?
        public init(smarthost: Smarthost, password: String? = nil) {
            self.smarthost = smarthost
            self.password = password
        }
    }

    public init() {}

    /// How mail for `domain` (ASCII) leaves: a relay host, or nil for its MX hosts.
    public func route(for domain: String) -> Route? { routes[domain] ?? defaultRoute }

    /// These settings without their routes: what a reload cannot change while running.
    public var withoutRoutes: CourierSettings {
        var s = self
        s.routes = [:]
        s.defaultRoute = nil
        return s
    }
}

/// Counters of the courier (for the log, `ternctl`, and the relay benchmark).
public struct CourierCounts: Sendable, Equatable {
    public var connections = 0
    public var transactions = 0
    public var open = 0
}

/// Where the queue hands remote deliveries: the courier itself (one process), or the queue's
/// link to the courier process (privilege separation).
public protocol OutboundCourier: AnyObject, Sendable {
    /// Sends `message` (its recipients all in `domain`); `done` gets one outcome per recipient,
    /// nil for one not attempted (the spool keeps it as it was).
    func submit(domain: String, _ message: OutboundMessage, done: @escaping Courier.Completion)
}

/// The outgoing half of the TLS history, as the courier reads and raises it: the files
/// themselves (`TLSHistory`), or in the courier process what the queue said of them
/// (it keeps the files).
public protocol OutgoingTLSHistory: Sendable {
    /// The level reached with `domain` before (plain when nothing was).
    func outgoing(_ domain: String) throws(TLSHistoryError) -> SecurityLevel
    /// `level`, above what `outgoing` said, was reached with `domain`.
    func raise(_ level: SecurityLevel, with domain: String) throws(TLSHistoryError)
}

extension TLSHistory: OutgoingTLSHistory {
    public func outgoing(_ domain: String) throws(TLSHistoryError) -> SecurityLevel { try security(of: domain).outgoing }
    public func raise(_ level: SecurityLevel, with domain: String) throws(TLSHistoryError) { try record(level, with: domain, .outgoing) }
}

public final class Courier: OutboundCourier, @unchecked Sendable {
    public typealias Completion = @Sendable ([RecipientOutcome?]) -> Void
    let loops: [EventLoop]
    /// Fixed at start; its routes are only the first ones (see `routing`).
    let settings: CourierSettings
    /// The routes in force: replaced on reload (`replaceRoutes`).
    let routing: Mutex<CourierSettings>
    let tlsContext: TLSContext
    let history: any OutgoingTLSHistory
    let mtaSTS: MTASTSPolicies?
    let resolver: @Sendable () -> (any DNS.Resolver)?
    let log: @Sendable (String) -> Void
    let shards: [Shard]
    let open = Atomic<Int>(0)
    let connectionsMade = Atomic<Int>(0)
    let transactionsMade = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)

    /// One loop's destinations (touched on that loop only).
    final class Shard: @unchecked Sendable {
        var destinations: [String: Destination] = [:]
    }

    /// - Parameters:
    ///   - resolver: the DNS resolver to use now (the configuration may replace it).
    ///   - log: one line per connection problem and TLS decision.
    ///   - mtaSTSDirectory: where fetched MTA-STS policies are kept; nil: in memory only, and
    ///     `mtaSTSStored` gets each one fetched (the courier process hands them to the queue).
    public init(
        loops: [EventLoop], settings: CourierSettings, history: any OutgoingTLSHistory, mtaSTSDirectory: String?,
        mtaSTSStored: (@Sendable (_ domain: String, _ id: String, _ fetched: Int64, _ text: [UInt8]) -> Void)? = nil,
        resolver: @escaping @Sendable () -> (any DNS.Resolver)?, log: @escaping @Sendable (String) -> Void
    ) throws(TLSError) {
        precondition(!loops.isEmpty)
        self.loops = loops
        self.settings = settings
        self.routing = Mutex(settings)
        self.history = history
        self.resolver = resolver
        self.log = log
        let tlsContext = try TLSContext.client(caFile: settings.caFile)
        self.tlsContext = tlsContext
        mtaSTS = settings.mtaSTS ? MTASTSPolicies(directory: mtaSTSDirectory, port: settings.mtaSTSPort, context: tlsContext, stored: mtaSTSStored, log: log) : nil
        shards = loops.map { _ in Shard() }
    }

    /// Takes an MTA-STS policy fetched before (the queue keeps them): used while valid, as if
    /// this courier had fetched it. False when it does not parse.
    @discardableResult
    public func learnMTASTS(domain: String, id: String, fetched: Int64, text: [UInt8]) -> Bool {
        mtaSTS?.seed(domain, id: id, fetched: fetched, text: text) ?? false
    }

    public var counts: CourierCounts {
        CourierCounts(
            connections: connectionsMade.load(ordering: .relaxed), transactions: transactionsMade.load(ordering: .relaxed),
            open: open.load(ordering: .relaxed))
    }

    /// Hands a message to the destination `domain` (its recipients all in that domain). `done`
    /// gets one outcome per recipient, nil for a recipient not attempted (shutdown): the spool
    /// keeps it as it was. Called from any thread; `done` runs on a loop.
    public func submit(domain: String, _ message: OutboundMessage, done: @escaping Completion) {
        let domain = domain.lowercased()
        let route = routing.withLock { $0.route(for: domain) }
        // Everything for one relay host shares its connections.
        let key = route.map { "via \($0.smarthost)" } ?? domain
        let k = Self.shard(of: key, count: loops.count)
        let job = Job(message: message, done: done)
        let box = Transfer(job)
        loops[k].execute { [self] in
            let job = box.value
            guard !stopping.load(ordering: .relaxed) else { return job.done(Array(repeating: nil, count: job.message.recipients.count)) }
            let shard = shards[k]
            if let old = shard.destinations[key], old.route != route {
                // The routes were reloaded (a relay host's password changed): the destination
                // delivers what it holds the old way, under a key of its own so that shutdown
                // still finds it; new mail takes the new route.
                old.key = "\(key) (before reload, \(ObjectIdentifier(old).hashValue))"
                shard.destinations[key] = nil
                shard.destinations[old.key] = old
            }
            let d = shard.destinations[key] ?? {
                let d = Destination(courier: self, domain: route?.smarthost.host ?? domain, route: route, loop: loops[k])
                d.key = key
                shard.destinations[key] = d
                d.forget = { [unowned shard, unowned d] in
                    if shard.destinations[d.key] === d { shard.destinations[d.key] = nil }
                }
                return d
            }()
            d.enqueue(job)
        }
    }

    /// Takes the routes of `fresh` (a reload): messages submitted from now on follow them;
    /// messages a destination already holds go the way they were sent. Whether they changed.
    @discardableResult
    public func replaceRoutes(_ fresh: CourierSettings) -> Bool {
        routing.withLock {
            let changed = $0.routes != fresh.routes || $0.defaultRoute != fresh.defaultRoute
            $0.routes = fresh.routes
            $0.defaultRoute = fresh.defaultRoute
            return changed
        }
    }

    /// A domain's loop: FNV-1a of its name, so a destination always lives on the same loop.
    static func shard(of key: String, count: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(h % UInt64(count))
    }

    /// Stops taking messages; waiting ones end as not attempted, idle connections QUIT, and
    /// connections in a transaction finish it and QUIT. Waits for them at least `grace` seconds
    /// and as long as a reply may take (`replyTimeout`, plus QUIT's 5 s): a transaction cut
    /// after its final dot may already be the receiver's, and would be sent again after the
    /// restart. Returns how many connections were still open when the wait ended.
    @discardableResult
    public func shutdown(grace: Double = 10) -> Int {
        stopping.store(true, ordering: .relaxed)
        for (k, loop) in loops.enumerated() {
            let shard = shards[k]
            loop.execute {
                for d in shard.destinations.values { d.cancel() }
            }
        }
        let start = ReactorSystem.now()
        let patience = UInt64(grace * 1e9)
        let deadline = start + UInt64(max(grace, Double(settings.replyTimeout) + 10) * 1e9)
        var told = false
        while open.load(ordering: .relaxed) > 0, ReactorSystem.now() < deadline {
            if !told, ReactorSystem.now() - start >= patience {
                told = true
                log("outbound: \(open.load(ordering: .relaxed)) connection(s) still in a transaction; waiting up to \((deadline - ReactorSystem.now()) / 1_000_000_000) s more for them to finish (a reply may take \(settings.replyTimeout) s)")
            }
            usleep(10_000)
        }
        return open.load(ordering: .relaxed)
    }

    func takeSlot() -> Bool {
        var n = open.load(ordering: .relaxed)
        while n < settings.connections {
            let (done, now) = open.compareExchange(expected: n, desired: n + 1, ordering: .relaxed)
            if done { return true }
            n = now
        }
        return false
    }

    func releaseSlot() { open.subtract(1, ordering: .relaxed) }
}

/// A message waiting for a connection, and who to tell how it went.
struct Job {
    var message: OutboundMessage
    var done: Courier.Completion
}

/// One destination domain on one loop: its queue, its connections, its back-off.
final class Destination: @unchecked Sendable {
    unowned let courier: Courier
    /// The recipient domain, or the relay host's name: what TLS history is kept for.
    let domain: String
    /// A relay host; nil: the domain's MX hosts.
    let route: CourierSettings.Route?
    let loop: EventLoop
    var queue: [Job] = []
    var head = 0
    var active = 0
    var running = false
    /// The destination task waits here for work or for a connection to end.
    var wake: UnsafeContinuation<Void, Never>? = nil
    var woken = false
    /// Connections waiting for a message before they QUIT.
    var idle: [(id: Int, session: OutboundSession, waiter: UnsafeContinuation<Job?, Never>)] = []
    var idleCount = 0
    /// No connection before this time (ns, ReactorSystem.now()), and why.
    var backoffUntil: UInt64 = 0
    var backoffReason = ""
    /// The back-off is a TLS history refusal of a receiver offering this level: it ends as soon
    /// as the history allows that level (`ternctl tls reset` in another process).
    var backoffTLSLevel: SecurityLevel? = nil
    /// Set by `openSession` when the history refused the level offered.
    var refusedTLSLevel: SecurityLevel? = nil
    var cancelled = false
    var task: Task<Void, Never>? = nil
    /// Its name in its loop's table, and what removes it from there.
    var key = ""
    var forget: () -> Void = {}

    init(courier: Courier, domain: String, route: CourierSettings.Route?, loop: EventLoop) {
        self.courier = courier
        self.domain = domain
        self.route = route
        self.loop = loop
    }

    var waiting: Int { queue.count - head }
    /// Mail for an address literal (`user@[192.0.2.1]`): no MX, no MTA-STS, no TLS history.
    var isLiteral: Bool { route == nil && domain.hasPrefix("[") }
    var settings: CourierSettings { courier.settings }

    func enqueue(_ job: Job) {
        if backoffUntil > ReactorSystem.now(), let level = backoffTLSLevel, let known = try? courier.history.outgoing(domain), level >= known {
            // The history was reset meanwhile: try at once.
            backoffUntil = 0
            backoffTLSLevel = nil
        }
        let now = ReactorSystem.now()
        if backoffUntil > now {
            // Whole seconds, rounded up (never "for 0 s").
            let left = (backoffUntil - now + 999_999_999) / 1_000_000_000
            return job.done(job.message.recipients.map { _ in .temporary("4.4.1", "\(backoffReason) (not tried again for \(left) s)") })
        }
        while let w = idle.popLast() {
            // A connection the receiver closed while idle ends; the next one takes the message.
            guard w.session.isUsable else {
                w.waiter.resume(returning: nil)
                continue
            }
            return w.waiter.resume(returning: job)
        }
        queue.append(job)
        if running {
            signal()
        } else {
            running = true
            task = Task(executorPreference: loop) { await self.run() }
        }
    }

    func takeJob() -> Job? {
        guard head < queue.count else { return nil }
        let j = queue[head]
        head += 1
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        }
        return j
    }

    /// Something changed (a message came, a connection ended): the destination task looks again.
    func signal() {
        if let w = wake {
            wake = nil
            w.resume()
        } else {
            woken = true
        }
    }

    /// Waits for `signal()`, unless one came since the last wait. (The body of
    /// `withUnsafeContinuation` runs as a job of its own on the loop, after events that may
    /// already have signalled: hence the flag.)
    func waitForSignal() async {
        if woken {
            woken = false
            return
        }
        await withUnsafeContinuation { c in
            if woken {
                woken = false
                c.resume()
            } else {
                wake = c
            }
        }
    }

    /// The destination task: opens connections while messages wait, as child tasks, until the
    /// queue is empty and every connection has ended.
    func run() async {
        await withDiscardingTaskGroup { group in
            while true {
                while waiting > 0, active < settings.connectionsPerDestination, !cancelled,
                    active == 0 || waiting > active * settings.backlogPerConnection, courier.takeSlot()
                {
                    active += 1
                    group.addTask(executorPreference: loop) {
                        await self.connection()
                        self.active -= 1
                        self.courier.releaseSlot()
                        self.signal()
                    }
                }
                if active == 0 {
                    if waiting == 0 || cancelled { break }
                    // Every connection of the courier is busy: look again shortly.
                    _ = loop.schedule(after: 50_000_000) { [self] in signal() }
                }
                await waitForSignal()
            }
        }
        // A message that came while the task group was closing: carry on.
        if waiting > 0, !cancelled {
            task = Task(executorPreference: loop) { await self.run() }
            return
        }
        // Whatever is still queued was not attempted (shutdown).
        while let j = takeJob() { j.done(Array(repeating: nil, count: j.message.recipients.count)) }
        running = false
        task = nil
        // Idle: forgotten once its back-off (if any) is over, so destinations do not pile up.
        let now = ReactorSystem.now()
        if backoffUntil <= now { return forget() }
        _ = loop.schedule(after: backoffUntil - now) { [self] in
            if !running { forget() }
        }
    }

    func cancel() {
        cancelled = true
        for w in idle { w.waiter.resume(returning: nil) }
        idle.removeAll()
        task?.cancel()
        signal()
    }

    /// Fails every waiting message with `outcome` (the destination cannot be reached or routed).
    func failWaiting(_ outcome: RecipientOutcome) {
        while let j = takeJob() { j.done(j.message.recipients.map { _ in outcome }) }
    }

    /// One connection: open a session, then deliver waiting messages one after another.
    func connection() async {
        let opened = await openSession()
        let session: OutboundSession
        switch opened {
        case .success(let s): session = s
        case .failure(let outcome):
            if outcome.kind == .temporary {
                backoffUntil = ReactorSystem.now() + UInt64(settings.destinationBackoff) * 1_000_000_000
                backoffReason = outcome.text
                backoffTLSLevel = refusedTLSLevel
            }
            failWaiting(outcome)
            return
        }
        courier.connectionsMade.add(1, ordering: .relaxed)
        var carried = 0
        while carried < settings.messagesPerConnection, session.isUsable, !cancelled {
            guard let job = await nextJob(for: session) else { break }
            let outcomes = await deliver(job.message, over: session)
            courier.transactionsMade.add(1, ordering: .relaxed)
            job.done(outcomes)
            carried += 1
        }
        await session.quit()
    }

    /// The next waiting message, or one that arrives within `idleReuse` seconds.
    func nextJob(for session: OutboundSession) async -> Job? {
        if let j = takeJob() { return j }
        guard !cancelled else { return nil }
        idleCount += 1
        let id = idleCount
        return await withUnsafeContinuation { (c: UnsafeContinuation<Job?, Never>) in
            // A message may have come before this body ran (see `waitForSignal`).
            if let j = takeJob() { return c.resume(returning: j) }
            if cancelled { return c.resume(returning: nil) }
            idle.append((id, session, c))
            _ = loop.schedule(after: UInt64(settings.idleReuse * 1e9)) { [self] in
                // Still idle: stop waiting (a message may have come for it already).
                guard let i = idle.firstIndex(where: { $0.id == id }) else { return }
                idle.remove(at: i).waiter.resume(returning: nil)
            }
        }
    }

    enum Opened {
        case success(OutboundSession)
        case failure(RecipientOutcome)
    }

    /// Routes the domain and tries its hosts' addresses in order until one greets us, gets
    /// through EHLO (and STARTTLS when offered) and meets the domain's TLS history.
    func openSession() async -> Opened {
        let dns = courier.resolver()
        let routed: Result<[MXHost], RouteFailure>
        if isLiteral, let literal = MXRoute.literal(domain) {
            routed = literal
        } else {
            guard let dns else { return .failure(.temporary("4.4.3", "no DNS resolver configured")) }
            if let route {
                routed = await MXRoute.relayHost(route.smarthost.host, resolver: dns)
            } else {
                guard let name = try? DNSName(domain) else { return .failure(.permanent("5.1.2", "\(domain) is not a valid domain name")) }
                routed = await MXRoute.hosts(for: name, resolver: dns)
            }
        }
        var hosts: [MXHost]
        switch routed {
        case .success(let h): hosts = h
        case .failure(let f):
            // A relay host that cannot be found is our configuration's problem: try again later.
            let permanent = f.isPermanent && route == nil
            let why = f.description.hasPrefix(domain) ? f.description : "\(domain): \(f.description)"
            return .failure(RecipientOutcome(permanent ? .permanent : .temporary, permanent ? f.status : "4.4.3", why))
        }
        // MTA-STS: enforce keeps the MX hosts the policy names and requires verified TLS;
        // testing only reports.
        var policy: MTASTSPolicy? = nil
        if route == nil, !isLiteral, let dns, let sts = courier.mtaSTS, let p = await sts.policy(for: domain, resolver: dns, loop: loop), p.mode != .none {
            policy = p
            let outside = hosts.filter { !p.allows(mx: $0.name.text) }
            for h in outside { courier.log("mta-sts: \(domain): MX host \(h.name.text) is not in the policy (mode \(p.mode.rawValue))") }
            if p.mode == .enforce {
                hosts = hosts.filter { p.allows(mx: $0.name.text) }
                if hosts.isEmpty {
                    return .failure(.temporary("4.7.5", "no MX host of \(domain) matches its MTA-STS policy (mx: \(p.mx.joined(separator: ", ")))"))
                }
            }
        }
        var last = RecipientOutcome.temporary("4.4.1", "no host of \(domain) could be reached")
        for host in hosts {
            let name = route?.smarthost.host ?? (isLiteral ? domain : host.name.text)
            for address in host.addresses {
                if cancelled { return .failure(.temporary("4.3.2", "shutting down")) }
                var tryTLS = true
                while true {
                    let s = await session(host: name, address: address, startTLS: tryTLS, policy: policy)
                    switch s {
                    case .success(let session):
                        return .success(session)
                    case .failure(let outcome, let tlsFailed):
                        last = outcome
                        if tlsFailed, tryTLS, (route?.smarthost.security ?? .opportunistic) == .opportunistic {
                            // A broken TLS stack: once more without STARTTLS; the TLS history
                            // still decides whether clear is acceptable for this domain.
                            courier.log("outbound: \(outcome.text); trying \(name)[\(address)] again without STARTTLS")
                            tryTLS = false
                            continue
                        }
                        courier.log("outbound: \(domain): \(outcome.text)")
                    }
                    break
                }
            }
        }
        return .failure(last)
    }

    enum SessionResult {
        case success(OutboundSession)
        case failure(RecipientOutcome, tlsFailed: Bool)
    }

    func session(host: String, address: String, startTLS: Bool, policy: MTASTSPolicy?) async -> SessionResult {
        var config = ClientConfiguration(heloName: settings.heloName, allowPipelining: true, allowChunking: true)
        config.opportunisticTLS = startTLS
        var port = settings.port
        if let r = route?.smarthost {
            port = r.port
            config.startTLS = r.security == .startTLS
            config.implicitTLS = r.security == .implicitTLS
            if let user = r.user { config.auth = (user, route?.password ?? "") }
        }
        let s = OutboundSession(
            loop: loop, hostName: host, address: address, configuration: config, tlsContext: courier.tlsContext,
            idleTimeout: UInt64(settings.replyTimeout) * 1_000_000_000)
        s.requireVerifiedTLS = config.auth != nil
        if let why = await s.connect(port: port, timeout: UInt64(settings.connectTimeout) * 1_000_000_000) {
            s.close()
            return .failure(.temporary("4.4.1", why), tlsFailed: false)
        }
        switch await s.hello() {
        case .ready:
            break
        case .failed(let code, let text):
            s.close()
            let why = code == 0 ? text : "\(s.peerName) refused the session: \(code) \(text)"
            return .failure(.temporary("4.4.2", why), tlsFailed: s.tlsFailed)
        default:
            s.close()
            return .failure(.temporary("4.4.2", "\(s.peerName) closed the session"), tlsFailed: false)
        }
        // Downgrade protection: never below what this domain reached before.
        let level = s.securityLevel
        if let policy, level < .tlsVerified {
            let why = "the MTA-STS policy of \(domain) requires TLS with a valid certificate; \(s.peerName) offers \(level)"
                + (s.verification.map { if case .unverified(let r) = $0 { return " (\(r))" } else { return "" } } ?? "")
            if policy.mode == .enforce {
                await s.quit()
                return .failure(.temporary("4.7.5", why), tlsFailed: false)
            }
            courier.log("mta-sts (testing, delivering anyway): \(why)")
        }
        if isLiteral { return .success(s) }
        do {
            refusedTLSLevel = nil
            let known = try courier.history.outgoing(domain)
            guard level >= known else {
                refusedTLSLevel = level
                await s.quit()
                return .failure(
                    .temporary("4.7.10", "\(s.peerName) offers \(level) but \(domain) reached \(known) before: not sending at a lower level (ternctl tls reset \(domain) accepts it)"),
                    tlsFailed: false)
            }
            if level > known {
                try courier.history.raise(level, with: domain)
                courier.log("outbound: \(domain): TLS level raised to \(level) (\(s.peerName))")
            }
        } catch {
            await s.quit()
            return .failure(.temporary("4.3.0", "TLS history: \(error)"), tlsFailed: false)
        }
        return .success(s)
    }

    /// Sends `m` over an open session, one outcome per recipient: its recipients in transactions
    /// of at most `recipientsPerTransaction`, and again at once, in a new transaction, those a
    /// receiver refused with 452 because one transaction had enough of them (RFC 5321
    /// §4.5.3.1.10) — as long as each transaction delivers to someone.
    func deliver(_ m: OutboundMessage, over s: OutboundSession) async -> [RecipientOutcome?] {
        let plan = OutboundEnvelope.plan(m, capabilities: s.capabilities)
        var outcomes: [RecipientOutcome?] = m.recipients.indices.map { plan.settled[$0] }
        // Positions in plan.transaction's recipients still to send.
        var waiting = Array(plan.sent.indices)
        while !waiting.isEmpty {
            let batch = Array(waiting.prefix(max(1, settings.recipientsPerTransaction)))
            waiting.removeFirst(batch.count)
            var tx = plan.transaction
            if batch.count < tx.recipients.count {
                tx.recipients = batch.map { plan.transaction.recipients[$0] }
                if !tx.recipientParameters.isEmpty { tx.recipientParameters = batch.map { plan.transaction.recipientParameters[$0] } }
            }
            switch await s.send(tx, body: m.body) {
            case .lost(let why):
                for p in batch + waiting { outcomes[plan.sent[p]] = .temporary("4.4.2", why) }
                return outcomes
            case .done(let r):
                let delivered = r.code >= 200 && r.code < 300
                var again: [Int] = []
                for (k, p) in batch.enumerated() {
                    let code = k < r.recipientCodes.count ? r.recipientCodes[k] : r.code
                    let refused = !r.senderRefused && (code < 200 || code >= 300)
                    var o = OutboundEnvelope.outcome(of: r, recipient: k, host: s.peerName)
                    if o.kind == .delivered, !s.capabilities.dsn { o.withoutDSN = true }
                    outcomes[plan.sent[p]] = o
                    if refused, code == 452, delivered { again.append(p) }
                }
                // Delivered to some and refused the rest for their number: those go next.
                if again.count < batch.count { waiting = again + waiting }
            }
        }
        return outcomes
    }
}
