import CTernSystem
import Glibc
import Histogram
import Reactor
import SMTP
import Synchronization

/// Options of `ternbench send`.
public struct SendOptions: Sendable {
    public var server: HostPort
    public var sessions: Int
    public var messages: Int
    /// Messages per connection before QUIT and a new connection; 0: all on one connection.
    public var perConnection: Int
    public var size: Int
    public var recipients: Int
    public var from: String
    public var to: String
    public var pipelining: Bool
    public var chunking: Bool
    public var threads: Int
    /// Idle timeout per connection, in seconds.
    public var timeout: Int
    public var heloName: String
    /// TLS: none, STARTTLS (RFC 3207) or implicit (RFC 8314, port 465).
    public var tls: TLSMode = .none
    /// Where to check the server's certificate (the result is counted, not enforced).
    public var caFile: String? = nil
    /// SNI and the name the certificate is checked against.
    public var serverName: String? = nil
    /// AUTH PLAIN over TLS (submission ports).
    public var auth: (user: String, password: String)? = nil

    /// Spread messages over this many recipient domains: message k goes to `dK.DOMAIN` (K = k mod
    /// N) instead of DOMAIN; 0 or 1: all to `to`'s domain.
    public var domains = 0

    /// Give every message its own Message-ID (`tb.RUN.N@ternbench.test`) and report those the
    /// server accepted (`SendReport.acceptedMessageIDs`): what a loss test compares deliveries with.
    public var uniqueMessageIDs = false

    /// Send for this many seconds (as many messages as fit; `messages` is ignored) instead of a
    /// fixed number.
    public var duration: Double? = nil

    public enum TLSMode: String, Sendable { case none, startTLS = "starttls", implicit = "tls" }

    public init(
        server: HostPort, sessions: Int = 10, messages: Int = 1000, perConnection: Int = 0, size: Int = 1000,
        recipients: Int = 1, from: String = "sender@ternbench.test", to: String = "rcpt@ternbench.test",
        pipelining: Bool = true, chunking: Bool = false, threads: Int = 0, timeout: Int = 60,
        heloName: String = "ternbench.test"
    ) {
        self.server = server
        self.sessions = sessions
        self.messages = messages
        self.perConnection = perConnection
        self.size = size
        self.recipients = recipients
        self.from = from
        self.to = to
        self.pipelining = pipelining
        self.chunking = chunking
        self.threads = threads
        self.timeout = timeout
        self.heloName = heloName
    }

    /// The recipient list: `to` alone, or `local+1@domain` … for several.
    public var recipientList: [String] { recipientList(domain: nil) }

    /// The recipient list with the domain of `to` prefixed by `dK.` (see `domains`).
    public func recipientList(domain k: Int?) -> [String] {
        let at = to.lastIndex(of: "@") ?? to.endIndex
        let local = to[..<at]
        let domain = k.map { "@d\($0)." + to[to.index(after: at)...] } ?? String(to[at...])
        guard recipients > 1 else { return [k == nil ? to : local + domain] }
        return (1...recipients).map { "\(local)+\($0)\(domain)" }
    }
}

/// Per-loop state of the load generator (loop thread only, except the atomics).
final class SendLoop {
    let loop: EventLoop
    let shared: SendShared
    var connect = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var transaction = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var dataEnd = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var errors: [String: Int] = [:]
    var sessions: [SendSession] = []
    /// Message-IDs the server accepted (with `uniqueMessageIDs`).
    var acceptedIDs: [UInt64] = []
    /// Where TLS sessions of this loop decrypt replies into.
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * 1024, alignment: 16)

    init(loop: EventLoop, shared: SendShared) {
        self.loop = loop
        self.shared = shared
    }

    deinit { scratch.deallocate() }
}

/// What every loop reads: options, the prepared message, and global progress counters.
final class SendShared: Sendable {
    let options: SendOptions
    let transaction: ClientTransaction
    /// One transaction per recipient domain with `--domains`, taken in turn.
    let transactions: [ClientTransaction]
    let sequence = Atomic<Int>(0)
    let raw: [UInt8]
    let stuffed: [UInt8]
    let done = Atomic<Int>(0)
    let accepted = Atomic<Int>(0)
    let finishedSessions = Atomic<Int>(0)
    let firstStart = Atomic<UInt64>(0)
    let lastDone = Atomic<UInt64>(0)
    /// The client TLS context when TLS is asked for; handshakes and how many were verified.
    let tlsContext: TLSContext?
    let tlsSetupError: String?
    let handshakes = Atomic<Int>(0)
    let verified = Atomic<Int>(0)
    /// With `uniqueMessageIDs`: this run's tag, the next number, and where the number's 12 hex
    /// digits lie in `raw` and `stuffed`.
    let runTag = UInt32.random(in: 0...UInt32.max)
    let nextMessageID = Atomic<UInt64>(0)
    let idOffsets: (raw: Int, stuffed: Int)?
    /// With `duration`: when no more transactions begin (ReactorSystem.now()).
    let deadline = Atomic<UInt64>(UInt64.max)

