// `ternd: parent`, what `ternd` runs as (docs/security.md): it reads the configuration, binds the
// listening sockets, starts lookup, queue, courier and smtp with their descriptors in place
// (socketpairs for every channel), and supervises them (`Supervisor`, `RestartPolicy`): smtp
// or the courier restarted alone, the set when queue or lookup dies, ternd stopped after five
// crashes in a minute. It never reads a byte from the network. SIGHUP (or a changed aliases
// file) reloads queue, then lookup, then replaces the courier and smtp (each new one starts
// before the old one drains); SIGTERM drains smtp first, then the courier, then the queue,
// then lookup.
import CTernSystem
import Config
import Glibc
import IPC
import Privsep
import Reactor

public final class ParentProcess {
    let configPath: String?
    /// The configuration in force, and the one at the start (what a reload cannot change is
    /// compared with it).
    var loaded: LoadedConfiguration
    let started: LoadedConfiguration
    let loops: Int
    let ioBackend: IOBackendKind?
    let binary: String
    /// Listener j's socket for smtp loop i: listeners[j][i]. Kept for smtp restarts.
    var listeners: [[Int32]] = []
    /// Each child role's control socket (the parent's end), replaced at each start.
    var control: [IPCRole: Int32] = [:]
    var supervisor: Supervisor! = nil
    /// The smtp process being started replaces one (a reload).
    var replacing = false
    /// Each running child's control socket by pid (an smtp being replaced keeps its own until it
    /// is gone: its end closing tells it the parent is gone), and the one made for the child
    /// being started.
    var controlOf: [pid_t: Int32] = [:]
    var starting: Int32 = -1
    /// Children that said they are ready (a SIGHUP before that would kill them).
    var ready: Set<pid_t> = []
    let null: Int32

    init(configPath: String?, loaded: LoadedConfiguration, loops: Int, ioBackend: IOBackendKind?) {
        self.configPath = configPath
        self.loaded = loaded
        started = loaded
        self.loops = loops > 0 ? loops : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        self.ioBackend = ioBackend
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        binary = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
        null = open("/dev/null", O_RDWR | O_CLOEXEC)
    }

    /// Runs ternd; returns the exit status. `signals`: the signalfd for INT, TERM, HUP and CHLD.
    public static func run(configPath: String?, loaded: LoadedConfiguration, loops: Int, ioBackend: IOBackendKind?, signals: Int32, aliasFiles: @escaping (LoadedConfiguration) -> [String: Int], times: @escaping ([String: Int]) -> [String: Int]) -> Int32 {
        _ = tern_set_process_title(CommandLine.argc, CommandLine.unsafeArgv, "ternd: parent")
        let p = ParentProcess(configPath: configPath, loaded: loaded, loops: loops, ioBackend: ioBackend)
        do {
            try p.bind()
            try p.startChildren()
        } catch {
            Log.error("cannot start: \(error)")
            p.supervisor?.stopping()
            p.supervisor?.stopAll(grace: 5)
            return 1
        }
        Log.info("ternd ready (\(loaded.path)): parent \(getpid())" + [IPCRole.lookup, .queue, .courier, .smtp].map { r in ", \(r) \(p.supervisor.pid(of: r).map(String.init) ?? "?")" }.joined())
        var watched = aliasFiles(loaded)
        while true {
            var pfd = pollfd(fd: signals, events: Int16(POLLIN), revents: 0)
            // Alias files are also reloaded when they change (checked every 2 s), as chasquid does.
            guard poll(&pfd, 1, 2000) > 0 else {
                if times(watched) != watched {
                    p.reload("an aliases file changed")
                    // (A refused reload keeps the old tables: this version of the files is
                    // reported once, not every 2 s.)
                    watched = aliasFiles(p.loaded)
                }
                continue
            }
            switch tern_signalfd_read(signals) {
            case SIGCHLD:
                if let why = p.supervisor.reap(now: Double(ReactorSystem.now()) / 1e9) {
                    Log.error("ternd: stopping: \(why)")
                    p.stop()
                    return 1
                }
                p.forgetExited()
            case SIGHUP:
                p.reload("SIGHUP")
                watched = times(aliasFiles(p.loaded))
            case SIGTERM, SIGINT:
                p.stop()
                return 0
            default:
                break
            }
        }
    }

