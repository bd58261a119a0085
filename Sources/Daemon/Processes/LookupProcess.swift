// `ternd --role lookup`: the process that holds the users files and the recipient tables
// (LookupService). Started by ternd's parent with a control socket on descriptor 3, over which
// the parent passes it one end of each smtp channel (SCM_RIGHTS, tag "s"). As root it becomes
// `queue-user` once the configuration and the users files are read; it never opens a network
// socket. It stops when the control socket closes (the parent is gone), on SIGTERM or SIGINT;
// SIGHUP reads the configuration again.
import CTernSystem
import Config
import Glibc
import IPC
import Reactor

public enum ProcessRoleError: Error, CustomStringConvertible {
    case noSuchUser(statement: String, name: String)
    case confinement(String, errno: Int32)

    public var description: String {
        switch self {
        case .noSuchUser(let s, let n): return "\(s) '\(n)' does not exist on this system"
        case .confinement(let what, let e): return "cannot \(what): \(String(cString: strerror(e)))"
        }
    }
}

public enum LookupProcess {
    /// Runs until the control socket closes or a stop signal comes; returns the exit status.
    /// - Parameters:
    ///   - configPath: the configuration file (nil: the embedded default), read again on SIGHUP.
    ///   - control: the parent's control socket.
    ///   - parent: the parent's pid: this process dies with it.
    public static func run(configPath: String?, control: Int32, parent: Int32?) -> Int32 {
        if let parent, tern_die_with_parent(parent) != 0 { return 1 }
        var signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]
        let sfd = tern_signalfd(&signals, Int32(signals.count))
        guard sfd >= 0 else { return 1 }
        _ = tern_set_process_title(CommandLine.argc, CommandLine.unsafeArgv, "ternd: lookup")
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(configPath)
        } catch {
            for e in error.errors { Log.error("lookup: \(e.description)") }
            return 1
        }
        do {
            try becomeQueueUser(loaded.configuration)
        } catch {
            Log.error("lookup: \(error)")
            return 1
        }
        let authenticator = Authenticator(users: loaded.users, maxFailures: loaded.configuration.limits.authFailures)
        let resolver = SharedResolver(Daemon.resolver(loaded))
        let group: EventLoopGroup
        do {
            group = try EventLoopGroup(count: 1)
        } catch {
            Log.error("lookup: \(error)")
            return 1
        }
        group.start()
        let loop = group.loops[0]
        let service = Transfer(LookupService(authenticator: authenticator, resolver: resolver, log: { Log.error($0) }))
        Log.info("lookup: ready (pid \(getpid()), uid \(getuid()))")
        defer { group.shutdown() }
        while true {
            var pfds = [pollfd(fd: control, events: Int16(POLLIN), revents: 0), pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            guard poll(&pfds, 2, -1) > 0 else { continue }
            if pfds[1].revents != 0 {
                let sig = tern_signalfd_read(sfd)
                if sig == SIGTERM || sig == SIGINT { return 0 }
                if sig == SIGHUP {
                    do {
                        let fresh = try ConfigLoader.load(configPath)
                        authenticator.replace(fresh.users)
                        authenticator.setMaxFailures(fresh.configuration.limits.authFailures)
                        resolver.replace(Daemon.resolver(fresh))
                        Log.info("lookup: reloaded users and recipient tables")
                    } catch {
                        for e in error.errors { Log.error("lookup: reload refused: \(e.description)") }
                    }
                }
            }
            guard pfds[0].revents != 0 else { continue }
            var fds = [Int32](repeating: -1, count: Int(TERN_MAX_PASSED_FDS))
            var tag: UInt8 = 0
            let n = tern_recv_fds(control, &fds, Int32(fds.count), &tag)
            // The end of the control socket: the parent is gone or stopping.
            if n == 0 { return 0 }
            if n < 0 {
                // A message without descriptors, or with more than fit (none kept): said, not fatal.
                if n == -ENOMSG || n == -EMSGSIZE { Log.error("lookup: a control message without usable descriptors (\(String(cString: strerror(-n))))") }
                if n == -EAGAIN || n == -EINTR || n == -ENOMSG || n == -EMSGSIZE { continue }
                Log.error("lookup: control socket: \(String(cString: strerror(-n)))")
                return 1
            }
            guard tag == UInt8(ascii: "s") else {
                Log.error("lookup: control message with tag \(tag): only smtp channels (s) come here; closed")
                for fd in fds[0..<Int(n)] { close(fd) }
                continue
            }
            let got = Transfer(Array(fds[0..<Int(n)]))
            loop.execute {
                for fd in got.value {
                    do {
                        try service.value.adopt(fd: fd, loop: loop)
                    } catch {
                        Log.error("lookup: cannot serve a channel: \(error)")
                    }
                }
            }
        }
    }

    /// As root: `queue-user` from now on (no supplementary groups, no way back, no_new_privs).
    /// As another user: no change but no_new_privs.
    static func becomeQueueUser(_ c: Configuration) throws(ProcessRoleError) {
        if getuid() == 0 {
            guard let pw = getpwnam(c.queueUser) else { throw .noSuchUser(statement: "queue-user", name: c.queueUser) }
            let rc = tern_drop_privileges(pw.pointee.pw_uid, pw.pointee.pw_gid, nil)
            guard rc == 0 else { throw .confinement("become \(c.queueUser)", errno: -rc) }
        }
        let rc = tern_no_new_privs()
        guard rc == 0 else { throw .confinement("set no_new_privs", errno: -rc) }
    }
}