    var pastDeadline: Bool { ReactorSystem.now() >= deadline.load(ordering: .relaxed) }

    /// The Message-ID of message `n` of this run.
    func messageID(_ n: UInt64) -> String { Self.messageID(tag: runTag, n) }

    static func messageID(tag: UInt32, _ n: UInt64) -> String { "tb.\(hex(UInt64(tag), 8)).\(hex(n, 12))@ternbench.test" }

    static func hex(_ v: UInt64, _ width: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    init(options: SendOptions) {
        self.options = options
        if options.tls != .none {
            do {
                tlsContext = try TLSContext.client(caFile: options.caFile)
                tlsSetupError = nil
            } catch {
                tlsContext = nil
                tlsSetupError = error.description
            }
        } else {
            tlsContext = nil
            tlsSetupError = nil
        }
        let tag = runTag
        raw = MessageFactory.message(size: options.size, from: options.from, to: options.to, messageID: options.uniqueMessageIDs ? Self.messageID(tag: tag, 0) : "ternbench@localhost")
        stuffed = DotStuffing.stuff(raw)
        if options.uniqueMessageIDs {
            // The number's digits: right after "tb.TAG." in the header (before any line dot-stuffing moves).
            let marker = Array("<tb.\(Self.hex(UInt64(tag), 8)).".utf8)
            func find(_ b: [UInt8]) -> Int {
                for i in 0...(b.count - marker.count) where b[i..<(i + marker.count)].elementsEqual(marker) { return i + marker.count }
                return 0
            }
            idOffsets = (find(raw), find(stuffed))
        } else {
            idOffsets = nil
        }
        transaction = ClientTransaction(sender: options.from, recipients: options.recipientList, bodyLength: raw.count)
        let length = raw.count
        transactions = options.domains > 1
            ? (0..<options.domains).map { ClientTransaction(sender: options.from, recipients: options.recipientList(domain: $0), bodyLength: length) }
            : [transaction]
    }
}

/// One sending session: its quota of messages over one or more connections.
final class SendSession: ConnectionHandler {
    let state: SendLoop
    let out: OutputBuffer
    var quota: Int
    var machine: ClientStateMachine
    var onThisConnection = 0
    var begun = 0  // transactions begun and not finished
    var startTimes: [UInt64] = []
    var bodyTimes: [UInt64] = []  // when each body in flight was fully written (end of data / last chunk)
    var connectStart: UInt64 = 0
    var connection: Connection?
    var finished = false
    var quitting = false
    /// Over TLS: the TLS session, and decrypted replies not yet consumed.
    var tls: TLSConnection? = nil
    var plain: [UInt8] = []
    /// With unique Message-IDs: this session's copies of the message (patched before each body)
    /// and, per transaction in flight, its id and whether its body was written.
    var raw: [UInt8] = []
    var stuffed: [UInt8] = []
    var ids: [(id: UInt64, written: Bool)] = []

    init(state: SendLoop, out: OutputBuffer, quota: Int) {
        self.state = state
        self.out = out
        self.quota = quota
        machine = ClientStateMachine(configuration: Self.clientConfiguration(state.shared.options))
        startTimes.reserveCapacity(4)
        bodyTimes.reserveCapacity(4)
    }

    static func clientConfiguration(_ o: SendOptions) -> ClientConfiguration {
        ClientConfiguration(heloName: o.heloName, allowPipelining: o.pipelining, allowChunking: o.chunking, startTLS: o.tls == .startTLS,
            auth: o.auth, implicitTLS: o.tls == .implicit)
    }

    var options: SendOptions { state.shared.options }

    func start() {
        guard quota > 0 else { return finish() }
        machine = ClientStateMachine(configuration: Self.clientConfiguration(options))
        onThisConnection = 0
        begun = 0
        quitting = false
        startTimes.removeAll(keepingCapacity: true)
        bodyTimes.removeAll(keepingCapacity: true)
        tls = nil
        connectStart = ReactorSystem.now()
        _ = state.shared.firstStart.compareExchange(expected: 0, desired: connectStart, ordering: .relaxed)
        do {
            let c = try state.loop.connect(host: options.server.host, port: options.server.port, handler: self)
            c.timeout = UInt64(options.timeout) * 1_000_000_000
            connection = c
        } catch {
            abandon("connect: \(error)")
        }
    }

