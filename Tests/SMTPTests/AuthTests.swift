import SMTP
import Testing

/// Checks credentials against one fixed user; can defer its answer like ternd does.
final class AuthHandler: ServerEventHandler {
    var attempts: [(user: String, password: String)] = []
    var answerLater = false
    var senders: [String] = []
    func messageStart() {}
    func messageBody(_ bytes: UnsafeRawBufferPointer) {}
    func checkSender(_ session: ServerStateMachine) -> Reply? {
        senders.append("\(session.authenticatedUser ?? "-"):\(session.envelope.sender)")
        return nil
    }
    func checkRecipient(_ session: ServerStateMachine) -> Reply? { nil }
    func messageComplete(_ session: ServerStateMachine) -> Reply? { .messageAccepted }
    func authenticate(_ session: ServerStateMachine, user: String, password: [UInt8]) -> AuthOutcome? {
        attempts.append((user, String(decoding: password, as: UTF8.self)))
        if answerLater { return nil }
        return user == "alice@example.test" && password == Array("s3cret pass".utf8) ? .authenticated(user) : .refused(.authFailed)
    }
}

/// AUTH PLAIN and LOGIN (RFC 4954, 4616) in the engine, byte by byte.
@Suite("AUTH in the server engine")
struct AuthTests {
    struct Session {
        var m: ServerStateMachine
        let out = OutputBuffer()
        let h = AuthHandler()

        init(auth: Bool = true, requireAuth: Bool = false, tls: Bool = true, policy: Bool = false) {
            var config = ServerConfiguration(hostname: "mx.example.test")
            config.startTLS = true
            config.auth = auth
            config.requireAuth = requireAuth
            config.policyEvents = policy
            m = ServerStateMachine(context: ServerContext(config))
            if tls { m.tlsEstablished() }  // implicit TLS: before the greeting
            m.start(into: out)
            out.clear()
        }

        mutating func say(_ input: String) -> String {
            let bytes = Array(input.utf8)
            _ = bytes.withUnsafeBytes { m.consume($0, into: out, handler: h) }
            defer { out.clear() }
            return String(decoding: out.bytes, as: UTF8.self)
        }
    }

    static func b64(_ s: String) -> String { Base64.encode(Array(s.utf8)) }
    static let good = b64("\0alice@example.test\0s3cret pass")

    @Test("offered only over TLS; before TLS 530 5.7.0 Must issue a STARTTLS command first")
    func onlyOverTLS() {
        var plain = Session(tls: false)
        let ehlo = plain.say("EHLO c.test\r\n")
        #expect(ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "\(ehlo)")
        #expect(plain.say("AUTH PLAIN \(Self.good)\r\n") == "530 5.7.0 Must issue a STARTTLS command first\r\n")
        #expect(plain.h.attempts.isEmpty, "credentials sent in clear are not even looked at")

        var tls = Session()
        let over = tls.say("EHLO c.test\r\n")
        #expect(over.hasSuffix("250-DSN\r\n250 AUTH PLAIN LOGIN\r\n") && !over.contains("STARTTLS"), "\(over)")

        var off = Session(auth: false)
        #expect(!off.say("EHLO c.test\r\n").contains("AUTH"))
        #expect(off.say("AUTH PLAIN \(Self.good)\r\n") == "502 5.5.1 Command not implemented\r\n")
    }

    @Test("PLAIN with an initial response, PLAIN after 334, the authorization identity")
    func plain() {
        var s = Session()
        _ = s.say("EHLO c.test\r\n")
        #expect(s.say("AUTH PLAIN \(Self.good)\r\n") == "235 2.7.0 Authentication successful\r\n")
        #expect(s.m.authenticatedUser == "alice@example.test")
        #expect(s.say("AUTH PLAIN \(Self.good)\r\n") == "503 5.5.1 Already authenticated\r\n")

        var t = Session()
        _ = t.say("EHLO c.test\r\n")
        #expect(t.say("auth plain\r\n") == "334 \r\n")
        #expect(t.say(Self.b64("alice@example.test\0alice@example.test\0s3cret pass") + "\r\n") == "235 2.7.0 Authentication successful\r\n")

        // Acting for somebody else (authzid ≠ authcid) is refused without asking the handler.
        var u = Session()
        _ = u.say("EHLO c.test\r\n")
        #expect(u.say("AUTH PLAIN \(Self.b64("bob@example.test\0alice@example.test\0s3cret pass"))\r\n") == "535 5.7.8 Authentication credentials invalid\r\n")
        #expect(u.h.attempts.isEmpty && u.m.authenticatedUser == nil)
    }

