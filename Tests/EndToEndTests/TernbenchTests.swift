import Foundation
import Glibc
import Testing

/// A `ternbench sink` child process on a free port.
final class SinkProcess {
    let process = Process()
    let port: Int
    let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("sink-\(UUID().uuidString).out")
    let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("sink-\(UUID().uuidString).err")

    /// `port`: listen there (a receiver restarted on the same port); a free one when nil.
    /// `host`: the address to listen on (IPv6 without brackets).
    init(_ extra: [String] = [], port: Int? = nil, host: String = "127.0.0.1") throws {
        self.port = port ?? freePort()
        process.executableURL = URL(fileURLWithPath: ternbenchPath)
        process.arguments = ["sink", "--listen", host.contains(":") ? "[\(host)]:\(self.port)" : "\(host):\(self.port)"] + extra
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errURL)
        try process.run()
        // Wait until it listens (IPv6: until it says so; the probe speaks IPv4).
        for _ in 0..<500 {
            if host.contains(":") ? err.contains("listening on") : (try? exchange(port: self.port, send: Array("QUIT\r\n".utf8), timeout: 1)) != nil { break }
            usleep(10_000)
        }
    }

    /// Counts of the last progress line (`--report-every`): messages, recipients, sessions, open,
    /// tempfailed, permfailed (absent ones are 0).
    var counts: [String: Int] {
        let text = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("ternbench sink: ") }) else { return [:] }
        var out: [String: Int] = [:]
        for part in line.dropFirst("ternbench sink: ".count).split(separator: ",") {
            let words = part.split(separator: " ")
            if words.count >= 2, let n = Int(words[0]) { out[String(words[1])] = n }
            // "N sessions (O open)"
            if words.count >= 4, words[2].hasPrefix("("), let o = Int(words[2].dropFirst()) { out["open"] = o }
        }
        return out
    }

    /// What the sink wrote to stderr so far.
    var err: String { (try? String(contentsOf: errURL, encoding: .utf8)) ?? "" }

    /// SIGTERM, wait, and return stdout.
    func stop() -> (status: Int32, out: String) {
        process.terminate()
        process.waitUntilExit()
        let text = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
        return (process.terminationStatus, text)
    }
}

