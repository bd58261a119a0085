// The smtp process's work: the listeners the parent bound, one mail delegate per loop with that
// loop's channels to lookup and queue, TLS, the DNS resolver for SPF, DKIM and DMARC; reload
// (SIGHUP: limits, certificates, the SPF and DMARC settings, the resolver) and drain (SIGTERM).
import Config
import DNS
import Glibc
import MailAuth
import Reactor
import SMTP
import Server
import Synchronization

public final class SMTPService: @unchecked Sendable {
    public let loaded: LoadedConfiguration
    let group: EventLoopGroup
    public let hostname: String
    let resolver = ResolverHolder()
    var dns: (any DNS.Resolver)? { resolver.current }
    /// `spf reject` (the default) or `spf tag`; replaced on reload.
    let spfRejectsFlag = Atomic<Bool>(true)
    var spfRejects: Bool { spfRejectsFlag.load(ordering: .relaxed) }
    /// What the end of data needs from the configuration; replaced on reload.
    struct Settings: Sendable {
        var suffixes: PublicSuffixList
        var dmarc: Configuration.DMARCAction
    }
    let settings: Mutex<Settings>
    var auth: Settings { settings.withLock { $0 } }
    /// Seconds the queue has to store a message (`limits { spool-timeout }`); SIGHUP replaces it.
    let spoolTimeoutValue: Atomic<Int>
    var spoolTimeout: Int { spoolTimeoutValue.load(ordering: .relaxed) }
    var delegates: [MailDelegate] = []
    /// Every loop's inbound contexts (one per listener), to hand them new certificates on reload.
    /// One list per loop, touched only on that loop.
    final class LoopContexts: @unchecked Sendable { var list: [(kind: Configuration.ListenerKind, context: InboundContext)] = [] }
    var inboundContexts: [LoopContexts] = []
    /// Certificates are in use (TLS offered): fixed at start, a reload changes the certificates only.
    var tlsOffered = false
    /// The configuration in force (main thread only).
    var current: LoadedConfiguration

    public init(_ loaded: LoadedConfiguration, loops: Int, ioBackend: IOBackendKind? = nil) throws {
        self.loaded = loaded
        current = loaded
        let c = loaded.configuration
        hostname = c.hostname
        settings = Mutex(Settings(suffixes: loaded.suffixes, dmarc: c.dmarc))
        spoolTimeoutValue = Atomic(c.limits.spoolTimeout)
        spfRejectsFlag.store(c.spf == .reject, ordering: .relaxed)
        ReactorSystem.setLogSink { Log.error($0) }
        ReactorSystem.raiseFileLimit()
        // One line says which backend runs, and why when io_uring was wanted and is not usable.
        Log.info(IOBackendChoice.select(ioBackend ?? c.ioBackend).note)
        group = try EventLoopGroup(count: loops)
    }

    public var loopCount: Int { group.loops.count }

    /// A channel to the queue or lookup closed (that process died): the parent restarts the set.
    public var isBroken: Bool {
        let box = Transfer(delegates)
        return ((try? group.onEachLoop { loop in box.value[loop.index].links.broken != nil }) ?? []).contains(true)
    }

    /// Starts the loops and adopts each loop's channels (`lookup[i]`, `queue[i]` for loop i).
    /// Listening comes after, once the process is confined (`listen`).
    public func start(lookup: [Int32], queue: [Int32]) throws {
        group.start()
        try resolver.start(loaded, group: group)
        let channels = Transfer((lookup, queue))
        let made = try group.onEachLoop { loop in
            let (lookup, queue) = channels.value
            return Transfer(try SMTPLinks(loop: loop, lookup: lookup[loop.index], queue: queue[loop.index], log: { Log.error($0) }))
        }
        delegates = made.map { MailDelegate(service: self, links: $0.value) }
        inboundContexts = group.loops.map { _ in LoopContexts() }
        if let w = loaded.suffixWarning { Log.error("dmarc: \(w)") }
        announceDMARC(loaded)
    }

    /// Accepts on the sockets the parent bound: `listeners[j][i]` is listener j's socket for
    /// loop i (SO_REUSEPORT: the kernel spreads connections over the loops).
    /// `reloaded`: this process replaces one a reload retired (its log says what changed).
    public func listen(_ listeners: [[Int32]], kinds: [Configuration.ListenerKind], reloaded: Bool = false) throws {
        let tls = loaded.certificates.isEmpty ? nil : try TLSContext.selectingByName(loaded.certificates.map(\.context))
        tlsOffered = tls != nil
        if reloaded {
            if !loaded.certificates.isEmpty { Log.info("tls: certificates reloaded: \(loaded.certificates.map(\.name).joined(separator: ", "))") }
        } else if !loaded.certificates.isEmpty {
            Log.info("tls: STARTTLS offered; certificates by SNI: \(loaded.certificates.map(\.name).joined(separator: ", ")) (the first by default)")
            let withUsers = Self.usersDomains(loaded)
            Log.info(withUsers.isEmpty ? "auth: no users files: AUTH offered on submission ports only, where nobody can log in" : "auth: AUTH PLAIN/LOGIN over TLS for \(withUsers.joined(separator: ", "))")
        } else if !reloaded {
            Log.info("tls: no certificates: plain SMTP only, STARTTLS and AUTH not offered")
        }
        var servers: [Configuration.ListenerKind: ServerContext] = [:]
        for kind in Configuration.ListenerKind.allCases { servers[kind] = ServerContext(serverConfiguration(kind, loaded)) }
        let box = Transfer((self, servers, tls, listeners, kinds))
        _ = try group.onEachLoop { loop in
            let (service, servers, tls, listeners, kinds) = box.value
            for (j, fds) in listeners.enumerated() {
                let kind = kinds[j]
                let context = InboundContext(server: servers[kind]!, delegate: service.delegates[loop.index], tls: tls, implicitTLS: kind == .submissions)
                service.inboundContexts[loop.index].list.append((kind, context))
                try loop.listen(fd: fds[loop.index]) { _ in InboundSession(context: context) }
            }
        }
    }

