// `ternd --role lookup` as a real process, spoken to the way the smtp process will: channels
// passed over its control socket, frames in and out. What a hostile smtp end sends — an oversized
// length, an answer it may not send, a frame cut off — closes that one channel (and is logged);
// the other channels and the process go on. As root, the process runs as `queue-user` with
// no_new_privs.
import CTernSystem
import Config
import Foundation
import Glibc
import IPC
import SMTP
import Testing

/// One end of a channel to the lookup process, read and written without a loop.
final class TestChannel {
    let fd: Int32
    var decoder = FrameDecoder()
    /// The queue's `spoolState` messages come at any time: `next` and `available` keep the last
    /// one here instead of returning it.
    var spoolStates: [IPCMessage] = []

    /// The next decoded message that is not a spool state.
    func decoded() throws(IPCError) -> IPCMessage? {
        while let m = try decoder.next() {
            if case .spoolState = m { spoolStates.append(m); continue }
            return m
        }
        return nil
    }

    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    func send(_ m: IPCMessage) { sendRaw(m.encoded()) }
    func sendRaw(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            // (MSG_NOSIGNAL: a channel the process closed must fail the write, not kill the tests.)
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { off += n } else if errno == EAGAIN || errno == EINTR { usleep(1000) } else { return }
        }
    }

    /// The next message, or nil when the channel closed (or `seconds` passed without one).
    func next(within seconds: Double = 15) -> IPCMessage? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let m = try? decoded() { return m }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = read(fd, &buf, buf.count)
            if n == 0 { return nil }
            if n < 0 { if errno == EAGAIN || errno == EINTR { continue } else { return nil } }
            buf.withUnsafeBytes { decoder.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return nil
    }

    /// The messages already readable, without waiting for more.
    func available() -> [IPCMessage] {
        var out: [IPCMessage] = []
        while true {
            while let m = try? decoded() { out.append(m) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0 else { return out }
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = read(fd, &buf, buf.count)
            guard n > 0 else { return out }
            buf.withUnsafeBytes { decoder.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    /// Whether the other side closed the channel (read returns end of input within `seconds`).
    /// Ends the channel both ways, as a process that died (the descriptor closes at deinit).
    func hangUp() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    func closedByPeer(within seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &buf, buf.count)
            if n == 0 || (n < 0 && errno == ECONNRESET) { return true }
        }
        return false
    }
}

/// One of ternd's child processes (`--role ROLE`) started as ternd's parent starts it: descriptor 3
/// its control socket.
final class RoleUnderTest {
    /// The user-token key the processes under test get (the parent makes a random one).
    static let tokenKey = (0..<32).map { UInt8($0 &* 7 &+ 1) }
    let dir: String
    let pid: pid_t
    let control: Int32
    let role: String

    /// `config` makes the configuration's text from the test folder; `setup` runs before the
    /// process starts.
    init(role: String, config: (String) -> String, setup: (String) throws -> Void = { _ in }) throws {
        self.role = role
        dir = NSTemporaryDirectory() + "tern-\(role)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try config(dir).write(toFile: "\(dir)/tern.conf", atomically: true, encoding: .utf8)
        try setup(dir)
        var pair: [Int32] = [-1, -1]
        guard tern_socketpair(&pair) == 0 else { throw POSIXError(.EMFILE) }
        control = pair[0]
        let logFD = open("\(dir)/\(role).log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let args = [builtBinary("ternd"), "--role", role, "--config", "\(dir)/tern.conf", "--parent-pid", "\(getpid())", "--loops", "2"]
        let argv = args.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { for p in argv { free(p) } }
        var child: pid_t = 0
        // Descriptor 4: the user-token key, as the parent hands it.
        let key = Self.tokenKey.withUnsafeBytes { tern_secret_fd($0.baseAddress, Int32($0.count)) }
        let fds = [null, logFD, logFD, pair[1], key]
        let rc = fds.withUnsafeBufferPointer { tern_spawn(argv[0], argv, envp, $0.baseAddress, 5, &child) }
        close(pair[1])
        close(key)
        close(logFD)
        close(null)
        guard rc == 0 else { throw POSIXError(.ENOEXEC) }
        pid = child
        // Ready when it says so; a process that exits first fails the test with its log.
        let deadline = Date().addingTimeInterval(30)
        while !log.contains("\(role): ready") {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid || Date() > deadline {
                Issue.record("the \(role) process did not start: \(log)")
                throw POSIXError(.ECHILD)
            }
            usleep(10_000)
        }
    }

    /// A new channel: one end passed to the process, the other returned (greeted: hello sent).
    func channel(tag: UInt8 = UInt8(ascii: "s")) throws -> TestChannel {
        var pair: [Int32] = [-1, -1]
        guard tern_socketpair(&pair) == 0 else { throw POSIXError(.EMFILE) }
        var theirs = pair[1]
        let rc = tern_send_fds(control, &theirs, 1, tag)
        close(pair[1])
        guard rc == 0 else {
            close(pair[0])
            throw POSIXError(.EPIPE)
        }
        return TestChannel(pair[0])
    }

    /// /proc says this process runs as `uid` with no_new_privs, no capability and its title.
    func expectConfined(as uid: uid_t) throws {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        #expect(status.contains("Uid:\t\(uid)\t\(uid)\t\(uid)\t\(uid)"), "\(status)")
        #expect(status.contains("NoNewPrivs:\t1"), "\(status)")
        #expect(status.contains("CapEff:\t0000000000000000"), "\(status)")
        let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        #expect(cmdline.hasPrefix("ternd: \(role)"), "\(cmdline)")
    }

    /// Adds alice@example.test (password s3cret) to the users file of the test's configuration.
    static func addAlice(_ dir: String) throws {
        let add = try run("/bin/sh", ["-c", "printf '%s\\n' s3cret | '\(ternctlPath)' user add alice@example.test --config '\(dir)/tern.conf'"])
        guard add.status == 0 else { throw POSIXError(.EINVAL) }
    }

    var isRunning: Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    var log: String { (try? String(contentsOfFile: "\(dir)/\(role).log", encoding: .utf8)) ?? "" }

    /// Closes the control socket (as a parent that is gone) and waits for the exit status.
    func stop() -> Int32 {
        close(control)
        var status: Int32 = 0
        for _ in 0..<500 {
            if waitpid(pid, &status, WNOHANG) == pid { return status }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        return -1
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }
}

/// The lookup process with one domain and a users file holding alice (password s3cret).
func LookupUnderTest() throws -> RoleUnderTest {
    try RoleUnderTest(
        role: "lookup",
        config: { dir in
            """
            hostname mx.example.test
            spool \(dir)/spool
            listen smtp 127.0.0.1:2525
            deliver maildir \(dir)/mail/%{domain}/%{user}
            domain example.test {
                users \(dir)/example.test.users
            }
            """
        },
        setup: RoleUnderTest.addAlice)
}

@Suite("the lookup process over IPC", .serialized)
struct LookupProcessTests {
    /// An `accepted` answer to `request` (whatever its token).
    func accepted(_ m: IPCMessage?, _ request: UInt32) -> Bool {
        if case .authAnswer(request, .accepted, _)? = m { return true }
        return false
    }

    func greet(_ c: TestChannel) {
        c.send(.hello(version: IPCMessage.version, role: .smtp))
        #expect(c.next() == .hello(version: IPCMessage.version, role: .lookup))
    }

    @Test("answers recipients, AUTH and sender checks; a hostile channel is closed alone")
    func answersAndContainsHostileChannels() throws {
        let p = try LookupUnderTest()
        let a = try p.channel()
        greet(a)
        let alice = Destination.mailbox(user: "alice", domain: try Domain("example.test"))
        a.send(.resolveRecipient(request: 1, recipient: "alice+tag@example.test"))
        #expect(a.next() == .resolved(request: 1, .deliver([alice])))
        a.send(.resolveRecipient(request: 2, recipient: "nobody@example.test"))
        #expect(a.next() == .resolved(request: 2, .unknownUser))
        a.send(.resolveRecipient(request: 3, recipient: "x@elsewhere.test"))
        #expect(a.next() == .resolved(request: 3, .notLocal))
        a.send(.authCheck(request: 4, user: "alice@example.test", password: Array("s3cret".utf8), client: "127.0.0.9"))
        // Accepted with a token for that user, made with the key lookup was handed.
        let now = Int64(time(nil))
        guard case .authAnswer(4, .accepted, let token)? = a.next() else {
            Issue.record("alice not accepted")
            return
        }
        #expect(UserToken.holds(token, key: RoleUnderTest.tokenKey, user: "alice@example.test", now: now))
        #expect(!UserToken.holds(token, key: RoleUnderTest.tokenKey, user: "bob@example.test", now: now), "for alice only")
        #expect(!UserToken.holds(token, key: UserToken.newKey(), user: "alice@example.test", now: now), "with lookup's key only")
        #expect(!UserToken.holds(token, key: RoleUnderTest.tokenKey, user: "alice@example.test", now: now + UserToken.lifetime + 10), "until it expires")
        a.send(.authCheck(request: 5, user: "alice@example.test", password: Array("guess".utf8), client: "127.0.0.9"))
        #expect(a.next() == .authAnswer(request: 5, .refused))
        a.send(.senderCheck(request: 6, user: "alice@example.test", sender: "alice@example.test"))
        #expect(a.next() == .senderAnswer(request: 6, allowed: true))
        a.send(.senderCheck(request: 7, user: "alice@example.test", sender: "boss@elsewhere.test"))
        #expect(a.next() == .senderAnswer(request: 7, allowed: false))

        // An oversized length.
        let b = try p.channel()
        greet(b)
        b.sendRaw([0xff, 0xff, 0xff, 0xff, 12])
        #expect(b.closedByPeer(), "an oversized frame closes the channel")
        // An answer smtp may not send; a request before hello; a frame cut off at the end.
        let c = try p.channel()
        greet(c)
        c.send(.resolved(request: 1, .notLocal))
        #expect(c.closedByPeer(), "an answer from smtp closes the channel")
        let d = try p.channel()
        d.send(.resolveRecipient(request: 1, recipient: "alice@example.test"))
        #expect(d.next() == .hello(version: IPCMessage.version, role: .lookup))
        #expect(d.closedByPeer(), "a request before hello closes the channel")
        let e = try p.channel()
        greet(e)
        e.sendRaw(Array(IPCMessage.resolveRecipient(request: 1, recipient: "alice@example.test").encoded().dropLast(3)))
        shutdown(e.fd, Int32(SHUT_WR))
        #expect(e.closedByPeer(), "a frame cut off by the end of input closes the channel")
        // Random bytes after hello.
        var rng = SystemRandomNumberGenerator()
        let f = try p.channel()
        greet(f)
        f.sendRaw((0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) })
        #expect(f.closedByPeer(), "random bytes close the channel")

        // Descriptors that are not channels: a regular file and a pipe; and an unknown tag.
        var file = open("\(p.dir)/tern.conf", O_RDONLY | O_CLOEXEC)
        #expect(tern_send_fds(p.control, &file, 1, UInt8(ascii: "s")) == 0)
        close(file)
        var pipeEnds: [Int32] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)
        #expect(tern_send_fds(p.control, &pipeEnds, 2, UInt8(ascii: "s")) == 0)
        close(pipeEnds[0])
        close(pipeEnds[1])
        let g = try p.channel(tag: UInt8(ascii: "q"))
        #expect(g.closedByPeer(), "a channel passed with an unknown tag is closed")

        // Nothing else broke: the first channel and the process go on.
        a.send(.resolveRecipient(request: 8, recipient: "alice@example.test"))
        #expect(a.next() == .resolved(request: 8, .deliver([alice])))
        #expect(p.isRunning)
        let log = p.log
        #expect(log.contains("lookup: closed a channel from smtp: protocol error"), "\(log)")
        #expect(log.components(separatedBy: "closed a channel from smtp").count - 1 >= 4, "\(log)")
        // (The refusals of the file and the pipe are logged on the process's loop: wait for them.)
        #expect(waitFor(10) { p.log.contains("not a Unix stream socket") && p.log.contains("with tag 113") }, "\(p.log)")
        #expect(p.stop() == 0, "a closed control socket stops it in order")
    }

    @Test("a channel flooding AUTH checks does not starve another: the checks are taken in turn")
    func authChecksTakenInTurn() throws {
        let p = try LookupUnderTest()
        let flood = try p.channel()
        greet(flood)
        let other = try p.channel()
        greet(other)
        // 300 checks that hold (answered as soon as each is checked), each from its own client
        // so no failure limit applies; then one on the other channel.
        let n: UInt32 = 300
        for r in 1...n {
            flood.send(.authCheck(request: r, user: "alice@example.test", password: Array("s3cret".utf8), client: "10.1.\(r / 256).\(r % 256)"))
        }
        other.send(.authCheck(request: 1, user: "alice@example.test", password: Array("s3cret".utf8), client: "10.2.0.1"))
        #expect(accepted(other.next(within: 120), 1))
        // Taken in turn, the other channel's check waits for at most one check per thread of
        // the flood; taken in order of arrival it would wait for all 300.
        // (What the flood's socket holds when that answer is read was sent before it, give or
        // take the microseconds between the two reads.)
        let before = flood.available().filter { if case .authAnswer(_, .accepted, _) = $0 { return true } else { return false } }.count
        #expect(before < 50, "\(before) of the flood's checks were answered before the other channel's one")
        // Closing the flooding channel drops what it still has waiting: the other channel's next
        // check is answered without waiting behind the rest of the flood.
        shutdown(flood.fd, Int32(SHUT_RDWR))
        #expect(waitFor(30) { p.log.contains("AUTH check(s) still waiting dropped") }, "\(p.log)")
        other.send(.authCheck(request: 2, user: "alice@example.test", password: Array("s3cret".utf8), client: "10.2.0.1"))
        #expect(accepted(other.next(within: 120), 2))
        #expect(p.isRunning)
        #expect(p.stop() == 0)
    }

    @Test("as root it runs as queue-user, with no_new_privs and the title ps shows")
    func confined() throws {
        guard getuid() == 0, let pw = getpwnam("_ternq") else { return }
        let p = try LookupUnderTest()
        let a = try p.channel()
        greet(a)  // (so it is past its start-up)
        try p.expectConfined(as: pw.pointee.pw_uid)
        #expect(p.stop() == 0)
    }
}
