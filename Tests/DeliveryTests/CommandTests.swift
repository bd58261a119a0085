import Delivery
import Foundation
import Glibc
import Testing

@Suite("Command delivery (MDA and pipe aliases)", .serialized)
struct CommandTests {
    init() { signal(SIGPIPE, SIG_IGN) }

    func temp() -> String { FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(UUID().uuidString)").path }

    @Test("the message arrives on stdin, placeholders fill single arguments, the environment is set")
    func success() throws {
        let dir = temp()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let argv = CommandDelivery.expand(
            ["/bin/sh", "-c", "cat > \"$0\"; echo \"$SENDER $RECIPIENT\" > \"$0.env\"", "\(dir)/%{user}@%{domain}"],
            user: "bob smith", domain: "example.test", rcpt: "bob@example.test", sender: "a@b.example")
        #expect(argv[3] == "\(dir)/bob smith@example.test", "a value with a space stays one argument")
        let r = CommandDelivery.run(argv, input: Array("hello\r\n".utf8), environment: ["SENDER": "a@b.example", "RECIPIENT": "bob@example.test"], timeout: 10)
        #expect(r == .success("/bin/sh exit 0"))
        #expect(try String(contentsOfFile: "\(dir)/bob smith@example.test", encoding: .utf8) == "hello\r\n")
        #expect(try String(contentsOfFile: "\(dir)/bob smith@example.test.env", encoding: .utf8) == "a@b.example bob@example.test\n")
    }

    @Test("exit 75 is temporary, other statuses permanent with the command's words, a timeout temporary")
    func statuses() {
        #expect(CommandDelivery.run(["/bin/sh", "-c", "exit 75"], input: [1], timeout: 10) == .failure(.temporary("/bin/sh exit 75 (try again later)")))
        #expect(CommandDelivery.run(["/bin/sh", "-c", "echo no such user >&2; exit 67"], input: [1], timeout: 10) == .failure(.permanent("/bin/sh exit 67: no such user")))
        let start = Date()
        #expect(CommandDelivery.run(["/bin/sleep", "30"], input: [], timeout: 0.5) == .failure(.temporary("/bin/sleep timed out after 0 s")))
        #expect(Date().timeIntervalSince(start) < 5)
        if case .failure(.permanent) = CommandDelivery.run(["/nonexistent/mda"], input: [1], timeout: 1) {} else { Issue.record("a missing program is permanent") }
        #expect(CommandDelivery.run(["relative/mda"], input: [1], timeout: 1) == .failure(.permanent("the command must be an absolute path")))
    }

    @Test("the command starts with no signal blocked and SIGPIPE at its default, whatever ternd blocks or ignores")
    func signalState() throws {
        // As in ternd: SIGTERM and SIGHUP blocked (they are read from a signalfd), SIGPIPE ignored.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGHUP)
        var old = sigset_t()
        pthread_sigmask(SIG_BLOCK, &set, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        let out = temp()
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = CommandDelivery.run(["/bin/sh", "-c", "exec grep -E '^Sig(Blk|Ign)' /proc/self/status > \"$0\"", out], input: [], timeout: 10)
        #expect(r == .success("/bin/sh exit 0"))
        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.contains("SigBlk:\t0000000000000000"), "\(lines)")
        let ignored = lines.first { $0.hasPrefix("SigIgn:") }.flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        #expect(ignored.map { $0 & (1 << (UInt64(SIGPIPE) - 1)) == 0 } == true, "SIGPIPE ignored in the command: \(lines)")
    }

    @Test("a command that does not read its input neither hangs nor kills us")
    func unreadInput() {
        let big = [UInt8](repeating: 65, count: 4 << 20)
        #expect(CommandDelivery.run(["/bin/true"], input: big, timeout: 10) == .success("/bin/true exit 0"))
    }
}
