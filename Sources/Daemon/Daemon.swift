// ternd: listeners on the reactor, the mail delegate, the spool and the delivery workers.
import Config
import DNS
import Delivery
import Glibc
import MailAuth
import Reactor
import SMTP
import Server
import Spool
import Synchronization

public final class Daemon: @unchecked Sendable {
    public let loaded: LoadedConfiguration
    public let queue: MailQueue
    let group: EventLoopGroup
    let resolver: SharedResolver
    public let hostname: String
    var delegates: [MailDelegate] = []
    /// Where every DNS question goes (the `resolver` statement); replaced on reload.
    let dnsResolver = Mutex<(setting: ResolverSetting, resolver: any DNS.Resolver)?>(nil)
    public var dns: (any DNS.Resolver)? { dnsResolver.withLock { $0?.resolver } }
    /// `spf reject` (the default) or `spf tag`; replaced on reload.
    let spfRejectsFlag = Atomic<Bool>(true)
    var spfRejects: Bool { spfRejectsFlag.load(ordering: .relaxed) }
    /// What mail authentication needs from the configuration; replaced on reload.
    struct AuthSettings: Sendable {
        var signingKeys: [String: [DKIMSigningKey]]
        var suffixes: PublicSuffixList
        var dmarc: Configuration.DMARCAction

        init(_ loaded: LoadedConfiguration) {
            signingKeys = loaded.signingKeys
            suffixes = loaded.suffixes
            dmarc = loaded.configuration.dmarc
        }
    }
    let authSettings: Mutex<AuthSettings>
    var auth: AuthSettings { authSettings.withLock { $0 } }
    /// The per-domain TLS history (`SPOOL/tls-history`): outgoing levels kept by the courier,
    /// incoming ones by the sessions (docs/ternctl.md, `ternctl tls`).
    let tlsHistory: TLSHistory
    /// Bound ports, in the order of the config's listeners.
    public private(set) var ports: [Int] = []
    /// Who may AUTH; replaced on reload.
    let authenticator: Authenticator
    /// Every loop's inbound contexts (one per listener), to hand them new certificates on reload.
    /// One list per loop, touched only on that loop.
    final class LoopContexts: @unchecked Sendable { var list: [(kind: Configuration.ListenerKind, context: InboundContext)] = [] }
    var inboundContexts: [LoopContexts] = []
    /// Certificates are in use (TLS offered): fixed at start, a reload changes the certificates only.
    var tlsOffered = false

    /// - Parameter ioBackend: `--io-backend`, which wins over the configuration's `io-backend`.
    public init(_ loaded: LoadedConfiguration, loops: Int = 0, workers: Int = 2, ioBackend: IOBackendKind? = nil) throws {
        self.loaded = loaded
        authSettings = Mutex(AuthSettings(loaded))
        tlsHistory = TLSHistory(directory: TLSHistory.directory(spool: loaded.configuration.spool))
        authenticator = Authenticator(users: loaded.users, maxFailures: loaded.configuration.limits.authFailures)
        let c = loaded.configuration
        hostname = c.hostname
        let resolver = SharedResolver(Self.resolver(loaded))
        self.resolver = resolver
        var spoolOptions = SpoolOptions()
        // The spool is "stalled" (MAIL refused with 451) once a write waits half the time a
        // session would wait for its 250.
        spoolOptions.stallAfter = min(5, Double(c.limits.spoolTimeout) / 2)
        let spool = try Spool(directory: c.spool, options: spoolOptions)
        spool.log = { Log.error($0) }
        let report = try spool.recover()
        Self.logRecovery(report, spool: c.spool)
        spoolTimeoutValue = Atomic(c.limits.spoolTimeout)
        current = loaded
        let local: MailQueue.Local
        switch c.delivery {
        case .maildir(let pattern): local = .maildir(Maildir(pattern: pattern, hostname: c.hostname))
        case .mda(let argv, let timeout): local = .mda(argv, timeout: timeout)
        }
        queue = MailQueue(
            spool: spool, local: local, lifetime: c.limits.queueLifetime, hostname: c.hostname,
            resolve: { address in resolver.current.resolve(address) })
        ReactorSystem.setLogSink { Log.error($0) }
        ReactorSystem.raiseFileLimit()
        // One line says which backend runs, and why when io_uring was wanted and is not usable.
        Log.info(IOBackendChoice.select(ioBackend ?? c.ioBackend).note)
        group = try EventLoopGroup(count: loops)
        self.workers = workers
        queue.retryMin = Int64(c.limits.retryInterval)
        queue.retryMax = Int64(max(c.limits.retryMaxInterval, c.limits.retryInterval))
        queue.delayWarning = Int64(c.limits.delayWarning)
    }

