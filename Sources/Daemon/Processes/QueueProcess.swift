// `ternd --role queue`: the process that holds the spool (group commit, recovery, the index, the
// scheduler, retries and bounces) and the DKIM signing keys, and takes messages from smtp over
// IPC (QueueService). Started by ternd's parent with a control socket on descriptor 3, over which
// the parent passes it one end of each smtp channel (SCM_RIGHTS, tag "s"). As root it first
// gives the spool folder to `queue-user` (mode 0700, never following a link), reads the
// configuration and the keys, then becomes `queue-user`. It stops when the control socket closes
// (the parent is gone), on SIGTERM or SIGINT (draining: nothing acknowledged is lost); SIGHUP
// reads the configuration again.
//
// Local deliveries (Maildir, the MDA, pipe aliases) run in this process, as `queue-user`, never as
// root: Tern's mailboxes are virtual (users files), so the Maildir tree is the queue user's, as
// Dovecot's virtual mailboxes are its `vmail` user's. Remote deliveries go to the courier process
// (CourierLink), whose channel the parent passes with tag "c": the queue itself talks to no
// network.
import CTernSystem
import Config
import Glibc
import IPC
import Reactor

public enum QueueProcess {
    /// Runs until the control socket closes or a stop signal comes; returns the exit status.
    public static func run(configPath: String?, control: Int32, parent: Int32?, loops: Int = 0, ioBackend: IOBackendKind? = nil) -> Int32 {
        let sfd = RoleProcess.begin(title: "ternd: queue", parent: parent)
        guard sfd >= 0 else { return 1 }
        guard let tokenKey = RoleProcess.tokenKey("queue") else { return 1 }
        // Delivery commands may close their stdin early: a write to the pipe must fail, not kill us.
        signal(SIGPIPE, SIG_IGN)
        mallopt(M_MMAP_THRESHOLD, 1 << 20)
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(configPath, parts: .queue)
        } catch {
            for e in error.errors { Log.error("queue: \(e.description)") }
            return 1
        }
        do {
            if getuid() == 0 { try giveSpool(loaded.configuration) }
            try RoleProcess.becomeQueueUser(loaded.configuration, parent: parent)
        } catch {
            Log.error("queue: \(error)")
            return 1
        }
        waitForTheSpool(loaded.configuration.spool)
        let daemon: Daemon
        do {
            daemon = try Daemon(loaded, loops: loops, ioBackend: ioBackend)
            try daemon.startQueue()
        } catch {
            Log.error("queue: cannot start: \(error)")
            return 1
        }
        // One service per loop; channels are spread over the loops in turn.
        let services = Transfer(daemon.group.loops.map { _ in QueueService(daemon: daemon, tokenKey: tokenKey, log: { Log.error($0) }) })
        // The spool stops or starts taking mail: each loop tells its smtp channels at once (the
        // loops' own check every 100 ms catches a stall).
        let loops = daemon.group.loops
        daemon.queue.spool.onConditionChange {
            for (loop, service) in zip(loops, services.value) {
                let box = Transfer(service)
                loop.execute { box.value.pushState() }
            }
        }
        var next = 0
        Log.info("queue: ready (pid \(getpid()), uid \(getuid()))")
        let status = RoleProcess.serve(
            name: "queue", control: control, signals: sfd,
            channels: { fds in
                for fd in fds {
                    let loop = daemon.group.loops[next % daemon.group.loops.count]
                    next += 1
                    loop.execute {
                        do {
                            try services.value[loop.index].adopt(fd: fd, loop: loop)
                        } catch {
                            Log.error("queue: cannot serve a channel: \(error)")
                        }
                    }
                }
            },
            courierChannels: { fds in
                guard let link = daemon.courier else { return fds.forEach { close($0) } }
                for fd in fds {
                    link.loop.execute {
                        do {
                            try link.adopt(fd: fd)
                        } catch {
                            Log.error("queue: cannot serve the courier's channel: \(error)")
                        }
                    }
                }
            },
            reload: {
                do throws(ConfigErrors) {
                    daemon.reload(try ConfigLoader.load(configPath, parts: .queue))
                    return true
                } catch {
                    for e in error.errors { Log.error("queue: reload refused: \(e.description)") }
                    return false
                }
            })
        daemon.drain(grace: 0)
        return status
    }

    /// The queue process of a ternd that was just killed may still be on its way out (it dies
    /// with its parent, a moment later): its spool lock is waited for, 10 s at most, before
    /// the spool refuses to open.
    static func waitForTheSpool(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var said = false
        for _ in 0..<1000 {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                flock(fd, LOCK_UN)
                return
            }
            if !said {
                Log.info("queue: the spool \(path) is locked by another process (a ternd stopping?): waiting up to 10 s")
                said = true
            }
            usleep(10_000)
        }
    }

    /// As root, before becoming `queue-user`: the spool folder and everything in it belong to that
    /// user, the folder itself mode 0700; so does what root owns in the Maildir tree (the fixed
    /// start of the `deliver maildir` pattern: local deliveries run as `queue-user`). Links are
    /// never followed (a link planted in either cannot get another file chowned), and nothing
    /// outside them is touched.
    static func giveSpool(_ c: Configuration) throws(ProcessRoleError) {
        guard let pw = getpwnam(c.queueUser) else { throw .noSuchUser(statement: "queue-user", name: c.queueUser) }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        // A folder another user owns is not taken over: it may be anything.
        var st = stat()
        if lstat(c.spool, &st) == 0, st.st_uid != 0, st.st_uid != uid {
            throw .confinement("use the spool folder \(c.spool): it belongs to \(SecretFiles.userName(st.st_uid)), not to root or \(c.queueUser) (chown -R \(c.queueUser) it, or name another `spool`)", errno: EPERM)
        }
        try give(c.spool, uid: uid, gid: gid, mode: 0o700, onlyRoots: false)
        if let blocker = unreachable(c.spool, uid: uid, gid: gid) {
            throw .confinement("use the spool folder \(c.spool): \(c.queueUser) cannot reach it: \(blocker)", errno: EACCES)
        }
        if case .maildir(let pattern) = c.delivery, let base = maildirBase(pattern) {
            // (Not fatal: a Maildir tree on a read-only mount, say, makes its deliveries wait, as
            // it would anyway.)
            do {
                try give(base, uid: uid, gid: gid, mode: nil, onlyRoots: true)
            } catch {
                Log.error("queue: cannot give the Maildir tree \(base) to \(c.queueUser): \(error); deliveries into what root owns there fail until it is \(c.queueUser)'s")
            }
        }
    }

    /// The first folder on the way to `path` that uid:gid may not search, said with its mode,
    /// its owner and the fix; nil when it can get there.
    static func unreachable(_ path: String, uid: uid_t, gid: gid_t) -> String? {
        guard let (at, st) = SecretFiles.firstUnsearchableFolder(path, uid: uid, gid: gid) else { return nil }
        return "\(at) is mode 0\(String(st.st_mode & 0o7777, radix: 8)), owned by \(SecretFiles.userName(st.st_uid)) (chmod o+x \(at), or name a `spool` elsewhere)"
    }

    /// The part of a Maildir pattern before its first placeholder, up to a folder: "mail" for
    /// "mail/%{domain}/%{user}"; nil when the pattern starts with one.
    static func maildirBase(_ pattern: String) -> String? {
        let chars = Array(pattern.utf8)
        guard let p = chars.indices.first(where: { chars[$0] == UInt8(ascii: "%") && $0 + 1 < chars.count && chars[$0 + 1] == UInt8(ascii: "{") }) else { return pattern }
        let head = String(decoding: chars[..<p], as: UTF8.self)
        guard let slash = head.lastIndex(of: "/") else { return nil }
        let base = String(head[..<slash])
        return base.isEmpty ? nil : base
    }

    /// Creates `path` (and its parents, 0755) when missing, and gives it and what is in it to
    /// uid:gid — with `onlyRoots`, only what root owns.
    static func give(_ path: String, uid: uid_t, gid: gid_t, mode: mode_t?, onlyRoots: Bool) throws(ProcessRoleError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            if mkdir(prefix, prefix == path ? (mode ?? 0o755) : 0o755) != 0, errno != EEXIST { throw .confinement("create \(prefix)", errno: errno) }
            prefix += "/"
        }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .confinement("open \(path)", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .confinement("look at \(path)", errno: errno) }
        if !onlyRoots || st.st_uid == 0 {
            guard fchown(fd, uid, gid) == 0 else { throw .confinement("give \(path) to the queue user", errno: errno) }
        }
        if let mode, fchmod(fd, mode) != 0 { throw .confinement("set the mode of \(path)", errno: errno) }
        try chownTree(fd, uid: uid, gid: gid, path: path, depth: 0, onlyRoots: onlyRoots)
    }

    static func chownTree(_ dir: Int32, uid: uid_t, gid: gid_t, path: String, depth: Int, onlyRoots: Bool) throws(ProcessRoleError) {
        guard depth < 16 else { return }
        let copy = dup(dir)
        guard copy >= 0, let d = fdopendir(copy) else { throw .confinement("read \(path)", errno: errno) }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            var st = stat()
            guard fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if !onlyRoots || st.st_uid == 0 {
                if fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 {
                    // The spool must be given whole; in a Maildir tree one part that cannot be
                    // (a read-only mount) is said and the rest given.
                    guard onlyRoots else { throw .confinement("give \(path)/\(name) to the queue user", errno: errno) }
                    Log.error("queue: cannot give \(path)/\(name) to the queue user: \(String(cString: strerror(errno)))")
                    continue
                }
            }
            let sub = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if sub >= 0 {
                defer { close(sub) }
                try chownTree(sub, uid: uid, gid: gid, path: "\(path)/\(name)", depth: depth + 1, onlyRoots: onlyRoots)
            }
        }
    }
}
