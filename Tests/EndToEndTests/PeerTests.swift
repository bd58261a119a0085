import Foundation
import SMTP
import TernTestSupport
import Testing

@Suite("End to end with real peers", .serialized)
struct PeerTests {
    @Test("swaks, plain and --pipeline, byte for byte", arguments: [false, true])
    func swaks(pipeline: Bool) throws {
        let swaks = try #require(which("swaks"), "swaks is installed by `make test`")
        let server = try CapturingServer()
        defer { server.shutdown() }
        var args = [
            "--server", "127.0.0.1:\(server.port)", "--from", "alice@example.org", "--to", "bob@example.test",
            "--helo", "swaks.test", "--header", "Subject: swaks", "--body", ".starts with a dot\n..two dots\nend",
            "--add-header", "X-Test: yes", "--suppress-data",
        ]
        if pipeline { args.append("--pipeline") }
        let r = try run(swaks, args)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        let m = try #require(server.messages.first)
        #expect(m.sender == "alice@example.org")
        #expect(m.recipients == ["bob@example.test"])
        let text = String(decoding: m.body, as: UTF8.self)
        #expect(text.contains("Subject: swaks\r\n"))
        // swaks ends the body with an extra empty line of its own.
        #expect(text.hasSuffix("\r\n\r\n.starts with a dot\r\n..two dots\r\nend\r\n\r\n\r\n"), "\(text.debugDescription)")
        #expect(!m.body.enumerated().contains { $0.element == 10 && ($0.offset == 0 || m.body[$0.offset - 1] != 13) })
        if pipeline { #expect(r.out.contains("PIPELINING")) }
    }

    @Test("swaks sees the right codes for refused input")
    func swaksRefusals() throws {
        let swaks = try #require(which("swaks"))
        var config = ServerConfiguration(hostname: "mx.test")
        config.maxMessageSize = 500
        let server = try CapturingServer(configuration: config)
        defer { server.shutdown() }
        let big = String(repeating: "x", count: 70) + "\n"
        let r = try run(swaks, ["--server", "127.0.0.1:\(server.port)", "--to", "bob@example.test", "--body", String(repeating: big, count: 20)])
        #expect(r.status != 0)
        #expect(r.out.contains("552 5.3.4"), "\(r.out)")
        #expect(server.messages.isEmpty)
    }

    @Test("Python smtplib", arguments: ["plain", "utf8", "utf8-refused", "bdat", "pipeline"])
    func smtplib(_ scenario: String) throws {
        let python = try #require(which("python3"))
        let server = try CapturingServer()
        defer { server.shutdown() }
        let r = try run(python, ["\(peersDirectory)/smtplib_client.py", String(server.port), scenario])
        #expect(r.status == 0 && r.out.contains("OK"), "\(r.out)\(r.err)")
        let messages = server.messages
        switch scenario {
        case "plain":
            #expect(messages.count == 1)
            #expect(messages.first?.recipients == ["bob@example.test", "carol@example.test"])
            #expect(messages.first?.body == Array("Subject: smtplib\r\n\r\n.dot line\r\nline two\r\n".utf8))
        case "utf8":
            #expect(messages.first?.sender == "jöran@bücher.example")
            #expect(messages.first?.recipients == ["用户@例子.广告"])
            #expect(messages.first?.smtpUTF8 == true)
            #expect(messages.first?.body == Array("Subject: grüße\r\n\r\nHallo Jöran\r\n".utf8))
        case "bdat":
            #expect(messages.first?.bodyType == .binaryMIME)
            #expect(messages.first?.body == Array("Subject: bdat\r\n\r\n".utf8) + Array("binary ".utf8) + [0, 0xFF] + Array("\r\n.\r\nnot the end\n".utf8))
        case "pipeline":
            #expect(messages.map(\.body) == [Array("pipelined\r\n".utf8), Array("second\r\n".utf8)])
        default:
            #expect(messages.isEmpty)
        }
    }

    @Test("every dialog file replayed over TCP gives the sans-IO result")
    func dialogsOverTCP() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: dialogsDirectory).filter { $0.hasSuffix(".dialog") }.sorted()
        #expect(names.count >= 20)
        for name in names {
            let text = try String(contentsOfFile: "\(dialogsDirectory)/\(name)", encoding: .utf8)
            let dialog = try Dialog(name: name, text: text)
            let server = try CapturingServer(configuration: dialog.configuration, loops: 1)
            defer { server.shutdown() }
            let output = try exchange(port: server.port, send: dialog.clientBytes)
            var outcome = DialogOutcome()
            outcome.output = output
            outcome.messages = server.messages.map(\.body)
            outcome.closed = true  // exchange() returns at EOF
            let expectClose = dialog.steps.contains(.close)
            if expectClose {
                let problems = DialogRunner.check(dialog, outcome)
                #expect(problems.isEmpty, "\(name) over TCP: \(problems); received: \(String(decoding: output, as: UTF8.self).debugDescription)")
            }
        }
    }
}
