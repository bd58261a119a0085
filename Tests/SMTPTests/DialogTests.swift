import Foundation
import SMTP
import TernTestSupport
import Testing

let dialogDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Dialogs")

func dialogNames() -> [String] {
    let files = (try? FileManager.default.contentsOfDirectory(atPath: dialogDirectory.path)) ?? []
    return files.filter { $0.hasSuffix(".dialog") }.sorted()
}

func loadDialog(_ name: String) throws -> Dialog {
    let text = try String(contentsOf: dialogDirectory.appendingPathComponent(name), encoding: .utf8)
    return try Dialog(name: name, text: text)
}

@Suite("Dialogs against the sans-IO server")
struct DialogTests {
    @Test("there are dialog files")
    func dialogsExist() {
        #expect(dialogNames().count >= 20)
    }

    @Test("dialog fed whole", arguments: dialogNames())
    func whole(_ name: String) throws {
        let d = try loadDialog(name)
        let outcome = DialogRunner.run(d.configuration, pieces: [d.clientBytes])
        let problems = DialogRunner.check(d, outcome)
        #expect(problems.isEmpty, "\(name): \(problems)")
    }

    @Test("dialog split at every byte boundary gives the same outcome", arguments: dialogNames())
    func everySplit(_ name: String) throws {
        let d = try loadDialog(name)
        let bytes = d.clientBytes
        let reference = DialogRunner.run(d.configuration, pieces: [bytes])
        for k in 0...bytes.count {
            let outcome = DialogRunner.run(d.configuration, pieces: [Array(bytes[..<k]), Array(bytes[k...])])
            if outcome != reference {
                Issue.record("\(name) split at \(k): \(outcome.difference(from: reference))")
                break
            }
        }
        let byteByByte = DialogRunner.run(d.configuration, pieces: bytes.map { [$0] })
        if byteByByte != reference {
            Issue.record("\(name) byte by byte: \(byteByByte.difference(from: reference))")
        }
    }

    @Test("dialog with the lines as separate pieces gives the same outcome", arguments: dialogNames())
    func lineByLine(_ name: String) throws {
        let d = try loadDialog(name)
        let pieces = d.steps.compactMap { step -> [UInt8]? in
            if case .client(let b) = step { return b }
            return nil
        }
        let outcome = DialogRunner.run(d.configuration, pieces: pieces)
        let reference = DialogRunner.run(d.configuration, pieces: [d.clientBytes])
        #expect(outcome == reference, "\(outcome.difference(from: reference))")
    }
}

@Suite("Envelope parameters")
struct EnvelopeTests {
    @Test("DSN and ESMTP parameters are kept on the envelope")
    func parameters() throws {
        let d = try Dialog(
            name: "inline",
            text: """
                C: EHLO c.test
                C: MAIL FROM:<"a b"@example.org> SIZE=42 BODY=8BITMIME RET=HDRS ENVID=id+2B1 SMTPUTF8
                C: RCPT TO:<x@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@example.test
                C: RCPT TO:<y@bücher.example> NOTIFY=NEVER
                C: RCPT TO:<postmaster>
                C: DATA
                C: hi
                C: .
                """)
        let outcome = DialogRunner.run(d.configuration, pieces: [d.clientBytes])
        let e = try #require(outcome.envelopes.first)
        #expect(e.sender == "\"a b\"@example.org")
        #expect(e.declaredSize == 42)
        #expect(e.body == .eightBitMIME)
        #expect(e.ret == .headers)
        #expect(e.envelopeID == "id+1")
        #expect(e.smtpUTF8)
        #expect(e.recipientAddresses == ["x@example.test", "y@bücher.example", "postmaster"])
        #expect(e.recipients[0].notify == [.success, .failure])
        #expect(e.recipients[1].notify == .never)
        #expect(e.originalRecipient(0) == "rfc822;x+y@example.test")
        #expect(e.originalRecipient(1) == nil)
        #expect(outcome.messages == [Array("hi\r\n".utf8)])
    }

