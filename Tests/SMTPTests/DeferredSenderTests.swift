import SMTP
import Testing

/// A handler whose MAIL FROM decision comes later (as ternd's SPF check does).
final class DeferringHandler: ServerEventHandler {
    var messages = 0
    var asked = 0
    func messageStart() {}
    func messageBody(_ bytes: UnsafeRawBufferPointer) {}
    func checkSender(_ session: ServerStateMachine) -> Reply? { nil }
    func checkRecipient(_ session: ServerStateMachine) -> Reply? { nil }
    func messageComplete(_ session: ServerStateMachine) -> Reply? {
        messages += 1
        return .messageAccepted
    }
    func senderDecision(_ session: ServerStateMachine) -> PolicyDecision {
        asked += 1
        return .later
    }
}

@Suite("MAIL FROM decided later")
struct DeferredSenderTests {
    func run(_ decision: Reply?) -> (replies: String, messages: Int) {
        var config = ServerConfiguration()
        config.policyEvents = true
        var m = ServerStateMachine(context: ServerContext(config))
        let out = OutputBuffer()
        let h = DeferringHandler()
        m.start(into: out)
        out.clear()
        let input = Array("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n".utf8)
        var rest = input[...]
        var replies = ""
        // The pipelined commands behind MAIL wait, unconsumed, until the decision.
        let k = rest.withUnsafeBytes { m.consume($0, into: out, handler: h) }
        rest = rest.dropFirst(k)
        #expect(m.isAwaitingDecision && h.asked == 1)
        #expect(String(decoding: rest.prefix(4), as: UTF8.self) == "RCPT", "stopped right after MAIL")
        replies += String(decoding: out.bytes, as: UTF8.self)
        out.clear()
        _ = m.resolveSender(decision, into: out)
        let k2 = rest.withUnsafeBytes { m.consume($0, into: out, handler: h) }
        #expect(k2 == rest.count)
        replies += String(decoding: out.bytes, as: UTF8.self)
        return (replies, h.messages)
    }

    @Test("accepted later: the pipelined RCPT, DATA and message go on")
    func accepted() {
        let r = run(nil)
        #expect(r.replies.hasPrefix("250-"))  // EHLO
        #expect(r.replies.contains("250 2.1.0") && r.replies.contains("354") && r.messages == 1, "\(r.replies)")
    }

    @Test("refused later: 550 5.7.23 for MAIL, then the pipelined commands are out of sequence")
    func refused() {
        let r = run(Reply(550, EnhancedStatus(5, 7, 23), "SPF fail"))
        #expect(r.replies.contains("550 5.7.23 SPF fail\r\n"), "\(r.replies)")
        #expect(r.replies.contains("503") && r.messages == 0, "\(r.replies)")
    }
}

/// A handler whose RCPT TO decisions come later (as ternd's lookup process answers them).
final class DeferringRecipientHandler: ServerEventHandler {
    var messages = 0
    var asked = 0
    func messageStart() {}
    func messageBody(_ bytes: UnsafeRawBufferPointer) {}
    func checkSender(_ session: ServerStateMachine) -> Reply? { nil }
    func checkRecipient(_ session: ServerStateMachine) -> Reply? { Reply(550, EnhancedStatus(5, 1, 1), "not asked this way") }
    func messageComplete(_ session: ServerStateMachine) -> Reply? {
        messages += 1
        return .messageAccepted
    }
    func recipientDecision(_ session: ServerStateMachine) -> PolicyDecision {
        asked += 1
        return .later
    }
}

@Suite("RCPT TO decided later")
struct DeferredRecipientTests {
    /// Pipelines two recipients and the message; answers each RCPT with `decisions` in turn.
    func run(_ decisions: [Reply?]) -> (replies: String, messages: Int, asked: Int) {
        var config = ServerConfiguration()
        config.policyEvents = true
        var m = ServerStateMachine(context: ServerContext(config))
        let out = OutputBuffer()
        let h = DeferringRecipientHandler()
        m.start(into: out)
        out.clear()
        let input = Array("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n".utf8)
        var rest = input[...]
        var replies = ""
        var pending = decisions[...]
        while !rest.isEmpty {
            let k = rest.withUnsafeBytes { m.consume($0, into: out, handler: h) }
            rest = rest.dropFirst(k)
            replies += String(decoding: out.bytes, as: UTF8.self)
            out.clear()
            guard m.isAwaitingDecision else { continue }
            // Nothing behind the RCPT was read while its answer is out.
            #expect(String(decoding: rest.prefix(4), as: UTF8.self) == (h.asked == 1 ? "RCPT" : "DATA"), "stopped right after RCPT \(h.asked)")
            guard let d = pending.popFirst() else { break }
            _ = m.resolveRecipient(d, into: out)
        }
        return (replies, h.messages, h.asked)
    }

    @Test("both accepted later: the pipelined DATA and message go on")
    func accepted() {
        let r = run([nil, nil])
        #expect(r.asked == 2 && r.messages == 1, "\(r.replies)")
        #expect(r.replies.components(separatedBy: "250 2.1.5").count == 3 && r.replies.contains("354"), "\(r.replies)")
    }

    @Test("one refused later: the message goes to the other")
    func oneRefused() {
        let r = run([Reply(550, EnhancedStatus(5, 1, 1), "no such user"), nil])
        #expect(r.replies.contains("550 5.1.1 no such user\r\n") && r.messages == 1, "\(r.replies)")
    }

    @Test("both refused later: DATA is refused, no message")
    func bothRefused() {
        let no = Reply(550, EnhancedStatus(5, 1, 1), "no such user")
        let r = run([no, no])
        #expect(r.messages == 0 && (r.replies.contains("554") || r.replies.contains("503")), "\(r.replies)")
    }
}
