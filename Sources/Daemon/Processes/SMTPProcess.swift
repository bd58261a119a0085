// `ternd --role smtp`: the network-facing process (SMTPService). Started by ternd's parent with
// its descriptors in place: 3 the control socket, then the listening sockets (listener j's
// socket for loop i at 4 + j * loops + i), then one channel to lookup per loop, then one to the
// queue per loop. It reads the configuration, the certificates and their keys, adopts its
// channels, and — started as root — confines itself before it accepts a connection: chrooted to
// an empty folder, `user` with no capabilities and no way back, `no_new_privs`. It stops when the
// control socket closes (the parent is gone) or on SIGTERM (draining); the parent replaces it
// on a reload (a new smtp starts, this one drains), since in its chroot it cannot read the
// configuration again.
import CTernSystem
import Config
import Glibc
import Reactor

public enum SMTPProcess {
    /// The folder smtp is chrooted to: empty, root's, not writable by anyone else.
    public static let emptyRoot = "/run/tern/empty"

    /// - Parameter replacing: started by a reload, to replace a running smtp process.
    /// - Parameter kinds: the kind of each listening socket the parent bound, in order (those of
    ///   the configuration ternd started with: a reload cannot change the listeners).
    public static func run(configPath: String?, control: Int32, parent: Int32?, loops: Int, kinds: [String], ioBackend: IOBackendKind?, replacing: Bool = false) -> Int32 {
        // For the seccomp test only (TERN_TEST_SECCOMP_PROBE=1 in ternd's environment): SIGUSR1
        // makes smtp call mount(2), as an exploited parser would, so the test sees the filter
        // kill the real process. Without the variable SIGUSR1 is not taken.
        let probe = RoleProcess.seccompProbe
        let sfd = RoleProcess.begin(title: "ternd: smtp", parent: parent, moreSignals: probe ? [SIGUSR1] : [])
        guard sfd >= 0, loops > 0 else { return 1 }
        signal(SIGPIPE, SIG_IGN)
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(configPath, parts: .smtp)
        } catch {
            for e in error.errors { Log.error("smtp: \(e.description)") }
            return 1
        }
        let listenerKinds = kinds.compactMap(Configuration.ListenerKind.init(rawValue:))
        guard listenerKinds.count == kinds.count else {
            Log.error("smtp: unknown listener kinds in \(kinds)")
            return 1
        }
        let listeners = kinds.count
        let first = control + 1
        let sockets = (0..<listeners).map { j in (0..<loops).map { i in first + Int32(j * loops + i) } }
        let lookup = (0..<loops).map { first + Int32(listeners * loops + $0) }
        let queue = (0..<loops).map { first + Int32(listeners * loops + loops + $0) }
        let service: SMTPService
        do {
            service = try SMTPService(loaded, loops: loops, ioBackend: ioBackend)
            try service.start(lookup: lookup, queue: queue)
            try confine(loaded.configuration, parent: parent)
            try service.listen(sockets, kinds: listenerKinds, reloaded: replacing)
        } catch {
            Log.error("smtp: cannot start: \(error)")
            return 1
        }
        Log.info("smtp: ready (pid \(getpid()), uid \(getuid()), \(loops) loop(s))")
        RoleProcess.tell(control, .ready)
        while true {
            var pfds = [pollfd(fd: control, events: Int16(POLLIN), revents: 0), pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            guard poll(&pfds, 2, -1) > 0 else { continue }
            if pfds[1].revents != 0 {
                let sig = tern_signalfd_read(sfd)
                if sig == SIGTERM || sig == SIGINT {
                    // With the queue or lookup gone no session can finish a message: no grace.
                    service.drain(grace: service.isBroken ? 0 : 10)
                    return 0
                }
                if sig == SIGUSR1, probe {
                    Log.info("smtp: TERN_TEST_SECCOMP_PROBE: calling mount(2)")
                    _ = tern_probe_forbidden_call()
                }
                // SIGHUP: a new smtp process with the new configuration listens already; this one
                // stops listening and lets its sessions end as they would (at most the session
                // time limit), then stops.
                if sig == SIGHUP {
                    Log.info("smtp: replaced by a reload: no new connections; sessions in flight finish")
                    service.drain(grace: Double(loaded.configuration.limits.sessionTimeout)) { RoleProcess.tell(control, .reloaded) }
                    return 0
                }
            }
            if pfds[0].revents != 0 {
                var b: UInt8 = 0
                if recv(control, &b, 1, Int32(MSG_DONTWAIT)) == 0 {
                    // The parent is gone: nobody supervises us; stop in order.
                    service.drain(grace: 0)
                    return 0
                }
            }
        }
    }