    /// The engine's configuration for a kind of listener: STARTTLS and AUTH when certificates
    /// exist; submission ports require AUTH; implicit TLS needs no STARTTLS.
    func serverConfiguration(_ kind: Configuration.ListenerKind, _ loaded: LoadedConfiguration) -> ServerConfiguration {
        let c = loaded.configuration
        // The name is the running one (`hostname` needs a restart, as the reload says).
        var s = ServerConfiguration(hostname: hostname)
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
        s.auth = tls && (kind != .smtp || !Self.usersDomains(loaded).isEmpty)
        s.requireAuth = kind != .smtp
        return s
    }

    /// The domains with a users file (smtp never reads one: lookup checks the passwords).
    static func usersDomains(_ loaded: LoadedConfiguration) -> [String] {
        loaded.configuration.domains.filter { $0.users != nil }.map(\.name.ascii).sorted()
    }

    func announceDMARC(_ loaded: LoadedConfiguration) {
        Log.info("dmarc: a fail with p=reject is \(["reject": "refused (550 5.7.1)", "quarantine-header": "marked with X-Tern-Quarantine", "none": "recorded only"][loaded.configuration.dmarc.rawValue]!)")
    }

    /// SIGHUP: new sessions get the new limits, new handshakes the new certificates; the SPF and
    /// DMARC settings and the resolver are replaced.
    public func reload(_ fresh: LoadedConfiguration) {
        let new = fresh.configuration.limits
        if new != current.configuration.limits {
            var servers: [Configuration.ListenerKind: ServerContext] = [:]
            for kind in Configuration.ListenerKind.allCases { servers[kind] = ServerContext(serverConfiguration(kind, fresh)) }
            let box = Transfer((self, servers))
            _ = try? group.onEachLoop { loop in
                let (service, servers) = box.value
                for (kind, context) in service.inboundContexts[loop.index].list { context.server = servers[kind]! }
            }
            spoolTimeoutValue.store(new.spoolTimeout, ordering: .relaxed)
        }
        reloadCertificates(fresh)
        spfRejectsFlag.store(fresh.configuration.spf == .reject, ordering: .relaxed)
        settings.withLock { $0 = Settings(suffixes: fresh.suffixes, dmarc: fresh.configuration.dmarc) }
        if let w = fresh.suffixWarning { Log.error("dmarc: \(w)") }
        do {
            try resolver.start(fresh, group: group)
        } catch {
            Log.error("dns: keeping the previous resolver: \(error)")
        }
        current = fresh
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
            let (service, tls) = box.value
            for (_, context) in service.inboundContexts[loop.index].list { context.tls = tls }
        }
        Log.info("tls: certificates reloaded: \(fresh.certificates.map(\.name).joined(separator: ", "))")
    }

    /// Drains: stop accepting, let sessions finish (at most `grace` seconds), then 421 the rest
    /// (a message waiting for the queue gets its answer first), and stop the loops.
    /// `listening`: called once no loop accepts any more.
    public func drain(grace: Double, listening stopped: () -> Void = {}) {
        let box = Transfer(delegates)
        // Listeners first, then the log line: once it says so, no connection is accepted.
        _ = try? group.onEachLoop { loop in
            for l in loop.listeners.values { loop.close(l) }
            box.value[loop.index].links.closing = true
        }
        stopped()
        Log.info("draining: no new connections; waiting up to \(Int(grace)) s for sessions in flight")
        func open() -> Int { (try? group.onEachLoop { loop in box.value[loop.index].sessions.count })?.reduce(0, +) ?? 0 }
        let deadline = ReactorSystem.now() + UInt64(grace * 1e9)
        while ReactorSystem.now() < deadline, open() > 0 { usleep(50_000) }
        let left = open()
        if left > 0 { Log.info("draining: \(left) session(s) still open; closing them with 421 (a message waiting for the spool gets its answer first)") }
        _ = try? group.onEachLoop { loop in
            for s in box.value[loop.index].sessions.values { s.shutdown() }
        }
        // Sessions whose message waits for the queue get its answer first (250, or 451 once
        // spool-timeout passes and the message is withdrawn), then their 421.
        let answered = ReactorSystem.now() + UInt64(spoolTimeout + 7) * 1_000_000_000
        while ReactorSystem.now() < answered, open() > 0 { usleep(20_000) }
        group.shutdown()
    }
}

/// The DNS resolver of a process (the `resolver` statement), made on its loops; replaced on
/// reload when the setting changed (or always for a zone, read again with the configuration).
final class ResolverHolder: Sendable {
    let value = Mutex<(setting: ResolverSetting, resolver: any DNS.Resolver)?>(nil)
    var current: (any DNS.Resolver)? { value.withLock { $0?.resolver } }

    func start(_ loaded: LoadedConfiguration, group: EventLoopGroup) throws {
        // Unchanged servers (an aliases file changed, say): keep the resolver and its cache.
        let setting = loaded.configuration.resolver
        let unchanged = value.withLock { $0?.setting == setting }
        if unchanged, !setting.isZone { return }
        let r = try loaded.makeResolver(group: group)
        value.withLock { $0 = (setting, r) }
        Log.info("dns: resolver \(setting)")
    }
}
