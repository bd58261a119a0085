// What ternd's child processes share: dying with the parent, the process title, becoming
// `queue-user`, and the control socket over which the parent passes channels (SCM_RIGHTS, tag
// "s" for an smtp channel, "c" for a courier's) while signals come from a signalfd.
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

enum RoleProcess {
    /// The first steps of every child: die with `parent`, block the stop and reload signals into a
    /// signalfd (returned; -1 on failure), take `title` for `ps`.
    static func begin(title: String, parent: Int32?, moreSignals: [Int32] = []) -> Int32 {
        if let parent, tern_die_with_parent(parent) != 0 { return -1 }
        // What the parent placed (the control socket, smtp's sockets and channels) is ours alone:
        // a delivery command this process starts never inherits it.
        tern_cloexec_from(3)
        var signals: [Int32] = [SIGINT, SIGTERM, SIGHUP] + moreSignals
        let sfd = tern_signalfd(&signals, Int32(signals.count))
        guard sfd >= 0 else { return -1 }
        _ = tern_set_process_title(CommandLine.argc, CommandLine.unsafeArgv, title)
        return sfd
    }

    /// For the seccomp tests only: TERN_TEST_SECCOMP_PROBE=1 in ternd's environment makes smtp
    /// and lookup take SIGUSR1 and try, as an exploited process would, what their filters refuse.
    static var seccompProbe: Bool { getenv("TERN_TEST_SECCOMP_PROBE").map { String(cString: $0) == "1" } ?? false }

    /// The key of lookup's user tokens the parent handed `name` as descriptor 4; nil (said)
    /// when there is none.
    static func tokenKey(_ name: String) -> [UInt8]? {
        guard let key = UserToken.readKey() else {
            Log.error("\(name): no token key on descriptor \(UserToken.keyDescriptor) (ternd starts its own processes; do not use --role by hand)")
            return nil
        }
        return key
    }

    /// As root: `queue-user` from now on (no supplementary groups, no way back, no_new_privs).
    /// As another user: no change but no_new_privs.
    static func becomeQueueUser(_ c: Configuration, parent: Int32?) throws(ProcessRoleError) {
        if getuid() == 0 {
            guard let pw = getpwnam(c.queueUser) else { throw .noSuchUser(statement: "queue-user", name: c.queueUser) }
            let rc = tern_drop_privileges(pw.pointee.pw_uid, pw.pointee.pw_gid, nil)
            guard rc == 0 else { throw .confinement("become \(c.queueUser)", errno: -rc) }
            try dieWithParentAgain(parent)
        }
        let rc = tern_no_new_privs()
        guard rc == 0 else { throw .confinement("set no_new_privs", errno: -rc) }
    }

    /// What a child tells the parent on its control socket (one byte each).
    enum Note: UInt8 {
        /// Started: serving its channels (or, for smtp, listening).
        case ready = 82  // R
        /// Done with a SIGHUP.
        case reloaded = 72  // H
        /// A SIGHUP whose configuration it refused (its log says why): it keeps the old one.
        case refused = 70  // F
    }

    static func tell(_ control: Int32, _ note: Note) {
        var b = note.rawValue
        _ = send(control, &b, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
    }

    /// A change of user clears the parent-death signal (prctl(2)): set again after one.
    static func dieWithParentAgain(_ parent: Int32?) throws(ProcessRoleError) {
        guard let parent else { return }
        let rc = tern_die_with_parent(parent)
        guard rc == 0 else { throw .confinement("die with the parent", errno: -rc) }
    }

    /// Serves `fd`, passed by the parent, as a channel on `loop` (its thread only); anything
    /// but a connected Unix stream socket is closed and refused.
    static func adoptChannel(fd: Int32, loop: EventLoop, rules: ChannelGuard, delegate: IPCChannelDelegate) throws(ReactorError) -> IPCChannel {
        guard isUnixStream(fd) else {
            close(fd)
            throw .syscall("a channel that is not a Unix stream socket", errno: ENOTSOCK)
        }
        return try IPCChannel(loop: loop, fd: fd, rules: rules, delegate: delegate)
    }

    /// Only a connected Unix stream socket is a channel.
    static func isUnixStream(_ fd: Int32) -> Bool {
        var type: Int32 = 0, domain: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        var len2 = len
        return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == Int32(SOCK_STREAM.rawValue)
            && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len2) == 0 && domain == AF_UNIX
    }

    /// Serves the control socket until it closes (the parent is gone: 0), a stop signal comes (0)
    /// or the socket fails (1). `channels` gets the descriptors of each smtp channel passed (tag
    /// "s"), `courierChannels` those of a courier's (tag "c") when given; anything else passed is
    /// closed and logged. `reload` runs on SIGHUP, `other` on any other signal the signalfd takes.
    static func serve(name: String, control: Int32, signals sfd: Int32, channels: ([Int32]) -> Void, courierChannels: (([Int32]) -> Void)? = nil, reload: () -> Bool, other: (Int32) -> Void = { _ in }) -> Int32 {
        tell(control, .ready)
        while true {
            var pfds = [pollfd(fd: control, events: Int16(POLLIN), revents: 0), pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            guard poll(&pfds, 2, -1) > 0 else { continue }
            if pfds[1].revents != 0 {
                let sig = tern_signalfd_read(sfd)
                if sig == SIGTERM || sig == SIGINT { return 0 }
                if sig == SIGHUP { tell(control, reload() ? .reloaded : .refused) } else if sig > 0 { other(sig) }
            }
            guard pfds[0].revents != 0 else { continue }
            var fds = [Int32](repeating: -1, count: Int(TERN_MAX_PASSED_FDS))
            var tag: UInt8 = 0
            let n = tern_recv_fds(control, &fds, Int32(fds.count), &tag)
            // The end of the control socket: the parent is gone or stopping (a reset: it closed
            // with our notes unread).
            if n == 0 || n == -ECONNRESET { return 0 }
            if n < 0 {
                // A message without descriptors, or with more than fit (none kept): said, not fatal.
                if n == -ENOMSG || n == -EMSGSIZE { Log.error("\(name): a control message without usable descriptors (\(String(cString: strerror(-n))))") }
                if n == -EAGAIN || n == -EINTR || n == -ENOMSG || n == -EMSGSIZE { continue }
                Log.error("\(name): control socket: \(String(cString: strerror(-n)))")
                return 1
            }
            let passed = Array(fds[0..<Int(n)])
            if tag == UInt8(ascii: "s") {
                channels(passed)
            } else if tag == UInt8(ascii: "c"), let courierChannels {
                courierChannels(passed)
            } else {
                Log.error("\(name): control message with tag \(tag): only \(courierChannels == nil ? "smtp channels (s)" : "smtp (s) and courier (c) channels") come here; closed")
                for fd in passed { close(fd) }
            }
        }
    }
}
