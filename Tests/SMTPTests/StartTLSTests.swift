import SMTP
import Testing

/// Counts STARTTLS events and keeps messages.
final class TLSHandler: ServerEventHandler {
    var startTLSCalls = 0
    var messages: [String] = []
    var body: [UInt8] = []
    func messageStart() { body = [] }
    func messageBody(_ bytes: UnsafeRawBufferPointer) { body += bytes }
    func checkSender(_ session: ServerStateMachine) -> Reply? { nil }
    func checkRecipient(_ session: ServerStateMachine) -> Reply? { nil }
    func messageComplete(_ session: ServerStateMachine) -> Reply? {
        messages.append(String(decoding: body, as: UTF8.self))
        return .messageAccepted
    }
    func startTLS() { startTLSCalls += 1 }
}

/// The STARTTLS exchange of RFC 3207 in the engine, byte by byte (the TLS itself is the driver's).
@Suite("STARTTLS in the server engine")
struct StartTLSTests {
    struct Session {
        var m: ServerStateMachine
        let out = OutputBuffer()
        let h = TLSHandler()

        init(offer: Bool) {
            var config = ServerConfiguration(hostname: "mx.example.test")
            config.startTLS = offer
            m = ServerStateMachine(context: ServerContext(config))
            m.start(into: out)
            out.clear()
        }

        /// Feeds `input`; returns the replies and how many bytes were consumed.
        mutating func say(_ input: String) -> (replies: String, consumed: Int) {
            let bytes = Array(input.utf8)
            let k = bytes.withUnsafeBytes { m.consume($0, into: out, handler: h) }
            let replies = String(decoding: out.bytes, as: UTF8.self)
            out.clear()
            return (replies, k)
        }
    }

    @Test("offered in EHLO; 220; the plaintext pipelined behind it is dropped; EHLO again, without STARTTLS")
    func exchange() {
        var s = Session(offer: true)
        let ehlo = s.say("EHLO c.test\r\n").replies
        #expect(ehlo.hasSuffix("250-DSN\r\n250 STARTTLS\r\n"), "\(ehlo)")
        // An attacker's injection: commands after STARTTLS in the same packet.
        let injected = "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n"
        let r = s.say(injected)
        #expect(r.replies == "220 2.0.0 Ready to start TLS\r\n")
        #expect(r.consumed == injected.utf8.count, "everything after STARTTLS is consumed, to be dropped")
        #expect(s.h.startTLSCalls == 1)
        s.m.tlsEstablished()
        #expect(s.m.isTLS && s.m.heloName == nil)
        // The session starts over: MAIL before EHLO is refused, and nothing injected survived.
        #expect(s.say("MAIL FROM:<a@b.test>\r\n").replies == "503 5.5.1 Send EHLO or HELO first\r\n")
        let again = s.say("EHLO c.test\r\n").replies
        #expect(again.hasSuffix("250 DSN\r\n") && !again.contains("STARTTLS"), "\(again)")
        #expect(s.say("STARTTLS\r\n").replies == "503 5.5.1 TLS already active\r\n")
        let tx = s.say("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: over TLS\r\n\r\nhi\r\n.\r\n").replies
        #expect(tx.hasSuffix("354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Message accepted\r\n"), "\(tx)")
        #expect(s.h.messages == ["Subject: over TLS\r\n\r\nhi\r\n"])
    }

    @Test("refused: not offered (502), with an argument (501), inside a transaction (503), before EHLO is fine")
    func refusals() {
        var off = Session(offer: false)
        let ehlo = off.say("EHLO c.test\r\n").replies
        #expect(!ehlo.contains("STARTTLS"))
        #expect(off.say("STARTTLS\r\n").replies == "502 5.5.1 Command not implemented\r\n")
        #expect(off.h.startTLSCalls == 0)

        var s = Session(offer: true)
        _ = s.say("EHLO c.test\r\n")
        #expect(s.say("STARTTLS now\r\n").replies == "501 5.5.4 No arguments allowed\r\n")
        _ = s.say("MAIL FROM:<a@b.test>\r\n")
        #expect(s.say("STARTTLS\r\n").replies == "503 5.5.1 Mail transaction in progress; send RSET first\r\n")
        _ = s.say("RSET\r\n")
        #expect(s.say("starttls\r\n").replies == "220 2.0.0 Ready to start TLS\r\n", "verbs are case-insensitive")

        var early = Session(offer: true)
        #expect(early.say("STARTTLS\r\n").replies == "220 2.0.0 Ready to start TLS\r\n")
        #expect(early.h.startTLSCalls == 1)
    }
}
