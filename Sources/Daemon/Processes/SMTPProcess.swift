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
        let sfd = RoleProcess.begin(title: "ternd: smtp", parent: parent)
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
                // SIGHUP: a new smtp process with the new configuration listens already; this one
                // stops listening and lets its sessions end as they would (at most the session
                // time limit), then stops.
                if sig == SIGHUP {
                    Log.info("smtp: replaced by a reload: no new connections; sessions in flight finish")
                    service.drain(grace: Double(loaded.configuration.limits.sessionTimeout))
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

    /// As root: chrooted to `emptyRoot`, `user` from now on, no_new_privs. As another user:
    /// no_new_privs only (the split stays, the confinement needs root).
    static func confine(_ c: Configuration, parent: Int32?) throws(ProcessRoleError) {
        if getuid() == 0 {
            guard let pw = getpwnam(c.user) else { throw .noSuchUser(statement: "user", name: c.user) }
            // Times are formatted in UTC, but the C library reads the zone once, here, not in the chroot.
            tzset()
            try makeEmptyRoot()
            let rc = tern_drop_privileges(pw.pointee.pw_uid, pw.pointee.pw_gid, emptyRoot)
            guard rc == 0 else { throw .confinement("confine smtp as \(c.user) in \(emptyRoot)", errno: -rc) }
            try RoleProcess.dieWithParentAgain(parent)
        }
        let rc = tern_no_new_privs()
        guard rc == 0 else { throw .confinement("set no_new_privs", errno: -rc) }
    }

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