    @Test("the null sender and source routes")
    func nullSender() throws {
        let d = try Dialog(
            name: "inline",
            text: """
                C: EHLO c.test
                C: MAIL FROM:<>
                C: RCPT TO:<@hop1.example,@hop2.example:bob@example.test>
                C: DATA
                C: .
                """)
        let e = try #require(DialogRunner.run(d.configuration, pieces: [d.clientBytes]).envelopes.first)
        #expect(e.isNullSender)
        #expect(e.sender == "")
        #expect(e.recipientAddresses == ["bob@example.test"])
    }
}

@Suite("Server state machine details")
struct ServerMachineTests {
    @Test("policy events pause the machine until resolved")
    func policyEvents() {
        var config = ServerConfiguration(hostname: "mx.test")
        config.policyEvents = true
        var m = ServerStateMachine(context: ServerContext(config))
        let out = OutputBuffer()
        m.start(into: out)
        let input = Array("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\n".utf8)
        input.withUnsafeBytes { b in
            var consumed = 0
            var (k, e) = m.process(b, into: out)
            consumed += k
            #expect(e == .checkSender)
            #expect(m.isAwaitingDecision)
            // While waiting nothing is consumed.
            #expect(m.process(UnsafeRawBufferPointer(rebasing: b[consumed...]), into: out).consumed == 0)
            #expect(m.resolveSender(nil, into: out) == nil)
            (k, e) = m.process(UnsafeRawBufferPointer(rebasing: b[consumed...]), into: out)
            consumed += k
            #expect(e == .checkRecipient)
            #expect(m.resolveRecipient(Reply(550, EnhancedStatus(5, 1, 1), "No such user"), into: out) == nil)
            (k, e) = m.process(UnsafeRawBufferPointer(rebasing: b[consumed...]), into: out)
            consumed += k
            #expect(e == .checkRecipient)
            #expect(m.resolveRecipient(nil, into: out) == nil)
            #expect(m.envelope.recipientAddresses == ["z@y.test"])
            #expect(consumed == b.count)
        }
        let lines = crlfLines(Array(out.bytes))
        #expect(lines.last(where: { $0.hasPrefix("550") }) == "550 5.1.1 No such user")
        #expect(lines.last == "250 2.1.5 Recipient OK")
    }

    @Test("timeouts depend on the phase and close with 421")
    func timeouts() {
        let config = ServerConfiguration(commandTimeout: 300, dataTimeout: 180)
        var m = ServerStateMachine(context: ServerContext(config))
        let out = OutputBuffer()
        m.start(into: out)
        #expect(m.timeout == 300)
        let input = Array("EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nabc".utf8)
        _ = input.withUnsafeBytes { m.process($0, into: out) }
        #expect(m.timeout == 180)
        out.clear()
        m.timedOut(into: out)
        #expect(m.isClosed)
        #expect(crlfLines(Array(out.bytes)) == ["421 4.4.2 Timeout; closing"])
    }

    @Test("shutdown says 421 4.3.2")
    func shutdown() {
        var m = ServerStateMachine(context: ServerContext(ServerConfiguration()))
        let out = OutputBuffer()
        m.start(into: out)
        out.clear()
        m.shutdown(into: out)
        #expect(String(decoding: out.bytes, as: UTF8.self).hasPrefix("421 4.3.2"))
    }

    @Test("an overlong line with no LF is discarded without buffering it all")
    func overlongWithoutLF() {
        var m = ServerStateMachine(context: ServerContext(ServerConfiguration()))
        let out = OutputBuffer()
        m.start(into: out)
        let junk = [UInt8](repeating: UInt8(ascii: "a"), count: 4000)
        let consumed = junk.withUnsafeBytes { m.process($0, into: out).consumed }
        #expect(consumed == junk.count)
        let rest = Array("aaa\r\nNOOP\r\n".utf8)
        _ = rest.withUnsafeBytes { m.process($0, into: out) }
        #expect(crlfLines(Array(out.bytes)).dropFirst() == ["500 5.5.2 Line too long", "250 2.0.0 OK"])
    }
}