    /// Counts the rest of the quota as failed and ends the session (sending for a duration: the
    /// transactions in flight).
    func abandon(_ reason: String) {
        let owed = options.duration != nil ? begun : quota
        if owed > 0 {
            state.errors[reason, default: 0] += owed
            state.shared.done.add(owed, ordering: .relaxed)
        }
        quota = 0
        let c = connection
        connection = nil
        c?.close()
        finish()
    }

    func finish() {
        guard !finished else { return }
        finished = true
        state.shared.finishedSessions.add(1, ordering: .relaxed)
    }

    var connectionLimitReached: Bool {
        options.perConnection > 0 && onThisConnection >= options.perConnection
    }

    /// The body of the next transaction whose body is not written yet: the shared message, or
    /// with unique Message-IDs this session's copy with that transaction's number in it.
    func withBody(stuffedForm: Bool, _ body: (UnsafeRawBufferPointer) -> Void) {
        let shared = state.shared
        guard let offsets = shared.idOffsets else {
            (stuffedForm ? shared.stuffed : shared.raw).withUnsafeBytes(body)
            return
        }
        if raw.isEmpty {
            raw = shared.raw
            stuffed = shared.stuffed
        }
        guard let k = ids.firstIndex(where: { !$0.written }) else { return (stuffedForm ? stuffed : raw).withUnsafeBytes(body) }
        ids[k].written = true
        let digits = Array(SendShared.hex(ids[k].id, 12).utf8)
        if stuffedForm {
            for j in 0..<12 { stuffed[offsets.stuffed + j] = digits[j] }
            stuffed.withUnsafeBytes(body)
        } else {
            for j in 0..<12 { raw[offsets.raw + j] = digits[j] }
            raw.withUnsafeBytes(body)
        }
    }

    /// Begins transactions while the window allows: one at a time without pipelining; with it,
    /// the next MAIL rides behind the previous body, at most two transactions in flight.
    func beginMore() {
        let window = machine.pipelines ? 2 : 1
        while begun < window, !machine.awaitingDataReply, quota - begun > 0, !connectionLimitReached, !state.shared.pastDeadline {
            begun += 1
            onThisConnection += 1
            startTimes.append(ReactorSystem.now())
            let shared = state.shared
            if shared.idOffsets != nil { ids.append((shared.nextMessageID.add(1, ordering: .relaxed).newValue, false)) }
            let t = shared.transactions.count == 1 ? shared.transaction : shared.transactions[shared.sequence.add(1, ordering: .relaxed).oldValue % shared.transactions.count]
            if machine.begin(t, into: out) {
                withBody(stuffedForm: false) { machine.writeChunkBody($0, into: out) }
                bodyTimes.append(ReactorSystem.now())
            }
            if !machine.pipelines { break }
        }
        if begun == 0, !quitting {
            quitting = true
            machine.quit(into: out)
        }
    }

    func flush(_ c: Connection) {
        guard !out.isEmpty else { return }
        if let tls, tls.isEstablished {
            tls.write(out.bytes)
            tls.drainOutput { c.write($0) }
        } else {
            c.write(out.bytes)
        }
        out.clear()
    }

    /// Starts a TLS handshake (implicit TLS at connect, or after STARTTLS's 220).
    func beginTLS(_ c: Connection) {
        guard let ctx = state.shared.tlsContext, let t = try? TLSConnection(ctx, serverName: options.serverName) else {
            return abandon("tls: cannot create a session")
        }
        tls = t
        _ = t.advance()
        t.drainOutput { c.write($0) }
    }

    func connectionActive(_ c: Connection) {
        if options.tls == .implicit { beginTLS(c) }
    }

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let tls else { return replies(c, bytes) }
        tls.receive(bytes)
        if !tls.isEstablished {
            let progress = tls.advance()
            tls.drainOutput { c.write($0) }
            switch progress {
            case .needMore:
                return bytes.count
            case .established:
                state.shared.handshakes.add(1, ordering: .relaxed)
                if tls.verification == .verified { state.shared.verified.add(1, ordering: .relaxed) }
                if options.tls == .startTLS {
                    machine.tlsEstablished(into: out)
                    flush(c)
                }
            case .closed, .failed:
                abandon("tls: handshake failed")
                return bytes.count
            }
        }
        let scratch = state.scratch
        while true {
            let (n, progress) = tls.read(into: scratch)
            if n > 0 {
                let p = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
                if plain.isEmpty {
                    let k = replies(c, p)
                    // `replies` may have started a new connection (after QUIT): nothing old is kept.
                    guard connection === c, self.tls === tls else { return bytes.count }
                    if k < n { plain.append(contentsOf: p[k...]) }
                } else {
                    plain.append(contentsOf: p)
                    let k = plain.withUnsafeBytes { replies(c, $0) }
                    guard connection === c, self.tls === tls else {
                        plain.removeAll(keepingCapacity: true)
                        return bytes.count
                    }
                    plain.removeFirst(k)
                }
            }
            if progress == .needMore, n == scratch.count { continue }
            if case .failed = progress {
                abandon("tls: connection failed")
            }
            return bytes.count
        }
    }