    /// The listening sockets, one per listener per smtp loop (SO_REUSEPORT spreads the
    /// connections); a port 0 is chosen by the first and kept by the others.
    func bind() throws(ReactorError) {
        for l in loaded.configuration.listeners {
            var fds: [Int32] = []
            var port = l.port
            for _ in 0..<loops {
                let fd = tern_listen_tcp(l.host, Int32(port), 1, 4096)
                guard fd >= 0 else {
                    for f in listeners.joined() { close(f) }
                    for f in fds { close(f) }
                    throw .syscall("listen \(l.host):\(port)", errno: -fd)
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                port = Int(tern_local_port(fd))
                fds.append(fd)
            }
            listeners.append(fds)
            Log.info("listening: \(l.kind.rawValue) on \(l.host.contains(":") ? "[\(l.host)]" : l.host):\(port)")
        }
    }

    /// The environment the children start with: the parent's own (TERN_IO_BACKEND and the like
    /// reach them).
    static var environment: [String] {
        var out: [String] = []
        var p = environ
        while let e = p.pointee {
            out.append(String(cString: e))
            p += 1
        }
        return out
    }

    func arguments(_ role: String) -> [String] {
        var a = ["--role", role, "--parent-pid", "\(getpid())", "--loops", "\(loops)"]
        if let configPath { a += ["--config", configPath] }
        if let ioBackend { a += ["--io-backend", ioBackend.rawValue] }
        return a
    }

    /// A fresh control socketpair for `role`: the parent keeps one end (replacing the last
    /// one's), the child gets the other as descriptor 3.
    func controlPair(_ role: IPCRole) -> Int32 {
        var pair: [Int32] = [-1, -1]
        guard tern_socketpair(&pair) == 0 else { return -1 }
        control[role] = pair[0]
        starting = pair[0]
        return pair[1]
    }

    /// The key of lookup's user tokens (`UserToken`), made once: each lookup and queue started
    /// gets it as descriptor 4, a memory file (never in arguments or the environment).
    lazy var tokenKey = UserToken.newKey()

    func secretFD() -> Int32 {
        let fd = tokenKey.withUnsafeBytes { tern_secret_fd($0.baseAddress, Int32($0.count)) }
        if fd < 0 { Log.error("ternd: cannot make the token key's memory file: \(String(cString: strerror(-fd)))") }
        return fd < 0 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : fd
    }

    func startChildren() throws {
        let log: (String) -> Void = { Log.error($0) }
        let closeTheirs: (pid_t, [Int32]) -> Void = { [unowned self] pid, fds in
            for fd in fds.dropFirst(3) { close(fd) }
            controlOf[pid] = starting
        }
        let lookup = Supervisor.ChildSpec(
            role: .lookup, path: binary, arguments: arguments("lookup"), environment: Self.environment,
            descriptors: { [unowned self] in [null, 1, 2, controlPair(.lookup), secretFD()] }, started: closeTheirs)
        let queue = Supervisor.ChildSpec(
            role: .queue, path: binary, arguments: arguments("queue"), environment: Self.environment,
            descriptors: { [unowned self] in [null, 1, 2, controlPair(.queue), secretFD()] }, started: closeTheirs)
        let courier = Supervisor.ChildSpec(
            role: .courier, path: binary, arguments: arguments("courier"), environment: Self.environment,
            descriptors: { [unowned self] in courierDescriptors() }, started: closeTheirs)
        var smtp = Supervisor.ChildSpec(
            role: .smtp, path: binary, arguments: arguments("smtp") + ["--listeners", loaded.configuration.listeners.map(\.kind.rawValue).joined(separator: ",")], environment: Self.environment,
            descriptors: { [unowned self] in smtpDescriptors() },
            started: { [unowned self] pid, fds in
                // Ours are the listening sockets: kept. The rest were the child's ends.
                let keep = Set(listeners.joined())
                for fd in fds.dropFirst(3) where !keep.contains(fd) { close(fd) }
                controlOf[pid] = starting
            })
        smtp.moreArguments = { [unowned self] in replacing ? ["--replacing"] : [] }
        supervisor = Supervisor([lookup, queue, courier, smtp], log: log)
        try supervisor.startAll()
        // Ready once each has said so; one that exits first stops the start.
        for role in [IPCRole.lookup, .queue, .courier, .smtp] {
            guard waitFor(.ready, from: role, seconds: 3600) else {
                throw SpawnError.spawn(path: "\(binary) (\(role): it stopped before it was ready; its log says why)", errno: ECHILD)
            }
            if let pid = supervisor.pid(of: role) { ready.insert(pid) }
        }
    }

    /// The smtp process's descriptors: 0-2, its control socket, the listening sockets, then one
    /// channel per loop to lookup and one to the queue, whose other ends go to those processes now.
    func smtpDescriptors() -> [Int32] {
        var toLookup: [Int32] = [], toQueue: [Int32] = []
        var mineLookup: [Int32] = [], mineQueue: [Int32] = []
        for _ in 0..<loops {
            var a: [Int32] = [-1, -1], b: [Int32] = [-1, -1]
            _ = tern_socketpair(&a)
            _ = tern_socketpair(&b)
            mineLookup.append(a[0])
            toLookup.append(a[1])
            mineQueue.append(b[0])
            toQueue.append(b[1])
        }
        pass(toLookup, to: .lookup)
        pass(toQueue, to: .queue)
        return [null, 1, 2, controlPair(.smtp)] + Array(listeners.joined()) + mineLookup + mineQueue
    }

    /// The courier's descriptors: 0-2, its control socket, and its channel to the queue (4),
    /// whose other end goes to the queue now (tag "c").
    func courierDescriptors() -> [Int32] {
        var pair: [Int32] = [-1, -1]
        _ = tern_socketpair(&pair)
        pass([pair[1]], to: .queue, tag: UInt8(ascii: "c"))
        return [null, 1, 2, controlPair(.courier), pair[0]]
    }

    /// Hands channel ends to lookup or the queue over its control socket (`tag` "s": smtp's,
    /// "c": the courier's), and closes ours.
    func pass(_ fds: [Int32], to role: IPCRole, tag: UInt8 = UInt8(ascii: "s")) {
        guard let c = control[role] else { return }
        var at = 0
        while at < fds.count {
            var chunk = Array(fds[at..<min(fds.count, at + Int(TERN_MAX_PASSED_FDS))])
            let rc = tern_send_fds(c, &chunk, Int32(chunk.count), tag)
            if rc != 0 { Log.error("ternd: cannot pass channels to \(role): \(String(cString: strerror(-rc)))") }
            at += chunk.count
        }
        for fd in fds { close(fd) }
    }

    /// Waits for one of `wanted` on `role`'s control socket, skipping other notes (a restarted
    /// child's `ready`); nil when the child went away or the time passed.
    func waitFor(_ wanted: Set<RoleProcess.Note>, from role: IPCRole, seconds: Double) -> RoleProcess.Note? {
        guard let c = control[role] else { return nil }
        return waitFor(wanted, on: c, seconds: seconds)
    }

    func waitFor(_ wanted: Set<RoleProcess.Note>, on c: Int32, seconds: Double) -> RoleProcess.Note? {
        let deadline = ReactorSystem.now() + UInt64(seconds * 1e9)
        while ReactorSystem.now() < deadline {
            var pfd = pollfd(fd: c, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 200) > 0 else { continue }
            var b: UInt8 = 0
            if recv(c, &b, 1, 0) <= 0 { return nil }
            if let note = RoleProcess.Note(rawValue: b), wanted.contains(note) { return note }
        }
        return nil
    }

    func waitFor(_ note: RoleProcess.Note, from role: IPCRole, seconds: Double) -> Bool { waitFor([note], from: role, seconds: seconds) != nil }

    /// Reload: the configuration is checked here first; then the queue, then lookup, each
    /// acknowledging; then a new courier (it reads the new routes and relay passwords) takes the
    /// new jobs while the old one finishes its own; then a new smtp (the new certificates and
    /// limits) starts listening and the old one drains.
    func reload(_ why: String) {
        let fresh: LoadedConfiguration
        do {
            fresh = try ConfigLoader.load(configPath)
        } catch {
            for e in error.errors { Log.error("reload (\(why)) refused: \(e.description)") }
            return
        }
        // All or nothing: lookup and the queue read the files again as queue-user; one they
        // cannot read would make them refuse what the rest applies (smtp with other limits).
        if getuid() == 0 {
            let unreadable = SecretFiles.unreadableByQueueUser(fresh.configuration)
            guard unreadable.isEmpty else {
                for u in unreadable { Log.error("reload (\(why)) refused: \(u)") }
                return
            }
        }
        var refusedBy: [IPCRole] = []
        for role in [IPCRole.queue, .lookup] {
            guard let pid = supervisor.pid(of: role) else { continue }
            // A child restarted a moment ago may not handle SIGHUP yet (its default kills it).
            if !ready.contains(pid) {
                guard waitFor(.ready, from: role, seconds: 60) else {
                    Log.error("reload: \(role) (pid \(pid)) is not ready; it keeps the configuration it started with")
                    continue
                }
                ready.insert(pid)
            }
            kill(pid, SIGHUP)
            switch waitFor([.reloaded, .refused], from: role, seconds: 60) {
            case .reloaded?: break
            case .refused?:
                Log.error("reload: \(role) refused the new configuration (its log says why) and keeps the one before")
                refusedBy.append(role)
            default: Log.error("reload: \(role) did not confirm the reload")
            }
        }
        // A half-applied reload keeps smtp as it is: its limits (message-size) must be the ones
        // the queue enforces, or a client's message would break the channel.
        guard refusedBy.isEmpty else {
            Log.error("reload (\(why)) not applied to smtp: \(refusedBy.map(\.description).joined(separator: " and ")) refused it; fix what its log says and reload again")
            return
        }
        replaceCourier(routesChanged: {
            let was = Daemon.courierSettings(loaded.configuration, passwords: loaded.relayPasswords), now = Daemon.courierSettings(fresh.configuration, passwords: fresh.relayPasswords)
            return was.routes != now.routes || was.defaultRoute != now.defaultRoute
        }())
        if let old = supervisor.pid(of: .smtp) {
            do {
                replacing = true
                defer { replacing = false }
                try supervisor.startRole(.smtp)
                if waitFor(.ready, from: .smtp, seconds: 60) {
                    if let pid = supervisor.pid(of: .smtp) { ready.insert(pid) }
                    // (SIGHUP tells smtp it is replaced: its sessions end as they would.) Once it
                    // says it stopped listening, every new connection is the new smtp's: only
                    // then is the reload said to be applied.
                    supervisor.retire(old, signal: SIGHUP)
                    if let c = controlOf[old], waitFor([.reloaded], on: c, seconds: 10) == nil {
                        Log.error("reload: the old smtp (pid \(old)) did not say it stopped listening within 10 s")
                    }
                } else {
                    Log.error("reload: the new smtp process did not start; the old one goes on")
                }
            } catch {
                Log.error("reload: cannot start a new smtp process: \(error); the old one goes on")
            }
        }
        for line in Daemon.reloadNotes(started: started, current: loaded, fresh: fresh) { Log.info(line) }
        loaded = fresh
        Log.info("reloaded recipients and aliases from \(fresh.path)")
    }

    /// A new courier, then the old one drains (SIGTERM): its transactions under way finish, its
    /// waiting jobs go back to the queue, which gives them to the new one.
    func replaceCourier(routesChanged: Bool) {
        guard let old = supervisor.pid(of: .courier) else { return }
        do {
            try supervisor.startRole(.courier)
            guard waitFor(.ready, from: .courier, seconds: 60) else {
                Log.error("reload: the new courier process did not start; the old one goes on")
                return
            }
            if let pid = supervisor.pid(of: .courier) { ready.insert(pid) }
            supervisor.retire(old, signal: SIGTERM)
            if routesChanged { Log.info("outbound: relay routes replaced (the new courier takes every message from now on)") }
        } catch {
            Log.error("reload: cannot start a new courier process: \(error); the old one goes on")
        }
    }

    /// Closes the control sockets of children that are gone.
    func forgetExited() {
        for (pid, fd) in controlOf where supervisor.children[pid] == nil {
            close(fd)
            controlOf[pid] = nil
            ready.remove(pid)
            for (role, c) in control where c == fd { control[role] = nil }
        }
    }

    /// Drains: no new connections (our listening sockets close), smtp finishes its sessions,
    /// then the queue stops in order, then lookup.
    func stop() {
        supervisor.stopping()
        for fd in listeners.joined() { close(fd) }
        listeners = []
        let spoolTimeout = Double(loaded.configuration.limits.spoolTimeout)
        supervisor.stop(.smtp, grace: 10 + spoolTimeout + 15)
        // The courier waits for replies to transactions under way (up to the reply timeout),
        // and the queue records their outcomes: it stops after.
        supervisor.stop(.courier, grace: 10 + 300 + 30)
        supervisor.stop(.queue, grace: 120)
        supervisor.stop(.lookup, grace: 10)
    }
}
