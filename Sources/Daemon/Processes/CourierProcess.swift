// `ternd --role courier`: outbound SMTP (the `Courier`) and MTA-STS fetches, in a process of
// their own (privilege separation, docs/security.md). Started by ternd's parent with its
// control socket on descriptor 3 and its channel to the queue on 4. It reads the configuration
// and the relay passwords, loads the CA certificates, starts its loops and the DNS resolver, and
// — started as root — confines itself as smtp does before it takes a job: chrooted to an empty
// folder, `user` with no capabilities and no way back, `no_new_privs`, smtp's seccomp
// allowlist. It never sees the spool: each job's body comes over the channel, its outcomes go
// back, and so do the TLS levels it reaches and the MTA-STS policies it fetches (the queue keeps
// them). SIGTERM drains it: no new connection, transactions under way finish (as long as a
// reply may take), waiting jobs go back as not attempted; a reload replaces it (a new courier
// takes the new jobs, this one drains).
import CTernSystem
import Config
import Delivery
import Glibc
import IPC
import Reactor
import Synchronization

public enum CourierProcess {
    public static func run(configPath: String?, control: Int32, channel: Int32, parent: Int32?, loops: Int, ioBackend: IOBackendKind?) -> Int32 {
        let probe = RoleProcess.seccompProbe
        let sfd = RoleProcess.begin(title: "ternd: courier", parent: parent, moreSignals: probe ? [SIGUSR1] : [])
        guard sfd >= 0, loops > 0 else { return 1 }
        signal(SIGPIPE, SIG_IGN)
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(configPath, parts: .courier)
        } catch {
            for e in error.errors { Log.error("courier: \(e.description)") }
            return 1
        }
        let c = loaded.configuration
        let service: CourierService
        let group: EventLoopGroup
        do {
            ReactorSystem.setLogSink { Log.error($0) }
            ReactorSystem.raiseFileLimit()
            group = try EventLoopGroup(count: loops)
            group.start()
            let resolver = ResolverHolder()
            try resolver.start(loaded, group: group)
            let loop = group.loops[0]
            let link = CourierService.Outbox(loop: loop)
            let history = RelayedTLSHistory { domain, level in link.send(.tlsReached(domain: domain, level: UInt8(level.rawValue))) }
            let courier = try Courier(
                loops: group.loops, settings: Daemon.courierSettings(c, passwords: loaded.relayPasswords), history: history,
                mtaSTSDirectory: nil, mtaSTSStored: { domain, id, fetched, text in link.send(.mtaSTSPolicy(domain: domain, id: id, fetched: fetched, text: text)) },
                resolver: { resolver.current }, log: { Log.mail($0) })
            service = CourierService(courier: courier, history: history, outbox: link, log: { Log.error($0) })
            let box = Transfer(service)
            _ = try group.onEachLoop { l in
                guard l.index == 0 else { return 0 }
                try box.value.adopt(fd: channel, loop: l, maxBody: c.limits.messageSize * 2 + (8 << 20))
                return 0
            }
            try SMTPProcess.confine(c, parent: parent, as: "courier")
        } catch {
            Log.error("courier: cannot start: \(error)")
            return 1
        }
        Log.info("outbound: port \(c.outbound.port), \(c.outbound.connectionsPerDestination) connections per destination, \(c.outbound.connections) in all; certificates checked against \(c.outbound.caFile ?? "the system's trust store")")
        Log.info("courier: ready (pid \(getpid()), uid \(getuid()), \(loops) loop(s))")
        RoleProcess.tell(control, .ready)
        while true {
            var pfds = [pollfd(fd: control, events: Int16(POLLIN), revents: 0), pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            guard poll(&pfds, 2, -1) > 0 else { continue }
            if pfds[1].revents != 0 {
                let sig = tern_signalfd_read(sfd)
                if sig == SIGTERM || sig == SIGINT || sig == SIGHUP {
                    service.drain(grace: 10)
                    group.shutdown()
                    return 0
                }
                if sig == SIGUSR1, probe {
                    Log.info("courier: TERN_TEST_SECCOMP_PROBE: calling mount(2)")
                    _ = tern_probe_forbidden_call()
                }
            }
            if pfds[0].revents != 0 {
                var b: UInt8 = 0
                if recv(control, &b, 1, Int32(MSG_DONTWAIT)) == 0 {
                    // The parent is gone: nobody supervises us.
                    service.drain(grace: 0)
                    group.shutdown()
                    return 0
                }
            }
        }
    }
}

/// The courier process's door for the queue: jobs in (the body in chunks), handed to the
/// courier once whole; outcomes, TLS levels and fetched policies out. The queue is trusted more
/// than smtp is, but its messages are still checked (`ChannelGuard`): a broken one closes the
/// channel, and the courier then has nothing to do until the parent restarts the set.
final class CourierService: IPCChannelDelegate, @unchecked Sendable {
    let courier: Courier
    let history: RelayedTLSHistory
    let outbox: Outbox
    let log: (String) -> Void
    /// Jobs whose body is still coming (loop 0 only).
    var incoming: [UInt32: (head: IPCOutbound, body: [UInt8])] = [:]
    /// Jobs handed to the courier and not answered yet (loop 0 only).
    var out = 0
    /// Draining: jobs that come now are answered as not attempted (loop 0 only).
    var draining = false

    /// What the courier's loops send to the queue goes through the channel's loop.
    final class Outbox: @unchecked Sendable {
        let loop: EventLoop
        var channel: IPCChannel? = nil
        init(loop: EventLoop) { self.loop = loop }
        func send(_ m: IPCMessage) {
            let box = Transfer(m)
            loop.execute { [self] in channel?.send(box.value) }
        }
    }