    /// Runs the client machine over reply bytes (decrypted under TLS).
    func replies(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        var consumed = 0
        loop: while true {
            let (k, event) = machine.process(UnsafeRawBufferPointer(rebasing: bytes[consumed...]), into: out)
            consumed += k
            switch event {
            case .needInput:
                break loop
            case .ready:
                let t = (ReactorSystem.now() - connectStart) / 1000
                _ = state.connect.record(max(t, 1))
                beginMore()
            case .sendBody:
                if machine.usesChunking {
                    withBody(stuffedForm: false) { machine.writeChunkBody($0, into: out) }
                } else {
                    withBody(stuffedForm: true) { machine.writeDataBody($0, into: out) }
                }
                bodyTimes.append(ReactorSystem.now())
                beginMore()
            case .transactionDone(let result):
                let now = ReactorSystem.now()
                let started = startTimes.isEmpty ? now : startTimes.removeFirst()
                _ = state.transaction.record(max((now - started) / 1000, 1))
                if !bodyTimes.isEmpty {
                    let bodyDone = bodyTimes.removeFirst()
                    _ = state.dataEnd.record(max((now - bodyDone) / 1000, 1))
                }
                begun -= 1
                quota -= 1
                let id = ids.isEmpty ? nil : ids.removeFirst()
                if result.accepted {
                    state.shared.accepted.add(1, ordering: .relaxed)
                    if let id, id.written { state.acceptedIDs.append(id.id) }
                } else {
                    state.errors["\(result.code)", default: 0] += 1
                }
                state.shared.done.add(1, ordering: .relaxed)
                state.shared.lastDone.store(now, ordering: .relaxed)
                beginMore()
            case .closed(let code):
                flush(c)
                connection = nil
                // close_notify first under TLS (strict servers log an unexpected EOF otherwise).
                tls?.shutdown { c.write($0) }
                c.close()
                bodyTimes.removeAll(keepingCapacity: true)
                ids.removeAll()
                if begun > 0 {
                    state.errors["\(code)", default: 0] += begun
                    state.shared.done.add(begun, ordering: .relaxed)
                    quota -= begun
                    begun = 0
                }
                if quota > 0, !state.shared.pastDeadline { start() } else { finish() }
                return bytes.count
            case .failed(let code, let text):
                flush(c)
                abandon(code == 0 ? "protocol: \(text)" : "\(code)")
                return bytes.count
            case .startTLS:
                flush(c)
                beginTLS(c)
                return bytes.count
            }
        }
        flush(c)
        return consumed
    }

    func connectionEndOfInput(_ c: Connection) {
        c.close()
    }

    func connectionTimedOut(_ c: Connection) {
        abandon("timeout")
    }

    func connectionClosed(_ c: Connection, error: ReactorError?) {
        guard connection === c else { return }
        connection = nil
        // With nothing left to send (the server closed instead of answering QUIT) the session is
        // over all the same: without finish() the run would wait for it forever.
        if quota > 0 { abandon(error.map { "connection: \($0)" } ?? "connection closed by server") } else { finish() }
    }
}

/// The final report of a `ternbench send` run.
public struct SendReport: Sendable {
    public var messages: Int
    public var accepted: Int
    public var size: Int
    public var elapsed: Double
    public var connect: LatencySummary
    public var transaction: LatencySummary
    /// End of the message data (the final `.` or the last BDAT chunk) to the final reply.
    public var dataEnd: LatencySummary
    public var errors: [String: Int]
    public var userCPU: Double
    public var systemCPU: Double
    /// TLS handshakes completed, and how many of them verified the server's certificate.
    public var handshakes = 0
    public var verified = 0
    /// With `uniqueMessageIDs`: the Message-IDs of the messages accepted.
    public var acceptedMessageIDs: [String] = []

    public var messagesPerSecond: Double { elapsed > 0 ? Double(accepted) / elapsed : 0 }
    public var megabytesPerSecond: Double { elapsed > 0 ? Double(accepted * size) / elapsed / 1e6 : 0 }
    public var allAccepted: Bool { accepted == messages }
}

