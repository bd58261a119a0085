// `ternd --role lookup`: the process that holds the users files and the recipient tables
// (LookupService). Started by ternd's parent with a control socket on descriptor 3, over which
// the parent passes it one end of each smtp channel (SCM_RIGHTS, tag "s"). As root it becomes
// `queue-user` once the configuration and the users files are read; then a seccomp filter
// (`tern_seccomp_no_network`) refuses it any socket but a Unix one, running a program and
// io_uring: it cannot reach the network. It stops when the control socket closes (the parent
// is gone), on SIGTERM or SIGINT; SIGHUP reads the configuration again.
import CTernSystem
import Config
import Glibc
import IPC
import Reactor

public enum LookupProcess {
    /// Runs until the control socket closes or a stop signal comes; returns the exit status.
    /// - Parameters:
    ///   - configPath: the configuration file (nil: the embedded default), read again on SIGHUP.
    ///   - control: the parent's control socket.
    ///   - parent: the parent's pid: this process dies with it.
    public static func run(configPath: String?, control: Int32, parent: Int32?) -> Int32 {
        // (The seccomp test: SIGUSR1 makes lookup try to open an IPv4 socket and log what came of it.)
        let probe = RoleProcess.seccompProbe
        let sfd = RoleProcess.begin(title: "ternd: lookup", parent: parent, moreSignals: probe ? [SIGUSR1] : [])
        guard sfd >= 0 else { return 1 }
        guard let tokenKey = RoleProcess.tokenKey("lookup") else { return 1 }
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(configPath, parts: .lookup)
        } catch {
            for e in error.errors { Log.error("lookup: \(e.description)") }
            return 1
        }
        do {
            try RoleProcess.becomeQueueUser(loaded.configuration, parent: parent)
            // (Before any loop or thread: the event loops then run on epoll, io_uring refused.)
            let rc = tern_seccomp_no_network(EACCES)
            guard rc == 0 else { throw ProcessRoleError.confinement("install lookup's seccomp filter", errno: -rc) }
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
        let service = Transfer(LookupService(authenticator: authenticator, resolver: resolver, tokenKey: tokenKey, log: { Log.error($0) }))
        Log.info("lookup: ready (pid \(getpid()), uid \(getuid()))")
        defer { group.shutdown() }
        return RoleProcess.serve(
            name: "lookup", control: control, signals: sfd,
            channels: { fds in
                let got = Transfer(fds)
                loop.execute {
                    for fd in got.value {
                        do {
                            try service.value.adopt(fd: fd, loop: loop)
                        } catch {
                            Log.error("lookup: cannot serve a channel: \(error)")
                        }
                    }
                }
            },
            reload: {
                do throws(ConfigErrors) {
                    let fresh = try ConfigLoader.load(configPath, parts: .lookup)
                    authenticator.replace(fresh.users)
                    authenticator.setMaxFailures(fresh.configuration.limits.authFailures)
                    resolver.replace(Daemon.resolver(fresh))
                    Log.info("lookup: reloaded users and recipient tables")
                    return true
                } catch {
                    for e in error.errors { Log.error("lookup: reload refused: \(e.description)") }
                    return false
                }
            },
            other: { sig in
                guard sig == SIGUSR1, probe else { return }
                let r = tern_probe_network()
                Log.info("lookup: TERN_TEST_SECCOMP_PROBE: socket(AF_INET): \(r == 0 ? "made" : "refused: \(String(cString: strerror(Int32(-r))))")")
            })
    }
}
