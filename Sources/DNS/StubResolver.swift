// The stub resolver: asks the configured recursive servers over UDP (EDNS0, 1232 bytes), retries
// over TCP when the answer is truncated, fails over between servers on timeouts, SERVFAIL and
// REFUSED, and matches answers strictly (a connected socket per query, so only the server's
// address and port get through; then the ID, the QR bit and the question). It runs on the
// reactor's loops; the cache and in-flight sharing come from `CachingResolver` in front of it.

import Reactor
import Synchronization

/// A DNS server address: `127.0.0.1`, `127.0.0.1:5353`, `::1`, `[::1]:5353`.
public struct DNSServer: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int = 53) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1`, `127.0.0.1:5353`, `::1`, `[::1]:5353` (port 53 when omitted); nil otherwise.
    public init?(_ text: String) {
        guard !text.hasPrefix("localhost"), let hp = try? HostPort(parsing: text, defaultPort: 53) else { return nil }
        self.init(host: hp.host, port: hp.port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What `/etc/resolv.conf` says (resolv.conf(5)): servers, search list and options.
public struct StubConfiguration: Sendable, Equatable {
    public var servers: [DNSServer]
    public var search: [DNSName] = []
    public var ndots = 1
    /// Seconds to wait for each server before the next one.
    public var timeout: Double = 5
    /// Rounds over the server list.
    public var attempts = 2
    /// Start with a different server for each query.
    public var rotate = false
    public var udpPayload: UInt16 = 1232

    public init(servers: [DNSServer], timeout: Double = 5, attempts: Int = 2) {
        self.servers = servers
        self.timeout = timeout
        self.attempts = attempts
    }

    /// Parses resolv.conf text. Without a `nameserver` line, the local server (127.0.0.1) as glibc does.
    public static func parse(resolvConf text: String) -> StubConfiguration {
        var c = StubConfiguration(servers: [])
        for raw in text.split(separator: "\n") {
            let line = raw.split(whereSeparator: { $0 == "#" || $0 == ";" }).first.map(String.init) ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard let key = words.first else { continue }
            switch key {
            case "nameserver":
                if words.count >= 2, let s = DNSServer(words[1]) { c.servers.append(s) }
            case "search":
                c.search = words.dropFirst().compactMap { try? DNSName($0) }
            case "domain":
                if words.count >= 2, let d = try? DNSName(words[1]) { c.search = [d] }
            case "options":
                for o in words.dropFirst() {
                    let kv = o.split(separator: ":", maxSplits: 1).map(String.init)
                    switch kv[0] {
                    case "ndots": if kv.count == 2, let v = Int(kv[1]) { c.ndots = min(max(v, 0), 15) }
                    case "timeout": if kv.count == 2, let v = Int(kv[1]) { c.timeout = Double(min(max(v, 1), 30)) }
                    case "attempts": if kv.count == 2, let v = Int(kv[1]) { c.attempts = min(max(v, 1), 5) }
                    case "rotate": c.rotate = true
                    default: break
                    }
                }
            default:
                break
            }
        }
        if c.servers.isEmpty { c.servers = [DNSServer(host: "127.0.0.1")] }
        return c
    }

    /// Reads `/etc/resolv.conf` (or another file); a missing file gives the defaults.
    public static func load(path: String = "/etc/resolv.conf") -> StubConfiguration {
        parse(resolvConf: ReactorSystem.readText(path) ?? "")
    }
}

public final class StubResolver: Resolver, @unchecked Sendable {
    public let configuration: StubConfiguration
    let group: EventLoopGroup
    let ownsGroup: Bool
    let rotation = Atomic<Int>(0)

    /// - Parameter group: the loops to run on; without one, the resolver starts its own single loop.
    public init(configuration: StubConfiguration, group: EventLoopGroup? = nil) throws(ReactorError) {
        self.configuration = configuration
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            self.group = try EventLoopGroup(count: 1)
            self.group.start()
            ownsGroup = true
        }
    }

    deinit {
        if ownsGroup { group.shutdown() }
    }

    /// Asks, and follows a CNAME chain the server left unfinished (a recursive server finishes it;
    /// a server answering only from local data may not): at most 8 names in all.
    public func resolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer {
        var answer = await ask(name, type)
        var asked = name
        var hops = 0
        while answer.status == .noData, type != .cname, answer.canonicalName != asked, hops < 8 {
            asked = answer.canonicalName
            var next = await ask(asked, type)
            next.ttl = min(next.ttl, answer.ttl)
            next.aliases = answer.aliases + next.aliases
            answer = next
            hops += 1
        }
        return answer
    }

    func ask(_ name: DNSName, _ type: RecordType) async -> DNSAnswer {
        let loop = group.next()
        var order = configuration.servers
        if configuration.rotate, order.count > 1 {
            let k = rotation.add(1, ordering: .relaxed).oldValue % order.count
            order = Array(order[k...] + order[..<k])
        }
        let question = Question(name: name, type: type)
        let c = configuration
        let servers = order
        return await withUnsafeContinuation { (cont: UnsafeContinuation<DNSAnswer, Never>) in
            let box = Transfer(cont)
            loop.execute {
                StubQuery(loop: loop, question: question, servers: servers, configuration: c, continuation: box.value).start()
            }
        }
    }

    /// A name as a user typed it: with a trailing dot or at least `ndots` dots it is tried as is
    /// first, then with each search domain (resolv.conf(5)); the first answer that is not NXDOMAIN
    /// wins.
    public func resolve(text: String, _ type: RecordType) async -> DNSAnswer {
        guard let name = try? DNSName(text) else { return DNSAnswer(status: .formErr, canonicalName: .root) }
        if text.hasSuffix(".") || configuration.search.isEmpty { return await resolve(name, type) }
        let dots = text.filter { $0 == "." }.count
        var candidates: [DNSName] = configuration.search.compactMap { try? DNSName(labels: name.labels.map(Array.init) + $0.labels.map(Array.init)) }
        if dots >= configuration.ndots { candidates.insert(name, at: 0) } else { candidates.append(name) }
        var last = DNSAnswer(status: .nxDomain, canonicalName: name)
        for n in candidates {
            last = await resolve(n, type)
            if last.status != .nxDomain { return last }
        }
        return last
    }
}

/// One question in flight, on one loop: UDP to each server in turn, TCP when truncated.
final class StubQuery: DatagramHandler, ConnectionHandler {
    let loop: EventLoop
    let question: Question
    let servers: [DNSServer]
    let configuration: StubConfiguration
    var continuation: UnsafeContinuation<DNSAnswer, Never>?
    var tried = 0
    var server = DNSServer(host: "127.0.0.1")
    var id: UInt16 = 0
    var query: [UInt8] = []
    var socket: DatagramSocket?
    var tcp: Connection?
    var tcpInput: [UInt8] = []
    var timer: UInt64?
    /// The most telling failure so far (reported when every server failed).
    var failure: DNSStatus = .timeout
    var done = false

    init(loop: EventLoop, question: Question, servers: [DNSServer], configuration: StubConfiguration, continuation: UnsafeContinuation<DNSAnswer, Never>) {
        self.loop = loop
        self.question = question
        self.servers = servers
        self.configuration = configuration
        self.continuation = continuation
    }

    func start() { next() }

    /// Tries the next server (or the next round), or gives up.
    func next() {
        cleanup()
        guard !done else { return }
        guard !servers.isEmpty, tried < servers.count * max(configuration.attempts, 1) else {
            return finish(DNSAnswer(status: failure, canonicalName: question.name))
        }
        server = servers[tried % servers.count]
        tried += 1
        id = UInt16.random(in: 0...UInt16.max)
        query = DNSMessage.query(id: id, name: question.name, type: question.type, udpPayload: configuration.udpPayload)
        do {
            let s = try loop.openDatagram(host: server.host, port: server.port, handler: self)
            socket = s
            if !s.send(query) { return next() }
        } catch {
            return next()
        }
        armTimer()
    }

    func armTimer() {
        if let t = timer { loop.cancel(t) }
        timer = loop.schedule(after: UInt64(configuration.timeout * 1e9)) { [weak self] in
            guard let self else { return }
            self.timer = nil
            self.next()
        }
    }

    func cleanup() {
        if let t = timer { loop.cancel(t) }
        timer = nil
        socket?.close()
        socket = nil
        if let c = tcp {
            tcp = nil
            c.handler = nil
            c.close()
        }
        tcpInput.removeAll()
    }

    func finish(_ answer: DNSAnswer) {
        guard !done else { return }
        done = true
        cleanup()
        let c = continuation
        continuation = nil
        c?.resume(returning: answer)
    }

    /// The response to this query, or nil (wrong ID, not a response, another question, malformed).
    func match(_ bytes: [UInt8]) -> DNSMessage? {
        guard bytes.count >= 12, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == id else { return nil }
        guard let m = try? DNSMessage.decode(bytes) else {
            failure = .formErr
            return nil
        }
        guard m.isResponse, m.questions.count == 1, m.questions[0] == question else { return nil }
        return m
    }

    func handle(_ m: DNSMessage, overTCP: Bool) {
        if m.truncated {
            if overTCP {
                failure = .servFail
                return next()
            }
            return startTCP()
        }
        switch m.rcode {
        case 0, 3:
            finish(DNSAnswer(response: m, question: question))
        case 1:
            failure = .formErr
            next()
        default:
            failure = .servFail
            next()
        }
    }

    // MARK: UDP

    func datagramReceived(_ socket: DatagramSocket, _ bytes: UnsafeRawBufferPointer) {
        guard socket === self.socket, let m = match(Array(bytes)) else { return }
        handle(m, overTCP: false)
    }

    func datagramFailed(_ socket: DatagramSocket, _ error: ReactorError) {
        // ICMP unreachable: nobody listens there; move on at once.
        guard socket === self.socket else { return }
        next()
    }

    // MARK: TCP (RFC 7766), for truncated answers

    func startTCP() {
        socket?.close()
        socket = nil
        do {
            let c = try loop.connect(host: server.host, port: server.port, handler: self)
            tcp = c
            c.timeout = UInt64(configuration.timeout * 1e9)
            if !c.isClosed { sendTCPQuery(c) }  // held by the connection until the connect completes
        } catch {
            next()
        }
        armTimer()
    }

    func sendTCPQuery(_ c: Connection) {
        var framed: [UInt8] = []
        framed.appendUInt16(UInt16(query.count))
        framed += query
        c.write(framed)
    }

    func connectionActive(_ c: Connection) {}

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard c === tcp else { return bytes.count }
        tcpInput += bytes
        if tcpInput.count >= 2 {
            let length = Int(tcpInput[0]) << 8 | Int(tcpInput[1])
            if tcpInput.count >= 2 + length {
                let message = Array(tcpInput[2..<(2 + length)])
                if let m = match(message) { handle(m, overTCP: true) } else { failure = .formErr; next() }
            }
        }
        return bytes.count
    }

    func connectionEndOfInput(_ c: Connection) {
        guard c === tcp else { return }
        next()
    }

    func connectionTimedOut(_ c: Connection) {
        guard c === tcp else { return }
        next()
    }

    func connectionClosed(_ c: Connection, error: ReactorError?) {
        guard c === tcp, !done else { return }
        tcp = nil
        next()
    }
}