/// Percentiles in microseconds.
public struct LatencySummary: Sendable {
    public var count: UInt64
    public var p50: UInt64, p90: UInt64, p99: UInt64, max: UInt64

    init(_ h: Histogram<UInt64>) {
        count = h.totalCount
        p50 = h.totalCount > 0 ? h.valueAtPercentile(50) : 0
        p90 = h.totalCount > 0 ? h.valueAtPercentile(90) : 0
        p99 = h.totalCount > 0 ? h.valueAtPercentile(99) : 0
        max = h.totalCount > 0 ? h.max : 0
    }
}

/// `ternbench send`: N concurrent sessions on the reactor and the client state machine.
public final class LoadGenerator {
    public let options: SendOptions
    let shared: SendShared

    public init(options: SendOptions) {
        self.options = options
        shared = SendShared(options: options)
    }

    /// Messages finished (accepted or not) so far, and accepted.
    public var progress: (done: Int, accepted: Int) {
        (shared.done.load(ordering: .relaxed), shared.accepted.load(ordering: .relaxed))
    }

    /// Runs to completion. `onTick` is called about every 200 ms from the calling thread.
    public func run(onTick: (LoadGenerator) -> Void = { _ in }) throws -> SendReport {
        if let e = shared.tlsSetupError { throw BenchError.tls(e) }
        ReactorSystem.raiseFileLimit()
        let threads = options.threads > 0 ? options.threads : min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), max(options.sessions, 1))
        let group = try EventLoopGroup(count: threads)
        let states = group.loops.map { SendLoop(loop: $0, shared: shared) }
        let usage0 = Self.rusage()
        group.start()
        let sessions = max(options.sessions, 1)
        let o = options
        if let d = o.duration { shared.deadline.store(ReactorSystem.now() + UInt64(d * 1e9), ordering: .relaxed) }
        for (li, state) in states.enumerated() {
            let box = Transfer(state)
            state.loop.execute {
                let state = box.value
                let out = OutputBuffer(capacity: 64 * 1024)
                var k = li
                while k < sessions {
                    let quota = o.duration != nil ? Int.max / 2 : o.messages / sessions + (k < o.messages % sessions ? 1 : 0)
                    let s = SendSession(state: state, out: out, quota: quota)
                    state.sessions.append(s)
                    k += threads
                }
                for s in state.sessions { s.start() }
            }
        }
        while shared.finishedSessions.load(ordering: .relaxed) < sessions {
            usleep(20_000)
            onTick(self)
        }
        let end = ReactorSystem.now()
        let usage1 = Self.rusage()
        // Collect the histograms and error counts from the loops.
        let statesBox = Transfer(states)
        let collected = try group.onEachLoop { loop -> Transfer<(Histogram<UInt64>, Histogram<UInt64>, Histogram<UInt64>, [String: Int], [UInt64])> in
            let s = statesBox.value[loop.index]
            return Transfer((s.connect, s.transaction, s.dataEnd, s.errors, s.acceptedIDs))
        }
        group.shutdown()
        var connect = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var transaction = connect
        var dataEnd = connect
        var errors: [String: Int] = [:]
        for c in collected {
            connect.add(c.value.0)
            transaction.add(c.value.1)
            dataEnd.add(c.value.2)
            for (k, v) in c.value.3 { errors[k, default: 0] += v }
        }
        let first = shared.firstStart.load(ordering: .relaxed)
        let last = max(shared.lastDone.load(ordering: .relaxed), first)
        let elapsed = Double((last > first ? last : end) - first) / 1e9
        var report = SendReport(
            messages: options.duration != nil ? shared.done.load(ordering: .relaxed) : options.messages, accepted: shared.accepted.load(ordering: .relaxed), size: shared.raw.count,
            elapsed: elapsed, connect: LatencySummary(connect), transaction: LatencySummary(transaction),
            dataEnd: LatencySummary(dataEnd), errors: errors,
            userCPU: usage1.0 - usage0.0, systemCPU: usage1.1 - usage0.1)
        report.handshakes = shared.handshakes.load(ordering: .relaxed)
        report.verified = shared.verified.load(ordering: .relaxed)
        if options.uniqueMessageIDs { report.acceptedMessageIDs = collected.flatMap(\.value.4).sorted().map(shared.messageID) }
        return report
    }

    static func rusage() -> (Double, Double) {
        var u = Glibc.rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return (
            Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6,
            Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
        )
    }
}

public enum BenchError: Error, CustomStringConvertible {
    case tls(String)
    public var description: String {
        switch self {
        case .tls(let why): return "tls: \(why)"
        }
    }
}

