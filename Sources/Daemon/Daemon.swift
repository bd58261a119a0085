// The queue process's work: the spool, the delivery workers and the courier, the recipient tables
// the queue resolves again, the DKIM signing keys; reload (SIGHUP) and drain (SIGTERM).
import Config
import DNS
import Delivery
import Glibc
import MailAuth
import Queue
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
    /// - Parameter ioBackend: `--io-backend`, which wins over the configuration's `io-backend`.
    public init(_ loaded: LoadedConfiguration, loops: Int = 0, workers: Int = 2, ioBackend: IOBackendKind? = nil) throws {
        self.loaded = loaded
        authSettings = Mutex(AuthSettings(loaded))
        tlsHistory = TLSHistory(directory: TLSHistory.directory(spool: loaded.configuration.spool))
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
            log: QueueLog(mail: { Log.mail($0) }, error: { Log.error($0) }),
            resolve: { address in resolver.current.resolve(address) })
        ReactorSystem.setLogSink { Log.error($0) }
        ReactorSystem.raiseFileLimit()
        // (The smtp process says which backend runs, and why when io_uring is not usable: the
        // queue makes the same choice.)
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
            line += report.tornMessage.map { ": message \(QueueID.text($0)))" } ?? ")"
        }
        if report.deletedSegments > 0 { line += "; deleted \(report.deletedSegments) segments holding nothing owed" }
        if report.migratedMessages > 0 { line += "; took over \(report.migratedMessages) messages from record format 1" }
        Log.info(line)
        for d in report.damage { Log.error("spool damage: \(d)") }
        guard !report.damage.isEmpty else { return }
        for copy in report.savedCopies { Log.error("spool damage: kept as \(copy) (a damaged segment moves there once nothing in it is owed)") }
        Log.error(
            "spool damage: \(report.lostMessages.count) message(s) lost" + (report.lostMessages.isEmpty ? "" : ": " + report.lostMessages.map(QueueID.text).joined(separator: " "))
                + (report.unidentifiedDamage > 0 ? "; \(report.unidentifiedDamage) damaged region(s) could not be identified (messages in them are lost)" : "")
                + (report.lostStatuses.isEmpty ? "" : "; delivery statuses lost (those deliveries may be repeated) for " + report.lostStatuses.map(QueueID.text).joined(separator: " "))
                + (report.revivedMessages.isEmpty ? "" : "; taken as still owed (they may be delivered again): " + report.revivedMessages.map(QueueID.text).joined(separator: " ")))
    }

    /// Where remote deliveries go: the link to the courier process; made in `startQueue()`.
    private(set) var courier: CourierLink? = nil

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

    /// Starts the loops, the link to the courier process and the queue's delivery workers (the
    /// queue process runs this). No DNS, no network: those are the courier's.
    public func startQueue() throws {
        group.start()
        let c = loaded.configuration
        let courier = CourierLink(
            loop: group.loops[0], history: tlsHistory, mtaSTSDirectory: "\(c.spool)/mta-sts", settings: Self.courierSettings(c, passwords: [:]),
            log: { Log.error($0) })
        self.courier = courier
        queue.courier = courier
        queue.signReport = { [weak self] message in self?.signReport(message) ?? message }
        queue.start(workers: workers)
        for r in c.relays {
            Log.info("relay: \(r.domain.map { "mail for \($0.unicode) accepted from anyone and" } ?? "mail for every other domain") sent \(r.via.map { "via \($0)" } ?? "to its MX hosts")")
        }
        announceAuth(loaded)
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

    /// What a reload says about the whole of ternd (the parent logs it once every process has
    /// reloaded): each setting that cannot change in a running ternd and changed (it keeps its
    /// running value until the next start), then the limits applied at once.
    /// - Parameters: `started`: the configuration at the start; `current`: the one in force.
    public static func reloadNotes(started: LoadedConfiguration, current: LoadedConfiguration, fresh: LoadedConfiguration) -> [String] {
        let c = fresh.configuration, running = started.configuration
        var restartOnly: [String] = []
        if c.listeners.map({ "\($0.kind) \($0.host) \($0.port)" }) != running.listeners.map({ "\($0.kind) \($0.host) \($0.port)" }) { restartOnly.append("listen") }
        if c.spool != running.spool { restartOnly.append("spool") }
        if c.ioBackend != running.ioBackend { restartOnly.append("io-backend") }
        if c.delivery != running.delivery { restartOnly.append("deliver") }
        if c.hostname != running.hostname { restartOnly.append("hostname") }
        if c.user != running.user || c.queueUser != running.queueUser { restartOnly.append("user, queue-user") }
        if fresh.certificates.isEmpty != started.certificates.isEmpty { restartOnly.append("certificates (TLS offered or not)") }
        if courierSettings(c, passwords: fresh.relayPasswords).withoutRoutes != courierSettings(running, passwords: started.relayPasswords).withoutRoutes {
            restartOnly.append("outbound (relay routes are replaced now)")
        }
        var notes = restartOnly.map { "reload: \($0) changed: takes effect at the next start" }
        let old = current.configuration.limits, new = c.limits
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
        if !changed.isEmpty { notes.append("reload: limits applied (new sessions, the queue): \(changed.joined(separator: ", "))") }
        return notes
    }

    /// Replaces the recipient tables, the keys, the relay routes and the queue's limits (SIGHUP).
    public func reload(_ fresh: LoadedConfiguration) {
        applyLimits(fresh)
        // (The courier process is replaced by the reload: the new one has the new routes.)
        courier?.replaceRoutes(Self.courierSettings(fresh.configuration, passwords: [:]))
        resolver.replace(Self.resolver(fresh))
        authSettings.withLock { $0 = AuthSettings(fresh) }
        announceAuth(fresh)
        current = fresh
        Log.info("queue: reloaded recipients and aliases from \(fresh.path)")
    }

    /// `limits`: the queue's new times, at once (smtp's session limits come with the smtp process
    /// a reload starts).
    func applyLimits(_ fresh: LoadedConfiguration) {
        let new = fresh.configuration.limits
        guard current.configuration.limits != new else { return }
        queue.retryMin = Int64(new.retryInterval)
        queue.retryMax = Int64(max(new.retryMaxInterval, new.retryInterval))
        queue.delayWarning = Int64(new.delayWarning)
        queue.lifetime = Int64(new.queueLifetime)
        spoolTimeoutValue.store(new.spoolTimeout, ordering: .relaxed)
        queue.spool.setStallAfter(min(5, Double(new.spoolTimeout) / 2))
    }

    func announceAuth(_ loaded: LoadedConfiguration) {
        for (domain, keys) in loaded.signingKeys.sorted(by: { $0.key < $1.key }) {
            Log.info("dkim: signing for \(domain) with " + keys.map { "\($0.selector) (\($0.algorithm.rawValue))" }.joined(separator: ", "))
        }
    }

    /// Drains: what waits for the courier stays queued, the loops and the workers stop, and the
    /// spool closes. Nothing acknowledged is lost. (smtp and the courier drained before: the
    /// parent stops them first, so the courier's outcomes are in.)
    public func drain(grace: Double = 10) {
        if let courier {
            let box = Transfer(courier)
            _ = try? group.onEachLoop { loop in
                if loop === box.value.loop { box.value.stop() }
                return 0
            }
        }
        group.shutdown()
        queue.stop()
        let unwritten = queue.spool.close()
        if !unwritten.unrecordedStatuses.isEmpty {
            Log.error("spool: \(unwritten.unrecordedStatuses.count) delivery status(es) could not be written before stopping; these deliveries may be repeated: " + Set(unwritten.unrecordedStatuses).sorted().map(QueueID.text).joined(separator: " "))
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