    let workers: Int
    /// Seconds a session waits for the spool at the end of DATA (`limits { spool-timeout }`);
    /// SIGHUP replaces it.
    let spoolTimeoutValue: Atomic<Int>
    var spoolTimeout: Int { spoolTimeoutValue.load(ordering: .relaxed) }
    /// The configuration in force: the one at the start, then each one SIGHUP applied (main
    /// thread only). `loaded` stays the one at the start: settings that need a restart are
    /// compared with it.
    var current: LoadedConfiguration

    /// What recovery found, as the log says it: the counts, a torn tail, and damage with the
    /// messages it cost.
    static func logRecovery(_ report: RecoveryReport, spool: String) {
        var line = "spool \(spool): recovered \(report.records) records in \(report.segments) segments, \(report.pendingMessages) messages pending, in \(Int(report.seconds * 1000)) ms"
        if report.truncatedBytes > 0 {
            line += "; cut a torn tail of \(report.truncatedBytes) bytes (a write in progress when ternd stopped, never acknowledged"
            line += report.tornMessage.map { ": message \(hex($0)))" } ?? ")"
        }
        if report.deletedSegments > 0 { line += "; deleted \(report.deletedSegments) segments holding nothing owed" }
        if report.migratedMessages > 0 { line += "; took over \(report.migratedMessages) messages from record format 1" }
        Log.info(line)
        for d in report.damage { Log.error("spool damage: \(d)") }
        guard !report.damage.isEmpty else { return }
        for copy in report.savedCopies { Log.error("spool damage: kept as \(copy) (a damaged segment moves there once nothing in it is owed)") }
        Log.error(
            "spool damage: \(report.lostMessages.count) message(s) lost" + (report.lostMessages.isEmpty ? "" : ": " + report.lostMessages.map(hex).joined(separator: " "))
                + (report.unidentifiedDamage > 0 ? "; \(report.unidentifiedDamage) damaged region(s) could not be identified (messages in them are lost)" : "")
                + (report.lostStatuses.isEmpty ? "" : "; delivery statuses lost (those deliveries may be repeated) for " + report.lostStatuses.map(hex).joined(separator: " "))
                + (report.revivedMessages.isEmpty ? "" : "; taken as still owed (they may be delivered again): " + report.revivedMessages.map(hex).joined(separator: " ")))
    }

    /// Outbound delivery; made in `start()`.
    public private(set) var courier: Courier? = nil

    /// The courier's settings from the configuration.
    static func courierSettings(_ c: Configuration, passwords: [String: String]) -> CourierSettings {
        var s = CourierSettings()
        s.port = c.outbound.port
        s.heloName = c.hostname
        s.caFile = c.outbound.caFile
        s.connections = c.outbound.connections
        s.connectionsPerDestination = c.outbound.connectionsPerDestination
        s.messagesPerConnection = c.outbound.messagesPerConnection
        s.destinationBackoff = min(60, c.limits.retryInterval)
        s.mtaSTS = c.outbound.mtaSTS
        s.mtaSTSPort = c.outbound.mtaSTSPort
        for r in c.relays {
            guard let via = r.via else { continue }
            let route = CourierSettings.Route(smarthost: via, password: via.authFile.flatMap { passwords[$0] })
            if let d = r.domain { s.routes[d.ascii] = route } else { s.defaultRoute = route }
        }
        return s
    }