    init(courier: Courier, history: RelayedTLSHistory, outbox: Outbox, log: @escaping (String) -> Void) {
        self.courier = courier
        self.history = history
        self.outbox = outbox
        self.log = log
    }

    /// `maxBody`: the largest job body taken (a spooled message: the size limit and its trace
    /// fields); a larger one closes the channel.
    func adopt(fd: Int32, loop: EventLoop, maxBody: Int) throws(ReactorError) {
        outbox.channel = try RoleProcess.adoptChannel(fd: fd, loop: loop, rules: ChannelGuard(local: .courier, peer: .queue, maxBody: maxBody), delegate: self)
    }

    func channel(_ channel: IPCChannel, received message: IPCMessage) {
        switch message {
        case .deliver(let j, let head):
            incoming[j] = (head, [])
            incoming[j]!.body.reserveCapacity(Int(min(head.size, 16 << 20)))
            if head.size == 0 { start(j) }
        case .messageChunk(let j, let bytes):
            guard incoming[j] != nil else { return }
            incoming[j]!.body += bytes
            if UInt64(incoming[j]!.body.count) == incoming[j]!.head.size { start(j) }
        case .mtaSTSPolicy(let domain, let id, let fetched, let text):
            if !courier.learnMTASTS(domain: domain, id: id, fetched: fetched, text: text) { log("courier: the queue's MTA-STS policy for \(domain) does not parse; not used") }
        default:
            break
        }
    }

    func start(_ j: UInt32) {
        guard let (o, body) = incoming.removeValue(forKey: j) else { return }
        if draining {
            outbox.channel?.send(.delivered(job: j, outcomes: o.recipients.map { _ in IPCOutcome(.notAttempted) }))
            return
        }
        if let level = SecurityLevel(rawValue: Int(o.tlsFloor)), !o.historyKey.isEmpty { history.learn(level, for: o.historyKey) }
        var m = OutboundMessage(id: o.id, sender: o.sender, recipients: o.recipients, body: body, smtpUTF8: o.smtpUTF8, eightBit: o.body != .sevenBit)
        m.binary = o.body == .binaryMIME
        m.envelopeID = o.envelopeID
        m.ret = o.ret
        m.notify = o.notify
        m.originalRecipients = o.originalRecipients
        out += 1
        let outbox = self.outbox
        courier.submit(domain: o.domain, m) { [self] outcomes in
            let report = IPCMessage.delivered(job: j, outcomes: outcomes.map(Self.ipc))
            let box = Transfer(report)
            outbox.loop.execute { [self] in
                out -= 1
                outbox.channel?.send(box.value)
            }
        }
    }

    /// An outcome as the channel carries it: an enhanced status of its class, one line of text.
    static func ipc(_ o: RecipientOutcome?) -> IPCOutcome {
        guard let o else { return IPCOutcome(.notAttempted) }
        let kind: IPCOutcome.Kind = o.kind == .delivered ? .delivered : o.kind == .temporary ? .temporary : .permanent
        let klass = kind == .delivered ? "2" : kind == .temporary ? "4" : "5"
        let status = IPCMessage.isEnhancedStatus(o.status, klass: UInt8(klass)!) ? o.status : "\(klass).0.0"
        var text = String(String.UnicodeScalarView(o.text.unicodeScalars.map { $0 == "\r" || $0 == "\n" || $0 == "\0" ? " " : $0 }))
        if text.utf8.count > IPCLimits.text - 16 { text = String(decoding: text.utf8.prefix(IPCLimits.text - 16), as: UTF8.self) }
        return IPCOutcome(kind, status: status, text: text, withoutDSN: o.withoutDSN)
    }

    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?) {
        outbox.channel = nil
        incoming = [:]
        log("courier: the queue's channel closed\(error.map { ": \($0)" } ?? ""); waiting for the parent to restart ternd's processes")
    }

    /// Stops: no new connections; transactions under way finish (`grace` seconds at least, as long
    /// as a reply may take), waiting jobs end as not attempted; then what is owed the queue is
    /// written (5 s at most).
    func drain(grace: Double) {
        // First the queue hears it: no more jobs come (what is on its way is answered).
        let me = Transfer(self)
        outbox.loop.execute {
            me.value.draining = true
            me.value.outbox.channel?.send(.courierDraining)
        }
        if courier.shutdown(grace: grace) > 0 {
            Log.error("outbound: connection(s) still in a transaction at the reply timeout are cut; their messages are sent again and may arrive twice")
        }
        let c = courier.counts
        Log.info("outbound: \(c.transactions) transactions over \(c.connections) connections since the start")
        let deadline = ReactorSystem.now() + 5_000_000_000
        let box = Transfer(self)
        while ReactorSystem.now() < deadline {
            let owed = Mutex<Bool>(true)
            let done = Atomic<Bool>(false)
            box.value.outbox.loop.execute {
                let s = box.value
                owed.withLock { $0 = s.out > 0 || !s.incoming.isEmpty || (s.outbox.channel?.connection?.bufferedOutput ?? 0) > 0 }
                done.store(true, ordering: .releasing)
            }
            while !done.load(ordering: .acquiring), ReactorSystem.now() < deadline { usleep(2_000) }
            if !owed.withLock({ $0 }) { return }
            usleep(10_000)
        }
        Log.error("courier: outcomes not all written to the queue within 5 s; those deliveries are deferred and tried again")
    }
}
