import SMTP
import Testing

/// The client machine's STARTTLS and AUTH PLAIN, fed server replies by hand.
@Suite("client STARTTLS and AUTH")
struct ClientTLSTests {
    struct Script {
        var m: ClientStateMachine
        let out = OutputBuffer()
        init(_ c: ClientConfiguration) { m = ClientStateMachine(configuration: c) }
        /// Feeds a server reply; returns the client's event and what it wrote.
        mutating func reply(_ s: String) -> (ClientEvent, String) {
            let bytes = Array(s.utf8)
            let (_, e) = bytes.withUnsafeBytes { m.process($0, into: out) }
            defer { out.clear() }
            return (e, String(decoding: out.bytes, as: UTF8.self))
        }
    }

    static let ehloTLS = "250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
    static let ehloAuth = "250-mx.test\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n"

    @Test("STARTTLS after EHLO, EHLO again over TLS, then AUTH PLAIN, then ready")
    func startTLSThenAuth() {
        var s = Script(ClientConfiguration(heloName: "c.test", startTLS: true, auth: ("alice@example.test", "pw")))
        #expect(s.reply("220 mx.test ESMTP\r\n").1 == "EHLO c.test\r\n")
        #expect(s.reply(Self.ehloTLS) == (.needInput, "STARTTLS\r\n"))
        #expect(s.reply("220 2.0.0 Ready to start TLS\r\n") == (.startTLS, ""))
        #expect(!s.m.isTLS)
        s.m.tlsEstablished(into: s.out)
        #expect(String(decoding: s.out.bytes, as: UTF8.self) == "EHLO c.test\r\n")
        s.out.clear()
        #expect(s.m.isTLS && s.m.capabilities == ServerCapabilities(), "what was said before TLS is forgotten")
        #expect(s.reply(Self.ehloAuth) == (.needInput, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\n"))
        #expect(s.reply("235 2.7.0 Authentication successful\r\n").0 == .ready)
        #expect(s.m.isReady)
    }

    @Test("AUTH LOGIN when the server offers only LOGIN: user and password after each 334, then ready; a refusal fails")
    func authLogin() {
        var s = Script(ClientConfiguration(heloName: "c.test", auth: ("alice@example.test", "pw"), implicitTLS: true))
        _ = s.reply("220 mx.test\r\n")
        #expect(s.reply("250-mx.test\r\n250 AUTH LOGIN\r\n") == (.needInput, "AUTH LOGIN\r\n"))
        #expect(s.reply("334 VXNlcm5hbWU6\r\n") == (.needInput, "YWxpY2VAZXhhbXBsZS50ZXN0\r\n"))
        #expect(s.reply("334 UGFzc3dvcmQ6\r\n") == (.needInput, "cHc=\r\n"))
        #expect(s.reply("235 2.7.0 Authentication successful\r\n").0 == .ready)
        var r = Script(ClientConfiguration(heloName: "c.test", auth: ("alice@example.test", "pw"), implicitTLS: true))
        _ = r.reply("220 mx.test\r\n")
        _ = r.reply("250-mx.test\r\n250 AUTH LOGIN\r\n")
        _ = r.reply("334 VXNlcm5hbWU6\r\n")
        _ = r.reply("334 UGFzc3dvcmQ6\r\n")
        #expect(r.reply("535 5.7.8 Authentication credentials invalid\r\n") == (.failed(code: 535, text: "Authentication credentials invalid"), "QUIT\r\n"))
    }