    @Test("LOGIN with and without an initial response")
    func login() {
        var s = Session()
        _ = s.say("EHLO c.test\r\n")
        #expect(s.say("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n")
        #expect(s.say(Self.b64("alice@example.test") + "\r\n") == "334 UGFzc3dvcmQ6\r\n")
        #expect(s.say(Self.b64("s3cret pass") + "\r\n") == "235 2.7.0 Authentication successful\r\n")

        var t = Session()
        _ = t.say("EHLO c.test\r\n")
        // Pipelined by an eager client: the whole exchange in one packet.
        let r = t.say("AUTH LOGIN \(Self.b64("alice@example.test"))\r\n\(Self.b64("s3cret pass"))\r\nMAIL FROM:<alice@example.test>\r\n")
        #expect(r == "334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n250 2.1.0 Sender OK\r\n", "\(r)")
    }

    @Test("failures: bad password, cancel, bad base64, unknown mechanism, in a transaction, before EHLO; closed after 3")
    func failures() {
        var s = Session()
        #expect(s.say("AUTH PLAIN \(Self.good)\r\n") == "503 5.5.1 Send EHLO or HELO first\r\n")
        _ = s.say("HELO c.test\r\n")
        #expect(s.say("AUTH PLAIN \(Self.good)\r\n") == "503 5.5.1 Send EHLO or HELO first\r\n", "AUTH needs EHLO")
        _ = s.say("EHLO c.test\r\n")
        #expect(s.say("AUTH CRAM-MD5\r\n") == "504 5.5.4 Unrecognized authentication type (PLAIN and LOGIN are offered)\r\n")
        #expect(s.say("AUTH\r\n") == "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n")
        #expect(s.say("AUTH LOGIN\r\n*\r\n") == "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n")
        #expect(s.say("AUTH PLAIN\r\n%%%\r\n") == "334 \r\n501 5.5.2 Cannot decode the response (base64)\r\n")
        #expect(s.say("MAIL FROM:<a@b.test>\r\nAUTH PLAIN \(Self.good)\r\nRSET\r\n").hasSuffix(
            "503 5.5.1 AUTH is not permitted during a mail transaction\r\n250 2.0.0 Reset OK\r\n"))
        #expect(s.h.attempts.isEmpty)

        var t = Session()
        _ = t.say("EHLO c.test\r\n")
        let bad = Self.b64("\0alice@example.test\0wrong")
        #expect(t.say("AUTH PLAIN \(bad)\r\n") == "535 5.7.8 Authentication credentials invalid\r\n")
        #expect(t.say("AUTH PLAIN \(Self.b64("\0nobody@example.test\0s3cret pass"))\r\n") == "535 5.7.8 Authentication credentials invalid\r\n")
        #expect(t.say("AUTH PLAIN \(bad)\r\n") == "535 5.7.8 Authentication credentials invalid\r\n421 4.7.0 Too many failed authentication attempts; closing\r\n")
        #expect(t.m.isClosed)
        #expect(t.h.attempts.map(\.password) == ["wrong", "s3cret pass", "wrong"])
    }

    @Test("PLAIN is exactly RFC 4616's form: trailing NULs, a missing or empty password, more fields are refused without asking")
    func plainForm() {
        for bad in [
            "\0alice@example.test\0s3cret pass\0", "\0alice@example.test\0s3cret pass\0\0", "\0alice@example.test\0",
            "\0alice@example.test", "alice@example.test\0alice@example.test\0s3cret pass\0x", "\0\0s3cret pass",
        ] {
            var s = Session()
            _ = s.say("EHLO c.test\r\n")
            #expect(s.say("AUTH PLAIN \(Self.b64(bad))\r\n") == "535 5.7.8 Authentication credentials invalid\r\n", "\(Array(bad.utf8))")
            #expect(s.h.attempts.isEmpty && s.m.authenticatedUser == nil)
        }
    }

    @Test("after any error in a SASL exchange (an over-long response, a bare LF) the next line is a command, never credentials")
    func exchangeEndsOnError() {
        var s = Session()
        _ = s.say("EHLO c.test\r\n")
        #expect(s.say("AUTH PLAIN\r\n") == "334 \r\n")
        let long = s.say(String(repeating: "A", count: 20_000) + "\r\n")
        #expect(long.hasPrefix("500 5.5.2"), "\(long)")
        #expect(s.say(Self.good + "\r\n").hasPrefix("500 5.5.1"), "taken as a command")
        #expect(s.h.attempts.isEmpty && s.m.authenticatedUser == nil)
        #expect(s.say("NOOP\r\n").hasPrefix("250"))

        var t = Session()
        _ = t.say("EHLO c.test\r\n")
        #expect(t.say("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n")
        #expect(t.say(Self.b64("alice@example.test") + "\n").hasPrefix("500 5.5.2"))
        #expect(t.say(Self.b64("s3cret pass") + "\r\n").hasPrefix("500 5.5.1"))
        #expect(t.h.attempts.isEmpty && t.m.authenticatedUser == nil)
    }

    @Test("an answer that comes later: the machine waits, the pipelined rest follows the 235")
    func later() {
        var s = Session(policy: true)
        s.h.answerLater = true
        _ = s.say("EHLO c.test\r\n")
        let input = Array("AUTH PLAIN \(Self.good)\r\nMAIL FROM:<alice@example.test>\r\n".utf8)
        let k = input.withUnsafeBytes { s.m.consume($0, into: s.out, handler: s.h) }
        #expect(s.out.isEmpty && s.m.isAwaitingDecision)
        #expect(s.h.attempts.count == 1)
        let taken = s.m.takeCredentials()
        #expect(taken.user.isEmpty && taken.password.isEmpty, "the machine forgets the password once handed over")
        _ = s.m.resolveAuth(.authenticated("alice@example.test"), into: s.out)
        let rest = Array(input[k...])
        _ = rest.withUnsafeBytes { s.m.consume($0, into: s.out, handler: s.h) }
        #expect(String(decoding: s.out.bytes, as: UTF8.self) == "235 2.7.0 Authentication successful\r\n250 2.1.0 Sender OK\r\n")
        #expect(s.h.senders == ["alice@example.test:alice@example.test"], "the policy sees who authenticated")
    }

    @Test("submission: MAIL requires AUTH (530 5.7.0), asking for STARTTLS first when not on TLS")
    func requireAuth() {
        var plain = Session(requireAuth: true, tls: false)
        _ = plain.say("EHLO c.test\r\n")
        #expect(plain.say("MAIL FROM:<alice@example.test>\r\n") == "530 5.7.0 Must issue a STARTTLS command first\r\n")
        var s = Session(requireAuth: true)
        _ = s.say("EHLO c.test\r\n")
        #expect(s.say("MAIL FROM:<alice@example.test>\r\n") == "530 5.7.0 Authentication required\r\n")
        #expect(s.say("AUTH PLAIN \(Self.good)\r\nMAIL FROM:<alice@example.test> AUTH=<>\r\n")
            == "235 2.7.0 Authentication successful\r\n250 2.1.0 Sender OK\r\n")
    }

    @Test("TLS starts the session over: an authentication from before does not survive")
    func resetByTLS() {
        var s = Session()
        _ = s.say("EHLO c.test\r\nAUTH PLAIN \(Self.good)\r\n")
        #expect(s.m.authenticatedUser != nil)
        s.m.tlsEstablished()
        #expect(s.m.authenticatedUser == nil)
    }
}