    /// The engine's configuration for a kind of listener: STARTTLS and AUTH when certificates
    /// exist; submission ports require AUTH; implicit TLS needs no STARTTLS.
    func serverConfiguration(_ kind: Configuration.ListenerKind, _ loaded: LoadedConfiguration) -> ServerConfiguration {
        let c = loaded.configuration
        // The name is the running one (`hostname` needs a restart, as the reload says).
        var s = ServerConfiguration(hostname: self.loaded.configuration.hostname)
        s.maxMessageSize = c.limits.messageSize
        s.maxRecipients = c.limits.recipients
        s.maxErrors = c.limits.errors
        s.commandTimeout = UInt64(c.limits.commandTimeout) * 1_000_000_000
        s.dataTimeout = UInt64(c.limits.dataTimeout) * 1_000_000_000
        s.sessionTimeout = UInt64(c.limits.sessionTimeout) * 1_000_000_000
        s.writeTimeout = UInt64(c.limits.writeTimeout) * 1_000_000_000
        s.minDataRate = c.limits.minDataRate
        s.policyEvents = true
        // TLS and AUTH are offered as at the start (a reload replaces certificates, never adds
        // or removes TLS).
        let tls = tlsOffered
        s.startTLS = tls && kind != .submissions
        s.auth = tls && (kind != .smtp || !loaded.users.isEmpty)
        s.requireAuth = kind != .smtp
        return s
    }

    /// A DSN signed with the keys of the host name's domain, or of the nearest parent domain
    /// that has keys (relaxed DMARC alignment with MAILER-DAEMON@hostname); unsigned when none does.
    func signReport(_ message: [UInt8]) -> [UInt8] {
        let keys = auth.signingKeys
        var labels = hostname.lowercased().split(separator: ".")
        while labels.count >= 2 {
            if let k = keys[labels.joined(separator: ".")] {
                do {
                    return try DKIMSigner.sign(message, keys: k, time: Int(time(nil)))
                } catch {
                    Log.error("dkim: signing a delivery report failed: \(error)")
                    return message
                }
            }
            labels.removeFirst()
        }
        return message
    }

    /// Starts the loops and the listeners.
    public func start() throws {
        try startQueue()
        try startListeners()
    }