    @Test("opportunistic STARTTLS: used when offered; in clear when not offered, refused, or after HELO")
    func opportunistic() {
        var config = ClientConfiguration(heloName: "c.test")
        config.opportunisticTLS = true
        var offered = Script(config)
        _ = offered.reply("220 mx.test\r\n")
        #expect(offered.reply(Self.ehloTLS) == (.needInput, "STARTTLS\r\n"))
        #expect(offered.reply("220 2.0.0 Ready\r\n") == (.startTLS, ""))
        offered.m.tlsEstablished(into: offered.out)
        offered.out.clear()
        #expect(offered.reply(Self.ehloTLS).0 == .ready, "no STARTTLS twice")
        #expect(offered.m.isTLS && !offered.m.tlsRefused)

        var absent = Script(config)
        _ = absent.reply("220 mx.test\r\n")
        #expect(absent.reply("250-mx.test\r\n250 PIPELINING\r\n") == (.ready, ""))
        #expect(!absent.m.isTLS && !absent.m.tlsRefused)

        var refused = Script(config)
        _ = refused.reply("220 mx.test\r\n")
        _ = refused.reply(Self.ehloTLS)
        #expect(refused.reply("454 4.7.0 TLS not available\r\n") == (.ready, ""))
        #expect(!refused.m.isTLS && refused.m.tlsRefused && refused.m.capabilities.pipelining, "the first EHLO's capabilities stand")

        var closing = Script(config)
        _ = closing.reply("220 mx.test\r\n")
        _ = closing.reply(Self.ehloTLS)
        #expect(closing.reply("421 4.3.2 going down\r\n").0 == .closed(code: 421))

        var helo = Script(config)
        _ = helo.reply("220 mx.test\r\n")
        #expect(helo.reply("502 5.5.1 no EHLO\r\n").1 == "HELO c.test\r\n")
        #expect(helo.reply("250 mx.test\r\n") == (.ready, ""))

        // A password still never goes out in clear.
        config.auth = ("a@b.test", "pw")
        var auth = Script(config)
        _ = auth.reply("220 mx.test\r\n")
        #expect(auth.reply("250-mx.test\r\n250 AUTH PLAIN\r\n") == (.failed(code: 0, text: "AUTH without TLS refused"), "QUIT\r\n"))
    }

    @Test("failures: STARTTLS not offered or refused, AUTH refused, AUTH without TLS never sent")
    func failures() {
        var a = Script(ClientConfiguration(heloName: "c.test", startTLS: true))
        _ = a.reply("220 mx.test\r\n")
        #expect(a.reply("250-mx.test\r\n250 PIPELINING\r\n") == (.failed(code: 0, text: "STARTTLS not offered"), "QUIT\r\n"))

        var b = Script(ClientConfiguration(heloName: "c.test", startTLS: true))
        _ = b.reply("220 mx.test\r\n")
        _ = b.reply(Self.ehloTLS)
        #expect(b.reply("454 4.7.0 TLS not available\r\n") == (.failed(code: 454, text: "TLS not available"), "QUIT\r\n"))

        var c = Script(ClientConfiguration(heloName: "c.test", auth: ("a@b.test", "pw")))
        _ = c.reply("220 mx.test\r\n")
        #expect(c.reply(Self.ehloAuth) == (.failed(code: 0, text: "AUTH without TLS refused"), "QUIT\r\n"), "a password never goes out in clear")

        var d = Script(ClientConfiguration(heloName: "c.test", auth: ("a@b.test", "pw"), implicitTLS: true))
        _ = d.reply("220 mx.test\r\n")
        #expect(d.reply(Self.ehloAuth).1.hasPrefix("AUTH PLAIN "))
        #expect(d.reply("535 5.7.8 Authentication credentials invalid\r\n") == (.failed(code: 535, text: "Authentication credentials invalid"), "QUIT\r\n"))

        var f = Script(ClientConfiguration(heloName: "c.test", auth: ("a@b.test", "pw"), implicitTLS: true))
        _ = f.reply("220 mx.test\r\n")
        #expect(f.reply("250-mx.test\r\n250 AUTH CRAM-MD5\r\n") == (.failed(code: 0, text: "neither AUTH PLAIN nor LOGIN offered"), "QUIT\r\n"))

        var e = Script(ClientConfiguration(heloName: "c.test", startTLS: true))
        _ = e.reply("220 mx.test\r\n")
        #expect(e.reply("502 5.5.1 no EHLO\r\n").1 == "HELO c.test\r\n")
        #expect(e.reply("250 mx.test\r\n") == (.failed(code: 0, text: "STARTTLS not offered"), "QUIT\r\n"))
    }
}
