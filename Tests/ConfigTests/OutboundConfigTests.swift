import Config
import SMTP
import Testing

/// The errors of `text` followed by a listener (a configuration without one is an error too).
func e(_ text: String) -> [String] { errors(text + "\nlisten smtp 127.0.0.1:25") }

@Suite("Configuration: outbound and relay statements")
struct OutboundConfigTests {
    @Test("outbound settings, retry limits, relay routes parse with their defaults")
    func parses() throws {
        let c = try parse(
            """
            outbound port 2525
            outbound ca-file certs/ca.pem
            outbound connections 50
            outbound connections-per-destination 4
            outbound messages-per-connection 30
            outbound mta-sts off
            outbound mta-sts-port 8443
            limits {
                retry-interval 5s
                retry-max-interval 10m
                delay-warning 2h
            }
            relay relayed.example
            relay provider.example via smtp+starttls://me%40home@smtp.provider.net auth secret
            relay * via smtps://[::1]:4650
            listen smtp 127.0.0.1:25
            """, base: "/etc/tern")
        #expect(c.outbound.port == 2525)
        #expect(c.outbound.caFile == "/etc/tern/certs/ca.pem")
        #expect(c.outbound.connections == 50)
        #expect(c.outbound.connectionsPerDestination == 4)
        #expect(c.outbound.messagesPerConnection == 30)
        #expect(!c.outbound.mtaSTS && c.outbound.mtaSTSPort == 8443)
        #expect(c.limits.retryInterval == 5)
        #expect(c.limits.retryMaxInterval == 600)
        #expect(c.relays.count == 3)
        #expect(c.limits.delayWarning == 7200)
        #expect(c.relays[0] == Configuration.Relay(domain: try Domain("relayed.example"), via: nil, line: 13))
        #expect(c.relays[1].via == Smarthost(security: .startTLS, host: "smtp.provider.net", port: 587, user: "me@home", authFile: "/etc/tern/secret"))
        #expect(c.relays[2].domain == nil)
        #expect(c.relays[2].via == Smarthost(security: .implicitTLS, host: "::1", port: 4650))
        #expect(c.relayDomains == [try Domain("relayed.example"), try Domain("provider.example")])
        let d = try parse("listen smtp 127.0.0.1:25")
        #expect(d.outbound == Configuration.Outbound())
        #expect(d.outbound.port == 25 && d.outbound.mtaSTS && d.outbound.mtaSTSPort == 443)
        #expect(e("outbound mta-sts maybe") == ["tern.conf:1: usage: outbound mta-sts on|off"])
        #expect(d.relays.isEmpty)
        #expect(d.limits.delayWarning == 4 * 3600 && d.limits.retryInterval == 60 && d.limits.retryMaxInterval == 3600)
        #expect(try parse("limits {\ndelay-warning off\n}\nlisten smtp 127.0.0.1:25").limits.delayWarning == 0)
    }

    @Test("relay URLs: schemes, default ports, users, bad input")
    func urls() throws {
        #expect(try Smarthost.parse("smtp://mx.example.net").get() == Smarthost(security: .opportunistic, host: "mx.example.net", port: 25))
        #expect(try Smarthost.parse("smtps://u@192.0.2.1").get() == Smarthost(security: .implicitTLS, host: "192.0.2.1", port: 465, user: "u"))
        #expect(try Smarthost.parse("SMTP+STARTTLS://Smtp.Example.NET:2587/").get() == Smarthost(security: .startTLS, host: "smtp.example.net", port: 2587))
        #expect(try Smarthost.parse("smtp://bücher.example").get().host == "xn--bcher-kva.example")
        for bad in ["mx.example.net", "http://mx.example.net", "smtp://", "smtp://mx:0", "smtp://mx:99999", "smtp://@mx", "smtp://[::1", "smtp://mx/x", "smtp://bad host"] {
            #expect(throws: URLError.self, "\(bad)") { try Smarthost.parse(bad).get() }
        }
        #expect(Smarthost(security: .startTLS, host: "::1", port: 587, user: "u").description == "smtp+starttls://u@[::1]:587")
    }