    /// As root: chrooted to `emptyRoot`, `user` from now on. Always: no_new_privs and the seccomp
    /// allowlist (as another user the split stays; the chroot and the user change need root).
    /// The courier process is confined the same way (`name` says which in errors).
    static func confine(_ c: Configuration, parent: Int32?, as name: String = "smtp") throws(ProcessRoleError) {
        if getuid() == 0 {
            guard let pw = getpwnam(c.user) else { throw .noSuchUser(statement: "user", name: c.user) }
            // Times are formatted in UTC, but the C library reads the zone once, here, not in the chroot.
            tzset()
            try makeEmptyRoot()
            let rc = tern_drop_privileges(pw.pointee.pw_uid, pw.pointee.pw_gid, emptyRoot)
            guard rc == 0 else { throw .confinement("confine \(name) as \(c.user) in \(emptyRoot)", errno: -rc) }
            try RoleProcess.dieWithParentAgain(parent)
        }
        // no_new_privs, then the filter on every thread (TSYNC): from here on a call off the list
        // kills the process with SIGSYS, and the parent restarts it.
        let rc = allowedCalls.withUnsafeBufferPointer { allowed in
            refusedCalls.withUnsafeBufferPointer { refused in
                tern_seccomp_filter(allowed.baseAddress, Int32(allowed.count), refused.baseAddress, Int32(refused.count), EACCES)
            }
        }
        guard rc == 0 else { throw .confinement("install \(name)'s seccomp filter", errno: -rc) }
    }

    /// The system calls smtp may make once confined (seccomp, on every thread): what the
    /// reactor (epoll or io_uring), TLS, the DNS stub and the Swift runtime use. Made from
    /// `strace -f` of a confined smtp under plain, pipelined, BDAT, STARTTLS, implicit-TLS and
    /// AUTH sessions, large messages, a reload, a drain and a queue that died, on both
    /// backends, then widened by the calls of the same families (the vectored and timed
    /// variants). Nothing here opens a file, starts a program, changes an identity or a mount,
    /// or creates a listening socket.
    static let allowedCalls: [Int32] = [
        SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_close, SYS_lseek,
        SYS_fstat, SYS_newfstatat, SYS_statx, SYS_fcntl,
        SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap, SYS_madvise, SYS_brk, SYS_membarrier,
        SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack, SYS_restart_syscall,
        SYS_poll, SYS_ppoll, SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_epoll_ctl,
        SYS_io_uring_enter, SYS_io_uring_register,
        SYS_socket, SYS_connect, SYS_accept4, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg, SYS_recvmmsg,
        SYS_shutdown, SYS_getsockopt, SYS_setsockopt, SYS_getsockname, SYS_getpeername,
        SYS_futex, SYS_futex_waitv, SYS_set_robust_list, SYS_rseq, SYS_clone, SYS_clone3, SYS_exit, SYS_exit_group,
        SYS_gettid, SYS_getpid, SYS_getppid, SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid, SYS_tgkill,
        SYS_sched_yield, SYS_sched_getaffinity, SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime, SYS_clock_getres,
        SYS_gettimeofday, SYS_getrandom, SYS_prctl, SYS_uname, SYS_getrlimit, SYS_prlimit64, SYS_eventfd2, SYS_timerfd_settime,
    ].map { Int32($0) }

    /// Calls a library may try harmlessly in the chroot (malloc reads /proc/sys/vm/overcommit_memory,
    /// isatty() asks the terminal, the Swift runtime starts its crash reporter): they fail with
    /// EACCES instead of killing smtp, so a crash keeps its own signal in the parent's log.
    static let refusedCalls: [Int32] = [
        SYS_open, SYS_openat, SYS_openat2, SYS_stat, SYS_lstat, SYS_access, SYS_faccessat, SYS_faccessat2, SYS_readlink, SYS_readlinkat,
        SYS_ioctl, SYS_execve, SYS_execveat, SYS_fork, SYS_vfork,
    ].map { Int32($0) }

    /// The chroot folder: made when missing; refused unless it is root's, mode 0755 or stricter
    /// and empty.
    static func makeEmptyRoot() throws(ProcessRoleError) {
        _ = mkdir("/run/tern", 0o755)
        if mkdir(emptyRoot, 0o555) != 0, errno != EEXIST { throw .confinement("create \(emptyRoot)", errno: errno) }
        var st = stat()
        guard lstat(emptyRoot, &st) == 0 else { throw .confinement("look at \(emptyRoot)", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFDIR, st.st_uid == 0, st.st_mode & 0o022 == 0 else {
            throw .confinement("use \(emptyRoot) (not a folder of root's that only root may write)", errno: EPERM)
        }
        guard let d = opendir(emptyRoot) else { throw .confinement("read \(emptyRoot)", errno: errno) }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { throw .confinement("use \(emptyRoot) (it is not empty)", errno: ENOTEMPTY) }
        }
    }
}