@Suite("ternbench send and sink", .serialized)
struct TernbenchTests {
    @Test("sink --expect N stops by itself after N messages and reports the rate from the first to the last")
    func expect() throws {
        let sink = try SinkProcess(["--expect", "300", "--json"])
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--sessions", "4", "--messages", "300"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        sink.process.waitUntilExit()
        #expect(sink.process.terminationStatus == 0)
        let out = (try? String(contentsOf: sink.outURL, encoding: .utf8)) ?? ""
        let counts = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "\(out)")
        #expect(counts["messages"] as? Int == 300)
        let span = counts["first_to_last_s"] as? Double ?? 0
        #expect(span > 0 && span < 60, "\(counts)")
        let rate = counts["messages_per_s_first_to_last"] as? Double ?? 0
        #expect(rate > 0 && abs(rate - 299 / span) / rate < 0.01, "\(counts)")
    }

    @Test("send → sink: every message accepted, counted by both, report complete", arguments: [
        ["--sessions", "8", "--messages", "400"],
        ["--sessions", "4", "--messages", "200", "--chunking", "--rcpts", "3"],
        ["--sessions", "3", "--messages", "90", "--no-pipelining", "--per-connection", "7"],
        ["--sessions", "2", "--messages", "20", "--size", "150000"],
    ])
    func sendToSink(_ args: [String]) throws {
        let sink = try SinkProcess()
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--json"] + args)
        let stopped = sink.stop()
        #expect(r.status == 0, "\(r.out)\(r.err)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let messages = Int(args[args.firstIndex(of: "--messages")! + 1])!
        #expect(report["accepted"] as? Int == messages)
        #expect((report["messages_per_s"] as? Double ?? 0) > 0)
        let latency = try #require(report["latency"] as? [String: Any])
        let tx = try #require(latency["transaction"] as? [String: Any])
        #expect(tx["count"] as? Int == messages)
        #expect((tx["p50_ms"] as? Double ?? -1) >= 0 && (tx["p99_ms"] as? Double ?? -1) >= (tx["p50_ms"] as? Double ?? 0))
        let dataEnd = try #require(latency["end_of_data"] as? [String: Any])
        #expect(dataEnd["count"] as? Int == messages)
        #expect((dataEnd["p99_ms"] as? Double ?? 1e9) <= (tx["max_ms"] as? Double ?? 0))
        #expect(stopped.status == 0)
        #expect(stopped.out.contains("ternbench sink: \(messages) messages"), "\(stopped.out)")
        let rcpts = args.firstIndex(of: "--rcpts").map { Int(args[$0 + 1])! } ?? 1
        #expect(stopped.out.contains("\(messages * rcpts) recipients"), "\(stopped.out)")
    }

    @Test("a server that closes after its last reply instead of answering QUIT ends the run (it once hung)", arguments: ["epoll", "io_uring"])
    func closeBeforeQuit(_ backend: String) throws {
        // A server without PIPELINING that accepts one message and closes at once.
        let server = """
            import socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0)); s.listen(1); print(s.getsockname()[1], flush=True)
            c, _ = s.accept(); f = c.makefile("rb"); c.sendall(b"220 x ESMTP\\r\\n")
            while True:
                line = f.readline()
                if not line: break
                if line.upper().startswith(b"DATA"):
                    c.sendall(b"354 go on\\r\\n")
                    while f.readline() not in (b".\\r\\n", b""): pass
                    c.sendall(b"250 2.0.0 taken\\r\\n"); c.close(); break
                c.sendall(b"250 ok\\r\\n")
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", server]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        defer { kill(p.processIdentifier, SIGKILL) }
        let port = try #require(Int(String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(port)", "--sessions", "1", "--messages", "1", "--io-backend", backend], timeout: 20)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(r.out.contains("1/1 messages accepted"), "\(r.out)")
    }

    @Test("injected failures are counted by code and make send exit 1")
    func failures() throws {
        let sink = try SinkProcess(["--tempfail-rate", "0.3", "--permfail-rate", "0.2"])
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--sessions", "4", "--messages", "400", "--json"])
        let stopped = sink.stop()
        #expect(r.status == 1)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let errors = try #require(report["errors"] as? [String: Int])
        let accepted = report["accepted"] as? Int ?? 0
        #expect((errors["451"] ?? 0) > 60 && (errors["554"] ?? 0) > 30, "\(errors)")
        #expect(accepted + (errors["451"] ?? 0) + (errors["554"] ?? 0) == 400)
        #expect(stopped.out.contains("tempfailed"))
    }

    @Test("--delay holds the end-of-data reply")
    func delay() throws {
        let sink = try SinkProcess(["--delay", "200"])
        let start = Date()
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--sessions", "1", "--messages", "3", "--no-pipelining", "--json"])
        _ = sink.stop()
        #expect(r.status == 0)
        #expect(Date().timeIntervalSince(start) >= 0.6)
        // The held reply is what the end-of-data latency measures: at least the delay, every time.
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let dataEnd = try #require((report["latency"] as? [String: Any])?["end_of_data"] as? [String: Any])
        #expect(dataEnd["count"] as? Int == 3)
        #expect((dataEnd["p50_ms"] as? Double ?? 0) >= 199, "\(dataEnd)")
    }

    @Test("--report-every prints counts while running; a refused server is an error")
    func reportAndRefused() throws {
        let sink = try SinkProcess(["--report-every", "0.2"])
        _ = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--messages", "50"])
        usleep(500_000)
        let stopped = sink.stop()
        #expect(stopped.out.components(separatedBy: "\n").filter { $0.contains("msg/s") }.count >= 2, "\(stopped.out)")
        let refused = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--messages", "5", "--sessions", "1"])
        #expect(refused.status == 1)
        #expect(refused.out.contains("connect"), "\(refused.out)")
    }

    @Test("--message-ids: each message has its own Message-ID, and the file lists exactly those the server took", arguments: [["--no-pipelining"], [], ["--chunking"]])
    func messageIDs(_ extra: [String]) throws {
        let server = try CapturingServer()
        defer { server.shutdown() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ids-\(UUID().uuidString)").path
        defer { unlink(file) }
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(server.port)", "--sessions", "3", "--messages", "60", "--size", "3000", "--message-ids", file] + extra)
        #expect(r.status == 0, "\(r.out) \(r.err)")
        let listed = ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        let bodies = server.messages.map { m -> String in
            let text = String(decoding: m.body, as: UTF8.self)
            let line = text.components(separatedBy: "\r\n").first { $0.hasPrefix("Message-ID: <") } ?? ""
            return String(line.dropFirst("Message-ID: <".count).dropLast())
        }
        #expect(listed.count == 60 && Set(listed).count == 60)
        #expect(Set(bodies) == Set(listed), "the ids in the file are the ids in the messages")
        #expect(server.messages.allSatisfy { $0.body.count == server.messages[0].body.count }, "the same size every time")
    }

    @Test("--duration sends for that long and counts what it sent")
    func duration() throws {
        let sink = try SinkProcess(["--report-every", "0.1"])
        let start = Date()
        let r = try run(ternbenchPath, ["send", "--server", "127.0.0.1:\(sink.port)", "--sessions", "4", "--duration", "1", "--json"], timeout: 30)
        let took = Date().timeIntervalSince(start)
        let stopped = sink.stop()
        #expect(r.status == 0, "\(r.out) \(r.err)")
        #expect(took >= 1 && took < 15)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let accepted = try #require(report["accepted"] as? Int)
        #expect(accepted > 10 && report["messages"] as? Int == accepted, "\(r.out)")
        #expect(stopped.out.contains("\(accepted) messages"), "\(stopped.out)")
    }

    @Test("bad arguments give clear errors", arguments: [
        ["send", "--server", "mail.example.com:25"],
        ["send", "--server", "127.0.0.1"],
        ["send", "--server", "127.0.0.1:99999"],
        ["send", "--server", "127.0.0.1:25", "--sessions", "0"],
        ["sink", "--listen", "127.0.0.1:2525", "--tempfail-rate", "2"],
        ["send", "--server", "127.0.0.1:25", "--from", "a@b\r\nRCPT TO:<x@y>"],
        ["send", "--server", "127.0.0.1:25", "--to", "<x@y>"],
        ["send", "--server", "127.0.0.1:25", "--io-backend", "kqueue"],
        ["sink", "--listen", "127.0.0.1:2525", "--io-backend", "uring"],
        ["sink", "--listen", "127.0.0.1:2525", "--max-recipients", "0"],
        ["send", "--server", "127.0.0.1:25", "--duration", "0"],
        ["send", "--server", "127.0.0.1:25", "--message-ids", "/nonexistent/ids.txt"],
    ])
    func badArguments(_ args: [String]) throws {
        let r = try run(ternbenchPath, args)
        #expect(r.status != 0)
        #expect(r.err.contains("Error") || r.err.contains("error"), "\(r.err)")
    }
}
