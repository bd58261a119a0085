// `ternd --role queue`: the process that holds the spool (group commit, recovery, the index, the
// scheduler, retries and bounces) and the DKIM signing keys, and takes messages from smtp over
// IPC (QueueService). Started by ternd's parent with a control socket on descriptor 3, over which
// the parent passes it one end of each smtp channel (SCM_RIGHTS, tag "s"). As root it first
// gives the spool folder to `queue-user` (mode 0700, never following a link), reads the
// configuration and the keys, then becomes `queue-user`. It stops when the control socket closes
// (the parent is gone), on SIGTERM or SIGINT (draining: nothing acknowledged is lost); SIGHUP
// reads the configuration again.
//
// Not yet here (issue 17): outbound delivery moves to the courier process and local delivery to
// the parent (forked as the mailbox owner); until then this process delivers itself, so as
// `queue-user` its Maildirs must be writable by that user.
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
        // Delivery commands may close their stdin early: a write to the pipe must fail, not kill us.
        signal(SIGPIPE, SIG_IGN)
        mallopt(M_MMAP_THRESHOLD, 1 << 20)
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(configPath)
        } catch {
            for e in error.errors { Log.error("queue: \(e.description)") }
            return 1
        }
        do {
            if getuid() == 0 { try giveSpool(loaded.configuration) }
            try RoleProcess.becomeQueueUser(loaded.configuration)
        } catch {
            Log.error("queue: \(error)")
            return 1
        }
        let daemon: Daemon
        do {
            daemon = try Daemon(loaded, loops: loops, ioBackend: ioBackend)
            try daemon.startQueue()
        } catch {
            Log.error("queue: cannot start: \(error)")
            return 1
        }
        // One service per loop; channels are spread over the loops in turn.
        let services = Transfer(daemon.group.loops.map { _ in QueueService(daemon: daemon, log: { Log.error($0) }) })
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
            reload: {
                do throws(ConfigErrors) {
                    daemon.reload(try ConfigLoader.load(configPath))
                } catch {
                    for e in error.errors { Log.error("queue: reload refused: \(e.description)") }
                }
            })
        daemon.drain(grace: 0)
        return status
    }

    /// As root, before becoming `queue-user`: the spool folder and everything in it belong to that
    /// user, the folder itself mode 0700. Links are never followed (a link planted in the spool
    /// cannot get another file chowned), and nothing outside the folder is touched.
    static func giveSpool(_ c: Configuration) throws(ProcessRoleError) {
        guard let pw = getpwnam(c.queueUser) else { throw .noSuchUser(statement: "queue-user", name: c.queueUser) }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        if mkdir(c.spool, 0o700) != 0, errno != EEXIST { throw .confinement("create the spool folder \(c.spool)", errno: errno) }
        let fd = open(c.spool, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .confinement("open the spool folder \(c.spool)", errno: errno) }
        defer { close(fd) }
        guard fchown(fd, uid, gid) == 0, fchmod(fd, 0o700) == 0 else { throw .confinement("give the spool folder \(c.spool) to \(c.queueUser)", errno: errno) }
        try chownTree(fd, uid: uid, gid: gid, path: c.spool, depth: 0)
    }

    static func chownTree(_ dir: Int32, uid: uid_t, gid: gid_t, path: String, depth: Int) throws(ProcessRoleError) {
        guard depth < 16 else { return }
        let copy = dup(dir)
        guard copy >= 0, let d = fdopendir(copy) else { throw .confinement("read \(path)", errno: errno) }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            guard fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW) == 0 else { throw .confinement("give \(path)/\(name) to the queue user", errno: errno) }
            let sub = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if sub >= 0 {
                defer { close(sub) }
                try chownTree(sub, uid: uid, gid: gid, path: "\(path)/\(name)", depth: depth + 1)
            }
        }
    }
}
