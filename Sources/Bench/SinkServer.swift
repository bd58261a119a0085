import Reactor
import SMTP
import Server
import Synchronization

/// Options of `ternbench sink`.
public struct SinkOptions: Sendable {
    public var listen: HostPort
    public var maxSize: Int
    /// Fraction of messages answered 451 4.3.0 at end of data.
    public var tempfailRate: Double
    /// Fraction of messages answered 554 5.3.0 at end of data.
    public var permfailRate: Double
    /// Delay of the end-of-data reply, in milliseconds.
    public var delayMS: Int
    public var threads: Int
    public var hostname: String
    /// Offer STARTTLS with this certificate chain and key (PEM).
    public var tlsCertificate: (chain: String, key: String)? = nil
    /// Recipients taken per transaction; the next ones are answered 452 4.5.3.
    public var maxRecipients = 1000

    public init(
        listen: HostPort, maxSize: Int = 50 * 1024 * 1024, tempfailRate: Double = 0, permfailRate: Double = 0,
        delayMS: Int = 0, threads: Int = 0, hostname: String = "sink.ternbench"
    ) {
        self.listen = listen
        self.maxSize = maxSize
        self.tempfailRate = tempfailRate
        self.permfailRate = permfailRate
        self.delayMS = delayMS
        self.threads = threads
        self.hostname = hostname
    }
}

/// Counters of one loop, read by the reporting thread.
final class SinkStats: Sendable {
    let sessions = Atomic<Int>(0)
    let messages = Atomic<Int>(0)
    let recipients = Atomic<Int>(0)
    let bytes = Atomic<Int>(0)
    let tempfailed = Atomic<Int>(0)
    let permfailed = Atomic<Int>(0)
    let open = Atomic<Int>(0)
    /// When the first and the latest message were accepted (ReactorSystem.now(); 0: none yet).
    let firstMessage = Atomic<UInt64>(0)
    let lastMessage = Atomic<UInt64>(0)
}

/// A snapshot of the sink's counters.
public struct SinkCounts: Sendable, Equatable {
    public var sessions = 0, messages = 0, recipients = 0, bytes = 0, tempfailed = 0, permfailed = 0, open = 0
    /// Seconds from the first accepted message to the latest (0 before two).
    public var firstToLast = 0.0
}

/// Accepts (or fails, on request) every message; counts and discards it.
final class SinkDelegate: InboundDelegate {
    let stats: SinkStats
    let options: SinkOptions
    var random: UInt64

    init(stats: SinkStats, options: SinkOptions, seed: UInt64) {
        self.stats = stats
        self.options = options
        random = seed | 1
    }

    func nextRandom() -> Double {
        random ^= random << 13
        random ^= random >> 7
        random ^= random << 17
        return Double(random >> 11) / Double(1 << 53)
    }

    func sessionOpened(_ session: InboundSession) {
        stats.sessions.add(1, ordering: .relaxed)
        stats.open.add(1, ordering: .relaxed)
    }

    func sessionClosed(_ session: InboundSession, error: ReactorError?) {
        stats.open.subtract(1, ordering: .relaxed)
    }

    func messageBody(_ session: InboundSession, _ bytes: UnsafeRawBufferPointer) {
        stats.bytes.add(bytes.count, ordering: .relaxed)
    }

    static let injectedTempfail = Reply(451, EnhancedStatus(4, 3, 0), "Temporary failure (injected by ternbench sink)")
    static let injectedPermfail = Reply(554, EnhancedStatus(5, 3, 0), "Permanent failure (injected by ternbench sink)")

    func messageComplete(_ session: InboundSession, _ smtp: ServerStateMachine) -> MessageDisposition {
        var reply = Reply.messageAccepted
        if options.tempfailRate > 0 || options.permfailRate > 0 {
            let r = nextRandom()
            if r < options.tempfailRate {
                reply = Self.injectedTempfail
            } else if r < options.tempfailRate + options.permfailRate {
                reply = Self.injectedPermfail
            }
        }
        if reply.code == 250 {
            stats.messages.add(1, ordering: .relaxed)
            stats.recipients.add(smtp.envelope.recipientCount, ordering: .relaxed)
            let now = ReactorSystem.now()
            if stats.firstMessage.load(ordering: .relaxed) == 0 { stats.firstMessage.store(now, ordering: .relaxed) }
            stats.lastMessage.store(now, ordering: .relaxed)
        } else if reply.code < 500 {
            stats.tempfailed.add(1, ordering: .relaxed)
        } else {
            stats.permfailed.add(1, ordering: .relaxed)
        }
        if options.delayMS > 0, let loop = session.connection?.loop {
            loop.schedule(after: UInt64(options.delayMS) * 1_000_000) { [session, reply] in session.complete(reply) }
            return .later
        }
        return .reply(reply)
    }
}

/// `ternbench sink`: an SMTP server on the reactor and the engine, with every extension on.
public final class SinkServer: Sendable {
    public let options: SinkOptions
    let group: EventLoopGroup
    let stats: [SinkStats]
    /// The bound port (useful with port 0).
    public let port: Int

    public init(options: SinkOptions) throws {
        self.options = options
        ReactorSystem.raiseFileLimit()
        group = try EventLoopGroup(count: options.threads)
        let stats = group.loops.map { _ in SinkStats() }
        self.stats = stats
        var configuration = ServerConfiguration(
            hostname: options.hostname, maxMessageSize: options.maxSize, maxRecipients: options.maxRecipients, greetingText: "ESMTP ternbench sink")
        let tls = try options.tlsCertificate.map { cert throws(TLSError) in try TLSContext.server(certificateChain: cert.chain, privateKey: cert.key) }
        configuration.startTLS = tls != nil
        // A load test's connections may live as long as the run: no whole-session limit.
        configuration.sessionTimeout = 0
        let server = ServerContext(configuration)
        group.start()
        let opts = options
        do {
            port = try group.listen(host: options.listen.host, port: options.listen.port) { loop in
                let delegate = SinkDelegate(stats: stats[loop.index], options: opts, seed: 0x9E37_79B9_7F4A_7C15 &* UInt64(loop.index + 1))
                let context = InboundContext(server: server, delegate: delegate, tls: tls)
                return { _ in InboundSession(context: context) }
            }
        } catch {
            group.shutdown()
            throw error
        }
    }

    public var counts: SinkCounts {
        var c = SinkCounts()
        for s in stats {
            c.sessions += s.sessions.load(ordering: .relaxed)
            c.messages += s.messages.load(ordering: .relaxed)
            c.recipients += s.recipients.load(ordering: .relaxed)
            c.bytes += s.bytes.load(ordering: .relaxed)
            c.tempfailed += s.tempfailed.load(ordering: .relaxed)
            c.permfailed += s.permfailed.load(ordering: .relaxed)
            c.open += s.open.load(ordering: .relaxed)
        }
        let firsts = stats.map { $0.firstMessage.load(ordering: .relaxed) }.filter { $0 > 0 }
        let last = stats.map { $0.lastMessage.load(ordering: .relaxed) }.max() ?? 0
        if let first = firsts.min(), last > first { c.firstToLast = Double(last - first) / 1e9 }
        return c
    }

    public func shutdown() { group.shutdown() }
}