    /// Starts the loops, the DNS resolver, the courier and the queue's delivery workers: all of
    /// ternd but its listeners (the queue process runs this alone).
    public func startQueue() throws {
        group.start()
        try startResolver(loaded)
        let c = loaded.configuration
        let courier = try Courier(
            loops: group.loops, settings: Self.courierSettings(c, passwords: loaded.relayPasswords), history: tlsHistory,
            mtaSTSDirectory: "\(c.spool)/mta-sts",
            resolver: { [weak self] in self?.dns }, log: { Log.mail($0) })
        self.courier = courier
        queue.courier = courier
        queue.signReport = { [weak self] message in self?.signReport(message) ?? message }
        queue.start(workers: workers)
        for r in c.relays {
            Log.info("relay: \(r.domain.map { "mail for \($0.unicode) accepted from anyone and" } ?? "mail for every other domain") sent \(r.via.map { "via \($0)" } ?? "to its MX hosts")")
        }
        Log.info("outbound: port \(c.outbound.port), \(c.outbound.connectionsPerDestination) connections per destination, \(c.outbound.connections) in all; certificates checked against \(c.outbound.caFile ?? "the system's trust store")")
        spfRejectsFlag.store(loaded.configuration.spf == .reject, ordering: .relaxed)
        announceAuth(loaded)
    }

    /// The listeners, each with a mail delegate per loop.
    func startListeners() throws {
        var servers: [Configuration.ListenerKind: ServerContext] = [:]
        let delegates = group.loops.map { _ in MailDelegate(daemon: self) }
        self.delegates = delegates
        inboundContexts = group.loops.map { _ in LoopContexts() }
        // The client's SNI name picks the certificate; the first (by name) otherwise.
        let tls = loaded.certificates.isEmpty ? nil : try TLSContext.selectingByName(loaded.certificates.map(\.context))
        tlsOffered = tls != nil
        for kind in Configuration.ListenerKind.allCases { servers[kind] = ServerContext(serverConfiguration(kind, loaded)) }
        let box = Transfer((delegates, servers))
        if !loaded.certificates.isEmpty {
            Log.info("tls: STARTTLS offered; certificates by SNI: \(loaded.certificates.map(\.name).joined(separator: ", ")) (the first by default)")
            Log.info(loaded.users.isEmpty ? "auth: no users files: AUTH offered on submission ports only, where nobody can log in" : "auth: AUTH PLAIN/LOGIN over TLS for \(loaded.users.keys.sorted().joined(separator: ", "))")
        } else {
            Log.info("tls: no certificates: plain SMTP only, STARTTLS and AUTH not offered")
        }
        for l in loaded.configuration.listeners {
            let kind = l.kind
            let port = try group.listen(host: l.host, port: l.port) { loop in
                let (delegates, servers) = box.value
                let context = InboundContext(server: servers[kind]!, delegate: delegates[loop.index], tls: tls, implicitTLS: kind == .submissions)
                self.inboundContexts[loop.index].list.append((kind, context))
                return { _ in InboundSession(context: context) }
            }
            ports.append(port)
            Log.info("listening: \(l.kind.rawValue) on \(l.host.contains(":") ? "[\(l.host)]" : l.host):\(port)")
        }
    }

    /// Who exists: with Maildir delivery, a user whose Maildir exists; with an MDA, any safe local
    /// part (the MDA decides) until users files exist.
    static func resolver(_ loaded: LoadedConfiguration) -> RecipientResolver {
        let users = loaded.users
        switch loaded.configuration.delivery {
        case .maildir(let pattern):
            let maildir = Maildir(pattern: pattern, hostname: loaded.configuration.hostname)
            return RecipientResolver(domains: loaded.domains, relayDomains: loaded.configuration.relayDomains) { u, d in
                users[d.ascii]?.contains(u) == true || maildir.exists(user: u, domain: d.unicode)
            }
        case .mda:
            // With a users file, it says who exists; without, the MDA decides.
            return RecipientResolver(domains: loaded.domains, relayDomains: loaded.configuration.relayDomains) { u, d in
                users[d.ascii].map { $0.contains(u) } ?? Maildir.isSafe(u)
            }
        }
    }

    /// Replaces the recipient tables (SIGHUP), leaving sessions as they are.
    public func reload(_ fresh: LoadedConfiguration) {
        // What cannot change in a running ternd: each one that changed says so, and keeps its
        // running value until the next start.
        let c = fresh.configuration, running = loaded.configuration
        var restartOnly: [String] = []
        if c.listeners.map({ "\($0.kind) \($0.host) \($0.port)" }) != running.listeners.map({ "\($0.kind) \($0.host) \($0.port)" }) { restartOnly.append("listen") }
        if c.spool != running.spool { restartOnly.append("spool") }
        if c.ioBackend != running.ioBackend { restartOnly.append("io-backend") }
        if c.delivery != running.delivery { restartOnly.append("deliver") }
        if c.hostname != running.hostname { restartOnly.append("hostname") }
        if fresh.certificates.isEmpty != loaded.certificates.isEmpty { restartOnly.append("certificates (TLS offered or not)") }
        let outbound = Self.courierSettings(fresh.configuration, passwords: fresh.relayPasswords)
        if outbound.withoutRoutes != Self.courierSettings(loaded.configuration, passwords: loaded.relayPasswords).withoutRoutes {
            restartOnly.append("outbound (relay routes are replaced now)")
        }
        for s in restartOnly { Log.info("reload: \(s) changed: takes effect at the next start") }
        applyLimits(fresh)
        if courier?.replaceRoutes(outbound) == true { Log.info("outbound: relay routes replaced") }
        resolver.replace(Self.resolver(fresh))
        authenticator.replace(fresh.users)
        reloadCertificates(fresh)
        spfRejectsFlag.store(fresh.configuration.spf == .reject, ordering: .relaxed)
        authSettings.withLock { $0 = AuthSettings(fresh) }
        announceAuth(fresh)
        do {
            try startResolver(fresh)
        } catch {
            Log.error("dns: keeping the previous resolver: \(error)")
        }
        current = fresh
        Log.info("reloaded recipients and aliases from \(fresh.path)")
    }

    /// `limits`: new sessions get the new session limits, the queue its new times, at once.
    func applyLimits(_ fresh: LoadedConfiguration) {
        let old = current.configuration.limits, new = fresh.configuration.limits
        guard old != new else { return }
        var changed: [String] = []
        func note<T: Equatable>(_ name: String, _ k: KeyPath<Configuration.Limits, T>) { if old[keyPath: k] != new[keyPath: k] { changed.append(name) } }
        note("message-size", \.messageSize)
        note("recipients", \.recipients)
        note("errors", \.errors)
        note("command-timeout", \.commandTimeout)
        note("data-timeout", \.dataTimeout)
        note("queue-lifetime", \.queueLifetime)
        note("auth-failures", \.authFailures)
        note("retry-interval", \.retryInterval)
        note("retry-max-interval", \.retryMaxInterval)
        note("delay-warning", \.delayWarning)
        note("spool-timeout", \.spoolTimeout)
        note("session-timeout", \.sessionTimeout)
        note("write-timeout", \.writeTimeout)
        note("min-data-rate", \.minDataRate)
        var servers: [Configuration.ListenerKind: ServerContext] = [:]
        for kind in Configuration.ListenerKind.allCases { servers[kind] = ServerContext(serverConfiguration(kind, fresh)) }
        let box = Transfer((self, servers))
        _ = try? group.onEachLoop { loop in
            let (daemon, servers) = box.value
            for (kind, context) in daemon.inboundContexts[loop.index].list { context.server = servers[kind]! }
        }
        queue.retryMin = Int64(new.retryInterval)
        queue.retryMax = Int64(max(new.retryMaxInterval, new.retryInterval))
        queue.delayWarning = Int64(new.delayWarning)
        queue.lifetime = Int64(new.queueLifetime)
        authenticator.setMaxFailures(new.authFailures)
        spoolTimeoutValue.store(new.spoolTimeout, ordering: .relaxed)
        queue.spool.setStallAfter(min(5, Double(new.spoolTimeout) / 2))
        Log.info("reload: limits applied (new sessions, the queue): \(changed.joined(separator: ", "))")
    }

    /// New certificates for new handshakes; sessions running keep the ones they started with.
    func reloadCertificates(_ fresh: LoadedConfiguration) {
        guard tlsOffered else {
            if !fresh.certificates.isEmpty { Log.error("tls: certificates appeared; restart ternd to offer STARTTLS (a reload only replaces certificates)") }
            return
        }
        guard !fresh.certificates.isEmpty, let tls = try? TLSContext.selectingByName(fresh.certificates.map(\.context)) else {
            Log.error("tls: no certificates after reload; keeping the previous ones")
            return
        }
        let box = Transfer((self, tls))
        _ = try? group.onEachLoop { loop in
            let (daemon, tls) = box.value
            for (_, context) in daemon.inboundContexts[loop.index].list { context.tls = tls }
        }
        Log.info("tls: certificates reloaded: \(fresh.certificates.map(\.name).joined(separator: ", "))")
    }

    func announceAuth(_ loaded: LoadedConfiguration) {
        for (domain, keys) in loaded.signingKeys.sorted(by: { $0.key < $1.key }) {
            Log.info("dkim: signing for \(domain) with " + keys.map { "\($0.selector) (\($0.algorithm.rawValue))" }.joined(separator: ", "))
        }
        if let w = loaded.suffixWarning { Log.error("dmarc: \(w)") }
        Log.info("dmarc: a fail with p=reject is \(["reject": "refused (550 5.7.1)", "quarantine-header": "marked with X-Tern-Quarantine", "none": "recorded only"][loaded.configuration.dmarc.rawValue]!)")
    }

    /// Makes the configured DNS resolver, running on the daemon's loops (the cache starts empty).
    func startResolver(_ loaded: LoadedConfiguration) throws {
        // Unchanged servers (an aliases file changed, say): keep the resolver and its cache. A zone
        // was read again with the configuration.
        let setting = loaded.configuration.resolver
        let unchanged = dnsResolver.withLock { $0?.setting == setting }
        if unchanged, !setting.isZone { return }
        let r = try loaded.makeResolver(group: group)
        dnsResolver.withLock { $0 = (setting, r) }
        Log.info("dns: resolver \(setting)")
    }

    /// Drains: stop accepting, let sessions finish (at most `grace` seconds), then 421 the rest,
    /// stop the loops and the workers, and close the spool. Nothing acknowledged is lost.
    public func drain(grace: Double = 10) {
        // (The queue process has no listeners and no sessions.)
        let box = Transfer(delegates.isEmpty ? group.loops.map { _ in MailDelegate(daemon: self) } : delegates)
        // Listeners first, then the log line: once it says so, no connection is accepted.
        _ = try? group.onEachLoop { loop in
            for l in loop.listeners.values { loop.close(l) }
        }
        Log.info("draining: no new connections; waiting up to \(Int(grace)) s for sessions in flight")
        let deadline = ReactorSystem.now() + UInt64(grace * 1e9)
        while ReactorSystem.now() < deadline {
            let open = (try? group.onEachLoop { loop in box.value[loop.index].sessions.count })?.reduce(0, +) ?? 0
            if open == 0 { break }
            usleep(50_000)
        }
        let left = (try? group.onEachLoop { loop in box.value[loop.index].sessions.count })?.reduce(0, +) ?? 0
        if left > 0 { Log.info("draining: \(left) session(s) still open; closing them with 421 (a message waiting for the spool gets its answer first)") }
        _ = try? group.onEachLoop { loop in
            for s in box.value[loop.index].sessions.values { s.shutdown() }
        }
        // Sessions whose message waits for the spool get its answer first (250, or 451 once
        // spool-timeout passes and the message is withdrawn), then their 421.
        let answered = ReactorSystem.now() + UInt64(spoolTimeout + 2) * 1_000_000_000
        while ReactorSystem.now() < answered {
            let open = (try? group.onEachLoop { loop in box.value[loop.index].sessions.count })?.reduce(0, +) ?? 0
            if open == 0 { break }
            usleep(20_000)
        }
        // Outbound connections finish their transaction and QUIT (however long a reply takes,
        // up to the reply timeout); waiting messages stay queued.
        if let left = courier?.shutdown(grace: grace), left > 0 {
            Log.error("outbound: \(left) connection(s) still in a transaction at the reply timeout are cut; their messages are sent again after the restart and may arrive twice")
        }
        if let c = courier?.counts { Log.info("outbound: \(c.transactions) transactions over \(c.connections) connections since the start") }
        group.shutdown()
        queue.stop()
        let unwritten = queue.spool.close()
        if !unwritten.unrecordedStatuses.isEmpty {
            Log.error("spool: \(unwritten.unrecordedStatuses.count) delivery status(es) could not be written before stopping; these deliveries may be repeated: " + Set(unwritten.unrecordedStatuses).sorted().map(hex).joined(separator: " "))
        }
        if !unwritten.unstoredReports.isEmpty {
            Log.error("spool: \(unwritten.unstoredReports.count) delivery report(s) could not be stored before stopping (the failures they report are retried and reported again)")
        }
        Log.info("stopped; \(queue.pending) messages stay queued")
    }
}

/// The recipient tables, replaced as a whole on reload and read by sessions and the queue.
final class SharedResolver: Sendable {
    let tables: Mutex<RecipientResolver>
    init(_ r: RecipientResolver) { tables = Mutex(r) }
    var current: RecipientResolver { tables.withLock { $0 } }
    func replace(_ r: RecipientResolver) { tables.withLock { $0 = r } }
}
