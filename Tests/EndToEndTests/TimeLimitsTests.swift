// Hostile clients against the session's time limits (issue 16, item 9): a byte at a time, a
// client that never reads, a session that never ends. Each must be closed, and logged.
import Foundation
import Testing

@Suite("ternd: time limits against hostile clients", .serialized)
struct TimeLimitsTests {
    static let limits = "limits {\ncommand-timeout 2s\ndata-timeout 2s\nwrite-timeout 2s\nsession-timeout 6s\nmin-data-rate 500\n}"

    func python(_ script: String, timeout: TimeInterval = 60) throws -> String {
        let r = try run(try #require(which("python3")), ["-c", script], timeout: timeout)
        #expect(r.status == 0, "\(r)")
        return r.out
    }

    @Test("200 sessions each trickling a byte a second into a command: all closed at the command timeout with 421 4.4.2, each logged")
    func tricklingCommands() throws {
        let t = try TerndProcess(extraConfig: Self.limits)
        defer { t.cleanUp() }
        try t.start()
        let out = try python("""
            import socket, time, select
            socks = []
            for i in range(200):
                s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=10)
                s.recv(200)
                socks.append(s)
            start = time.time()
            open_ = set(socks)
            closed_with_421 = 0
            while open_ and time.time() - start < 30:
                for s in list(open_):
                    try:
                        s.send(b"N")
                    except OSError:
                        open_.discard(s)
                r, _, _ = select.select(list(open_), [], [], 1.0)
                for s in r:
                    try:
                        d = s.recv(4096)
                    except OSError:
                        d = b""
                    if b"421 4.4.2" in d:
                        closed_with_421 += 1
                    if d == b"" or b"421" in d:
                        open_.discard(s)
            print(len(open_), closed_with_421, round(time.time() - start, 1))
            """)
        let parts = out.split(separator: " ").map(String.init)
        #expect(parts.first == "0", "sessions still open: \(out)")
        // Not all 200 clients can read the 421: one that sends its next byte after ternd closed
        // gets a reset, which may drop the reply still unread in its buffer (seen: 187 of 200 on
        // a loaded machine). The log below is the count that must be whole.
        #expect(parts.count > 1 && Int(parts[1]) ?? 0 >= 100, "told 421 4.4.2: \(out)")
        #expect(waitFor(10) { lines(t, "command timeout: no whole command in 2 s").count == 200 }, "\(lines(t, "closed client").count) logged")
        #expect(t.stop() == 0)
    }

    @Test("message data trickled under the minimum rate is cut at the data timeout and never delivered; data just over the rate is taken")
    func dataRate() throws {
        let t = try TerndProcess(extraConfig: Self.limits)
        defer { t.cleanUp() }
        try t.start()
        let slow = try python("""
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=20)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO c.test\\r\\nMAIL FROM:<a@b.example>\\r\\nRCPT TO:<bob@example.test>\\r\\nDATA\\r\\n")
            for _ in range(4): f.readline()
            while True:
                l = f.readline()
                if not l.startswith(b"250-"): break
            reply = b""
            start = time.time()
            while time.time() - start < 20:
                try:
                    s.send(b"x")
                except OSError:
                    break
                time.sleep(0.5)
                s.setblocking(False)
                try:
                    d = s.recv(4096)
                    reply += d
                    if d == b"" or b"421" in d: break
                except BlockingIOError:
                    pass
                s.setblocking(True)
            print(reply.decode(errors="replace").strip(), round(time.time() - start, 1))
            """)
        #expect(slow.contains("421 4.4.2"), "\(slow)")
        #expect(waitFor(10) { t.log.contains("data timeout: under 500 bytes/s for 2 s") }, "\(t.log)")
        // 1,000 bytes a second for 5 s (over the rate, longer than the data timeout): taken.
        let steady = try python("""
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=20)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO c.test\\r\\n")
            while not f.readline().startswith(b"250 "): pass
            s.sendall(b"MAIL FROM:<a@b.example>\\r\\nRCPT TO:<bob@example.test>\\r\\nDATA\\r\\n")
            for _ in range(3): f.readline()
            s.sendall(b"Subject: steady\\r\\n\\r\\n")
            for _ in range(10):
                s.sendall(b"y" * 498 + b"\\r\\n")
                time.sleep(0.5)
            s.sendall(b".\\r\\n")
            print(f.readline().decode().strip())
            """)
        #expect(steady.hasPrefix("250 2.0.0"), "\(steady)")
        #expect(waitFor(20) { t.mailbox("bob").count == 1 }, "only the steady one is delivered: \(t.log)")
        #expect(t.mailbox("bob").count == 1)
        #expect(t.stop() == 0)
    }

    @Test("a client that pipelines megabytes of commands and never reads a reply is cut off at the write timeout")
    func neverReads() throws {
        let t = try TerndProcess(extraConfig: Self.limits)
        defer { t.cleanUp() }
        try t.start()
        let out = try python("""
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(t.port)))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            start = time.time()
            data = b"NOOP\\r\\n" * 10000
            result = "still open"
            while time.time() - start < 30:
                try:
                    s.send(data)
                except BlockingIOError:
                    time.sleep(0.1)
                except OSError as e:
                    result = "cut off"
                    break
            print(result, round(time.time() - start, 1))
            """)
        #expect(out.hasPrefix("cut off"), "\(out)")
        #expect(waitFor(10) { t.log.contains("write timeout: the client read none of our replies for 2 s") }, "\(t.log)")
        #expect(t.stop() == 0)
    }

    @Test("a session busy for ever (a NOOP every half second) ends at the session time limit")
    func sessionLimit() throws {
        let t = try TerndProcess(extraConfig: Self.limits)
        defer { t.cleanUp() }
        try t.start()
        let out = try python("""
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=10)
            f = s.makefile("rb")
            f.readline()
            start = time.time()
            last = b""
            while time.time() - start < 30:
                try:
                    s.sendall(b"NOOP\\r\\n")
                except OSError:
                    break
                last = f.readline()
                if not last.startswith(b"250"): break
                time.sleep(0.5)
            print(last.decode().strip(), round(time.time() - start, 1))
            """)
        #expect(out.hasPrefix("421 4.4.2"), "\(out)")
        #expect(waitFor(10) { t.log.contains("session time limit (6 s)") }, "\(t.log)")
        #expect(t.stop() == 0)
    }

    @Test("BDAT chunks of one byte, each in time for the command timeout: the minimum data rate applies across chunks")
    func bdatTrickle() throws {
        let t = try TerndProcess(extraConfig: Self.limits.replacingOccurrences(of: "session-timeout 6s", with: "session-timeout off"))
        defer { t.cleanUp() }
        try t.start()
        let out = try python("""
            import socket, time
            s = socket.create_connection(("127.0.0.1", \(t.port)), timeout=20)
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO c.test\\r\\n")
            while not f.readline().startswith(b"250 "): pass
            s.sendall(b"MAIL FROM:<a@b.example>\\r\\nRCPT TO:<bob@example.test>\\r\\n")
            f.readline(); f.readline()
            start = time.time()
            last = b""
            while time.time() - start < 30:
                try:
                    s.sendall(b"BDAT 1\\r\\nx")
                except OSError:
                    break
                last = f.readline()
                if not last.startswith(b"250"): break
                time.sleep(1)
            print(last.decode().strip(), round(time.time() - start, 1))
            """)
        #expect(out.hasPrefix("421 4.4.2"), "\(out)")
        #expect(waitFor(10) { t.log.contains("data timeout: under 500 bytes/s") }, "\(t.log)")
        #expect(t.stop() == 0)
    }
}