    @Test("bad outbound and relay statements name the line")
    func badInput() {
        #expect(e("outbound port") == ["tern.conf:1: usage: outbound port N | ca-file FILE | connections N | connections-per-destination N | messages-per-connection N | mta-sts on|off | mta-sts-port N"])
        #expect(e("outbound port 0") == ["tern.conf:1: invalid port '0' (1–65535)"])
        #expect(e("outbound speed 3").first?.hasPrefix("tern.conf:1: unknown outbound setting 'speed'") == true)
        #expect(e("outbound port 25\noutbound port 26") == ["tern.conf:2: 'outbound port' is given twice"])
        #expect(e("outbound connections-per-destination 1001") == ["tern.conf:1: invalid connection limit '1001' (1–1000)"])
        #expect(e("limits {\nretry-interval soon\n}") == ["tern.conf:2: invalid duration 'soon' (e.g. 30s, 5m, 2h, 5d; at most 365d)"])
        #expect(e("relay") == ["tern.conf:1: usage: relay DOMAIN [via URL [auth FILE]] or relay * via URL [auth FILE]"])
        #expect(e("relay *") == ["tern.conf:1: 'relay *' needs 'via URL': it is the route for every other domain"])
        #expect(e("relay a.example to smtp://x") == ["tern.conf:1: usage: relay DOMAIN [via URL [auth FILE]] or relay * via URL [auth FILE]"])
        #expect(e("relay a.example\nrelay A.example") == ["tern.conf:2: relay for 'a.example' is given twice"])
        #expect(e("relay a..example").first?.hasPrefix("tern.conf:1: invalid domain 'a..example' in relay") == true)
        #expect(e("relay * via ftp://x") == ["tern.conf:1: unknown scheme in 'ftp://x' (smtp, smtp+starttls or smtps)"])
        #expect(e("relay * via smtp+starttls://u@x") == ["tern.conf:1: smtp+starttls://u@x:587 names a user: add 'auth FILE' (the file holds the password)"])
        #expect(e("relay * via smtp+starttls://x auth f") == ["tern.conf:1: 'auth FILE' needs a user in the URL (smtp+starttls://USER@host)"])
        #expect(e("relay * via smtp://u@x auth f") == ["tern.conf:1: AUTH only over TLS: use smtp+starttls:// or smtps:// to log in to x"])
        #expect(e("domain a.example {\nrelay b.example\n}") == ["tern.conf:2: 'relay' is not allowed inside a domain block (missing '}'?)"])
    }
}

@Suite("Relayed domains: accepted from anyone, tricks still refused")
struct RelayDomainTests {
    let resolver = RecipientResolver(
        domains: [.init(config: Configuration.LocalDomain(name: try! Domain("local.example"), line: 1))],
        relayDomains: [try! Domain("relayed.example"), try! Domain("bücher.example")]
    ) { user, _ in user == "bob" }

    @Test("a relayed domain's recipients go remote as they were given")
    func relayed() {
        #expect(resolver.resolve("anyone@relayed.example") == .deliver([.remote("anyone@relayed.example")]))
        #expect(resolver.resolve("Any+Tag@RELAYED.example") == .deliver([.remote("Any+Tag@RELAYED.example")]))
        #expect(resolver.resolve("x@xn--bcher-kva.example") == .deliver([.remote("x@xn--bcher-kva.example")]))
        #expect(resolver.resolve("bob@local.example") == .deliver([.mailbox(user: "bob", domain: try! Domain("local.example"))]))
    }

    @Test("other domains stay refused; routing tricks in a relayed domain are refused")
    func refused() {
        #expect(resolver.resolve("x@other.example") == .notLocal)
        #expect(resolver.resolve("x@sub.relayed.example") == .notLocal)
        #expect(resolver.resolve("x@[127.0.0.1]") == .notLocal)
        #expect(resolver.resolve("x%other.example@relayed.example") == .refused("percent hack"))
        #expect(resolver.resolve("other.example!x@relayed.example") == .refused("bang path"))
        #expect(resolver.resolve("\"x@other.example\"@relayed.example") == .refused("quoted '@' in the local part"))
    }
}
