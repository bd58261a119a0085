import Foundation
import Glibc
import Reactor
import Testing

/// The backend `make test` asked for in this pass (`TERN_IO_BACKEND`), or nil.
let requestedBackend: String? = ProcessInfo.processInfo.environment["TERN_IO_BACKEND"]

/// Compiles the seccomp launcher (Peers/deny_io_uring.c) once per test process.
let denyIOUring: String? = {
    guard let cc = which("cc") ?? which("clang") else { return nil }
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("deny_io_uring-\(getpid())").path
    guard let r = try? run(cc, ["-O2", "-o", out, "\(peersDirectory)/deny_io_uring.c"]), r.status == 0 else { return nil }
    return out
}()

/// A message through ternd to bob, and the mailbox checked.
func deliverOne(_ t: TerndProcess, subject: String) throws {
    let before = t.mailbox("bob").count
    let out = try exchange(port: t.port, send: Array("EHLO c.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: \(subject)\r\n\r\nhello\r\n.\r\nQUIT\r\n".utf8))
    let text = String(decoding: out, as: UTF8.self)
    #expect(text.contains("250 2.0.0 Ok: queued as"), "\(text)")
    for _ in 0..<1000 where t.mailbox("bob").count == before { usleep(10_000) }
    #expect(t.mailbox("bob").count == before + 1, "\(t.log)")
}

@Suite("io backend selection", .serialized)
struct IOBackendTests {
    @Test("the loops run on the backend this pass asked for")
    func backendInUse() throws {
        let loop = try EventLoop()
        // In process, loops are on epoll unless this pass asks otherwise; ternd decides `auto`.
        #expect(loop.backendName == requestedBackend ?? "epoll")
        let expected = requestedBackend ?? (IOBackendChoice.decide(.auto, environment: [:]).useUring ? "io_uring" : "epoll")
        let t = try TerndProcess()
        defer { t.cleanUp() }
        try t.start()
        let line = t.log.split(separator: "\n").first { $0.contains("io backend: ") }.map(String.init) ?? ""
        #expect(line.contains("io backend: \(expected)"), "\(t.log)")
        try deliverOne(t, subject: "on \(expected)")
    }

    @Test("the decision says why io_uring is not used")
    func decisions() {
        #expect(IOBackendChoice.decide(.epoll, environment: [:]) == (false, "io backend: epoll"))
        #expect(IOBackendChoice.decide(.auto, environment: ["TERN_IO_BACKEND": "epoll"]).useUring == false)
        let refused = IOBackendChoice.decide(.auto, environment: ["TERN_IO_URING_REFUSE": "test"])
        #expect(refused == (false, "io backend: epoll, because io_uring is not usable here: test (TERN_IO_URING_REFUSE)"))
        let asked = IOBackendChoice.decide(.ioUring, environment: ["TERN_IO_URING_REFUSE": "test"])
        #expect(asked.note.hasPrefix("io backend: epoll, because io_uring was asked for but is not usable here"))
        // This kernel has io_uring (6.x): asked for, it is used.
        #expect(IOBackendChoice.decide(.ioUring, environment: [:]).useUring)
        #expect(IOBackendChoice.decide(.auto, environment: ["TERN_IO_BACKEND": "io_uring"]).useUring)
    }

    @Test("io_uring refused by a seccomp filter: ternd says why in one line, runs on epoll and serves")
    func seccompFallback() throws {
        let launcher = try #require(denyIOUring, "cannot compile Peers/deny_io_uring.c")
        for setting in ["io-backend auto", "io-backend io_uring"] {
            let t = try TerndProcess(extraConfig: setting)
            defer { t.cleanUp() }
            // Without TERN_IO_BACKEND `auto` probes for real.
            try t.start(launcher: [launcher], environment: ["TERN_IO_BACKEND": ""])
            let lines = t.log.split(separator: "\n").filter { $0.contains("io backend: ") }
            #expect(lines.count == 1, "\(t.log)")
            let line = String(lines.first ?? "")
            #expect(line.contains("io backend: epoll, because io_uring"), "\(line)")
            #expect(line.contains("EPERM"), "\(line)")
            #expect(line.contains(setting.hasSuffix("io_uring") ? "was asked for but" : "is not usable here"), "\(line)")
            try deliverOne(t, subject: "after the fallback")
        }
    }

    @Test("a refusal forced by TERN_IO_URING_REFUSE falls back the same way")
    func forcedFallback() throws {
        let t = try TerndProcess(extraConfig: "io-backend io_uring")
        defer { t.cleanUp() }
        try t.start(environment: ["TERN_IO_URING_REFUSE": "kernel.io_uring_disabled = 2 (simulated)"])
        #expect(t.log.contains("io backend: epoll, because io_uring was asked for but is not usable here: kernel.io_uring_disabled = 2 (simulated)"), "\(t.log)")
        try deliverOne(t, subject: "forced fallback")
    }

    @Test("--io-backend wins over the configuration; a bad value names the file and line")
    func flagAndConfig() throws {
        let t = try TerndProcess(extraConfig: "io-backend io_uring")
        defer { t.cleanUp() }
        try t.start(arguments: ["--io-backend", "epoll"])
        #expect(t.log.contains("io backend: epoll\n"), "\(t.log)")
        try deliverOne(t, subject: "flag")
        _ = t.stop()
        try t.start(environment: ["TERN_IO_BACKEND": ""])
        #expect(t.log.contains("io backend: io_uring"), "\(t.log)")
        try deliverOne(t, subject: "config")

        let bad = try TerndProcess(extraConfig: "io-backend fast")
        defer { bad.cleanUp() }
        let r = try run(TerndProcess.terndPath, ["--check", "--config", "\(bad.dir)/tern.conf"])
        #expect(r.status == 1)
        #expect(r.out.contains("\(bad.dir)/tern.conf:10: usage: io-backend auto|epoll|io_uring"), "\(r.out)")
        let flag = try run(TerndProcess.terndPath, ["--io-backend", "fast", "--config", "\(bad.dir)/tern.conf"])
        #expect(flag.status != 0 && flag.err.contains("io-backend"), "\(flag.err)")
    }

    @Test("ternbench send and sink take --io-backend and say which runs", arguments: [("io_uring", "epoll"), ("epoll", "io_uring")])
    func ternbench(_ sinkBackend: String, _ sendBackend: String) throws {
        let sink = try SinkProcess(["--io-backend", sinkBackend])
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--sessions", "4", "--messages", "200", "--size", "20000", "--io-backend", sendBackend])
        let sinkErr = sink.err
        let stopped = sink.stop()
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(r.err.contains("ternbench send: io backend: \(sendBackend)"), "\(r.err)")
        #expect(sinkErr.contains("ternbench sink: io backend: \(sinkBackend)"), "\(sinkErr)")
        #expect(stopped.out.contains("ternbench sink: 200 messages"), "\(stopped.out)")
    }
}
