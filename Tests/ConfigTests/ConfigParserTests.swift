import Config
import DNS
import SMTP
import Reactor
import Testing

func parse(_ text: String, base: String? = nil) throws(ConfigErrors) -> Configuration {
    try ConfigParser.parse(text, file: "tern.conf", baseDirectory: base)
}

func errors(_ text: String) -> [String] {
    do {
        _ = try parse(text)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite("Configuration language")
struct ConfigParserTests {
    @Test("the issue's example parses exactly")
    func example() throws {
        let c = try parse(
            """
            hostname mx.example.test
            spool /var/spool/tern
            listen smtp 127.0.0.1:2525
            domain example.test {
                aliases /etc/tern/example.test/aliases
            }
            deliver maildir /var/mail/%{domain}/%{user}
            limits {
                message-size 50M
                recipients 100
            }
            """)
        #expect(c.hostname == "mx.example.test")
        #expect(c.spool == "/var/spool/tern")
        #expect(c.listeners == [Configuration.Listener(kind: .smtp, host: "127.0.0.1", port: 2525, line: 3)])
        #expect(c.domains.count == 1)
        #expect(c.domains[0].name == (try Domain("example.test")))
        #expect(c.domains[0].aliases == "/etc/tern/example.test/aliases")
        #expect(c.domains[0].suffixSeparators == "+" && c.domains[0].dropCharacters == ".")
        #expect(c.delivery == .maildir("/var/mail/%{domain}/%{user}"))
        #expect(c.limits.messageSize == 50 * 1024 * 1024)
        #expect(c.limits.recipients == 100)
        #expect(Configuration.Limits().recipients == 1000, "the default, as Postfix and OpenSMTPD")
    }

    @Test("every statement and its extensions")
    func everything() throws {
        let c = try parse(
            """
            # a comment line
            hostname MX.Example.Test   # trailing comment
            listen smtp [::1]:25
            listen submission 127.0.0.1:587
            listen submissions 127.0.0.1:465
            domain Bücher.Example {
                suffix-separators "+-"
                drop-characters ""
                users users/bücher
                submission-senders own-address
            }
            domain other.test {
            }
            deliver mda "/usr/bin/maildrop -d %{user}@%{domain}" timeout 2m
            limits {
                message-size 512K
                recipients 5
                errors 3
                command-timeout 1m
                data-timeout 90s
                queue-lifetime 3d
            }
            """, base: "/etc/tern")
        #expect(c.hostname == "mx.example.test")
        #expect(c.listeners.map(\.kind) == [.smtp, .submission, .submissions])
        #expect(c.listeners[0].host == "::1")
        #expect(c.domains.map(\.name.ascii) == ["xn--bcher-kva.example", "other.test"])
        #expect(c.domains[0].suffixSeparators == "+-" && c.domains[0].dropCharacters == "")
        #expect(c.domains[0].users == "/etc/tern/users/bücher" && c.domains[0].usersLine == 9)
        #expect(c.domains[0].submissionSenders == .ownAddress && c.domains[1].submissionSenders == .ownDomain)
        #expect(c.domains[1].users == nil)
        #expect(c.delivery == .mda(["/usr/bin/maildrop", "-d", "%{user}@%{domain}"], timeout: 120))
        #expect(c.limits == Configuration.Limits(messageSize: 512 * 1024, recipients: 5, errors: 3, commandTimeout: 60, dataTimeout: 90, queueLifetime: 3 * 86400))
        #expect(c.spool == "./var/spool", "the default stays when not given")
        #expect(c.resolver == .system, "the default resolver")
        #expect(c.spf == .reject, "SPF fail is refused by default")
        #expect(try parse("listen smtp 127.0.0.1:25\nspf tag\n").spf == .tag)
        #expect(c.localDomain(try Domain("xn--bcher-kva.example.")) != nil)
        #expect(c.localDomain(try Domain("example.test")) == nil)
    }

    @Test("resolver: system, servers in order, or a zone file (relative to the config)", arguments: [
        ("resolver system", ResolverSetting.system),
        ("resolver 127.0.0.1:5353 [::1]:53 10.0.0.1", .servers([DNSServer(host: "127.0.0.1", port: 5353), DNSServer(host: "::1"), DNSServer(host: "10.0.0.1")])),
        ("resolver zone test.zone", .zone("/etc/tern/test.zone")),
        ("resolver zone /var/lib/tern/dns.zone", .zone("/var/lib/tern/dns.zone")),
    ])
    func resolver(_ line: String, _ expected: ResolverSetting) throws {
        #expect(try parse("listen smtp 127.0.0.1:25\n\(line)\n", base: "/etc/tern").resolver == expected)
    }

    @Test("io-backend: auto by default, or a backend by name", arguments: [
        ("", IOBackendKind.auto), ("io-backend auto\n", .auto), ("io-backend epoll\n", .epoll), ("io-backend io_uring\n", .ioUring),
    ])
    func ioBackend(_ line: String, _ expected: IOBackendKind) throws {
        #expect(try parse("listen smtp 127.0.0.1:25\n\(line)").ioBackend == expected)
    }

    @Test("relative paths resolve against the config file's folder")
    func relativePaths() throws {
        let c = try parse("spool var/spool\nlisten smtp 127.0.0.1:25\ndomain a.test {\n aliases aliases/a.test\n}\ndeliver maildir mail/%{user}\n", base: "/etc/tern")
        #expect(c.spool == "/etc/tern/var/spool")
        #expect(c.domains[0].aliases == "/etc/tern/aliases/a.test")
        #expect(c.delivery == .maildir("/etc/tern/mail/%{user}"))
    }

    @Test("the embedded default parses")
    func embeddedDefault() throws {
        let c = try parse(Configuration.embeddedDefault)
        #expect(c.listeners == [Configuration.Listener(kind: .smtp, host: "127.0.0.1", port: 2525, line: 4)])
        #expect(c.domains.map(\.name.ascii) == ["localhost"])
        #expect(c.delivery == .maildir("./var/mail/%{domain}/%{user}"))
    }

    @Test(
        "every error names the file and line",
        arguments: [
            ("listen smtp 127.0.0.1:25\nfrobnicate yes\n", "tern.conf:2: unknown statement 'frobnicate'"),
            ("listen smtp 127.0.0.1\n", "tern.conf:1: invalid address '127.0.0.1'"),
            ("listen smtp mail.example.com:25\n", "tern.conf:1: invalid address"),
            ("listen smtp 127.0.0.1:0\n", "tern.conf:1: invalid address"),
            ("listen smtps 127.0.0.1:25\n", "tern.conf:1: unknown listener kind 'smtps'"),
            ("listen smtp 127.0.0.1:25\nlisten smtp 127.0.0.1:25\n", "tern.conf:2: 127.0.0.1:25 is already a listener"),
            ("hostname\nlisten smtp 127.0.0.1:25\n", "tern.conf:1: usage: hostname NAME"),
            ("hostname a b\nlisten smtp 127.0.0.1:25\n", "tern.conf:1: usage: hostname NAME"),
            ("hostname bad..name\nlisten smtp 127.0.0.1:25\n", "tern.conf:1: invalid hostname 'bad..name'"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n", "tern.conf:2: 'domain' block is not closed"),
            ("listen smtp 127.0.0.1:25\n}\n", "tern.conf:2: '}' without an open block"),
            ("listen smtp 127.0.0.1:25\ndomain a.test\n", "tern.conf:2: usage: domain NAME {"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n listen smtp 127.0.0.1:26\n}\n", "tern.conf:3: 'listen' is not allowed inside a domain block"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n}\ndomain A.TEST. {\n}\n", "tern.conf:4: domain 'A.TEST.' is configured twice"),
            ("listen smtp 127.0.0.1:25\nlimits {\n message-size lots\n}\n", "tern.conf:3: invalid size 'lots'"),
            ("listen smtp 127.0.0.1:25\nlimits {\n recipients 0\n}\n", "tern.conf:3: invalid recipient limit '0'"),
            ("listen smtp 127.0.0.1:25\nlimits {\n data-timeout soon\n}\n", "tern.conf:3: invalid duration 'soon'"),
            ("listen smtp 127.0.0.1:25\nlimits {\n speed 9\n}\n", "tern.conf:3: unknown limit 'speed'"),
            ("listen smtp 127.0.0.1:25\ndeliver maildir /var/mail/%{domain}\n", "tern.conf:2: a maildir path must contain %{user} or %{rcpt}"),
            ("listen smtp 127.0.0.1:25\ndeliver maildir /var/mail/%{usr}\n", "tern.conf:2: unknown placeholder %{usr}"),
            ("listen smtp 127.0.0.1:25\ndeliver mda \"maildrop -d %{user}\"\n", "tern.conf:2: the mda program must be an absolute path"),
            ("listen smtp 127.0.0.1:25\ndeliver mda \"/bin/x '%{user}\"\n", "tern.conf:2: the mda command is empty or has an unterminated quote"),
            ("listen smtp 127.0.0.1:25\ndeliver pigeon /x\n", "tern.conf:2: unknown delivery 'pigeon'"),
            ("listen smtp 127.0.0.1:25\ndeliver maildir /a/%{user}\ndeliver maildir /b/%{user}\n", "tern.conf:3: 'deliver' is given twice"),
            ("listen smtp 127.0.0.1:25\nhostname \"unterminated\n", "tern.conf:2: unterminated quoted string"),
            ("hostname a.test\n", "tern.conf:1: no 'listen' statement"),
            ("listen smtp 127.0.0.1:25\nresolver\n", "tern.conf:2: usage: resolver system | resolver ADDRESS[:PORT]... | resolver zone FILE"),
            ("listen smtp 127.0.0.1:25\nresolver dns.example.com\n", "tern.conf:2: invalid DNS server address 'dns.example.com'"),
            ("listen smtp 127.0.0.1:25\nresolver 127.0.0.1:99999\n", "tern.conf:2: invalid DNS server address '127.0.0.1:99999'"),
            ("listen smtp 127.0.0.1:25\nresolver zone\n", "tern.conf:2: usage: resolver zone FILE"),
            ("listen smtp 127.0.0.1:25\nresolver system extra\n", "tern.conf:2: 'resolver system' takes nothing after it"),
            ("listen smtp 127.0.0.1:25\nresolver system\nresolver system\n", "tern.conf:3: 'resolver' is given twice"),
            ("listen smtp 127.0.0.1:25\nspf never\n", "tern.conf:2: usage: spf reject|tag"),
            ("listen smtp 127.0.0.1:25\nspf tag\nspf reject\n", "tern.conf:3: 'spf' is given twice"),
            ("listen smtp 127.0.0.1:25\nhostname a\u{7}b\n", "tern.conf:2: control character U+7"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n users\n}\n", "tern.conf:3: usage: users FILE"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n users a\n users b\n}\n", "tern.conf:4: 'users' is given twice in this domain"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n submission-senders anyone\n}\n", "tern.conf:3: usage: submission-senders own-address|own-domain|local-domains|any"),
            ("listen smtp 127.0.0.1:25\nio-backend kqueue\n", "tern.conf:2: usage: io-backend auto|epoll|io_uring"),
            ("listen smtp 127.0.0.1:25\nio-backend\n", "tern.conf:2: usage: io-backend auto|epoll|io_uring"),
            ("listen smtp 127.0.0.1:25\nio-backend epoll\nio-backend io_uring\n", "tern.conf:3: 'io-backend' is given twice"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n io-backend epoll\n}\n", "tern.conf:3: 'io-backend' is not allowed inside a domain block"),
            ("listen smtp 127.0.0.1:25\nuser\n", "tern.conf:2: usage: user NAME"),
            ("listen smtp 127.0.0.1:25\nuser Root\n", "tern.conf:2: invalid user 'Root'"),
            ("listen smtp 127.0.0.1:25\nqueue-user 9lives\n", "tern.conf:2: invalid queue-user '9lives'"),
            ("listen smtp 127.0.0.1:25\nqueue-user a/b\n", "tern.conf:2: invalid queue-user 'a/b'"),
            ("listen smtp 127.0.0.1:25\nuser mail\nuser _tern\n", "tern.conf:3: 'user' is given twice"),
            ("listen smtp 127.0.0.1:25\nuser _ternq\n", "tern.conf:2: user and queue-user are both '_ternq': they must differ"),
            ("listen smtp 127.0.0.1:25\nuser smtp\nqueue-user smtp\n", "tern.conf:3: user and queue-user are both 'smtp'"),
            ("listen smtp 127.0.0.1:25\ndomain a.test {\n user x\n}\n", "tern.conf:3: 'user' is not allowed inside a domain block"),
        ])
    func error(_ text: String, _ expected: String) {
        let found = errors(text)
        #expect(found.contains { $0.hasPrefix(expected) }, "expected \(expected), got \(found)")
    }

    @Test func users() throws {
        let d = try parse("listen smtp 127.0.0.1:25\n")
        #expect(d.user == "_tern" && d.queueUser == "_ternq")
        let c = try parse("listen smtp 127.0.0.1:25\nuser tern-smtp\nqueue-user _tern_q\n")
        #expect(c.user == "tern-smtp" && c.queueUser == "_tern_q")
        #expect(c.userLine == 2 && c.queueUserLine == 3)
    }

    @Test("all errors of a file are reported at once")
    func manyErrors() {
        let found = errors("bogus 1\nlisten smtp nowhere\nlimits {\n recipients -1\n}\nhostname\nlisten smtp 127.0.0.1:25\n")
        #expect(found.count == 4, "\(found)")
        #expect(found.map { $0.split(separator: ":")[1] } == ["1", "2", "4", "6"])
    }
}

@Suite("Aliases and recipient resolution")
struct ResolverTests {
    static let aliasText = """
        # aliases for example.test
        pepe: jose
        flowers: rose@backgarden.example, lilly@pond.example
        Añil: azul, índigo
        first.last: jose
        team: jose, maria, team2
        team2: maria, ana
        loop1: loop2
        loop2: loop1
        tubo: | /usr/bin/handler --quiet "two words"
        list+owner: ana
        deep0: deep1
        deep1: deep2
        deep2: deep3
        deep3: deep4
        deep4: deep5
        deep5: deep6
        deep6: deep7
        deep7: deep8
        deep8: deep9
        deep9: deep10
        deep10: deep11
        deep11: jose
        """

    static func resolver(catchAll: Bool = false) throws -> RecipientResolver {
        let domain = try Domain("example.test")
        var cfg = Configuration.LocalDomain(name: domain, line: 1)
        cfg.suffixSeparators = "+-"
        cfg.dropCharacters = "._"
        let text = aliasText + (catchAll ? "\n*: postmaster\n" : "")
        let aliases = try AliasFile.parse(text, file: "aliases", domain: domain, dropCharacters: cfg.dropCharacters)
        let other = Configuration.LocalDomain(name: try Domain("bücher.example"), line: 2)
        let users: Set<String> = ["jose", "maria", "ana", "azul", "índigo", "postmaster", "strasse", "σοφοσ", "\u{13A0}\u{13A1}"]
        return RecipientResolver(domains: [.init(config: cfg, aliases: aliases), .init(config: other)]) { user, _ in users.contains(user) }
    }

    static func mailboxes(_ names: [String], _ domain: String = "example.test") -> Resolution {
        .deliver(names.map { .mailbox(user: $0, domain: try! Domain(domain)) })
    }

    @Test(
        "resolution table",
        arguments: [
            ("jose@example.test", mailboxes(["jose"])),
            ("JOSE@Example.Test.", mailboxes(["jose"])),
            ("jose@EXAMPLE.test", mailboxes(["jose"])),
            ("jose+tag@example.test", mailboxes(["jose"])),
            ("jose-tag+more@example.test", mailboxes(["jose"])),
            ("j.o_se@example.test", mailboxes(["jose"])),
            ("pepe@example.test", mailboxes(["jose"])),
            ("pepe+x@example.test", mailboxes(["jose"])),
            ("firstlast@example.test", mailboxes(["jose"])),
            ("First.Last@example.test", mailboxes(["jose"])),
            ("añil@example.test", mailboxes(["azul", "índigo"])),
            ("AÑIL@example.test", mailboxes(["azul", "índigo"])),
            ("a.ñi_l@example.test", mailboxes(["azul", "índigo"])),
            ("team@example.test", mailboxes(["jose", "maria", "ana"])),
            ("list+owner@example.test", mailboxes(["ana"])),
            // Unicode full case folding (chasquid's normalisation): ß is ss, the final sigma is σ,
            // fullwidth letters are their ASCII selves, Cherokee folds to its capitals.
            ("STRASSE@bücher.example", mailboxes(["strasse"], "bücher.example")),
            ("straße@xn--bcher-kva.example", mailboxes(["strasse"], "bücher.example")),
            ("Stra\u{1E9E}e@bücher.example", mailboxes(["strasse"], "bücher.example")),
            ("ΣΟΦΟΣ@example.test", mailboxes(["σοφοσ"])),
            ("σοφος@example.test", mailboxes(["σοφοσ"])),
            ("ＪＯＳＥ@example.test", mailboxes(["jose"])),
            ("\u{AB70}\u{AB71}@example.test", mailboxes(["\u{13A0}\u{13A1}"])),
            ("\u{13A0}\u{AB71}@example.test", mailboxes(["\u{13A0}\u{13A1}"])),
            ("nobody@example.test", .unknownUser),
            ("+tag@example.test", .unknownUser),
            ("loop1@example.test", .aliasLoop),
            ("deep0@example.test", .aliasLoop),
            ("deep2@example.test", mailboxes(["jose"])),
            ("flowers@example.test", .deliver([.remote("rose@backgarden.example"), .remote("lilly@pond.example")])),
            ("tubo@example.test", .deliver([.pipe(["/usr/bin/handler", "--quiet", "two words"])])),
            ("postmaster", mailboxes(["postmaster"])),
            ("PostMaster", mailboxes(["postmaster"])),
        ])
    func table(_ address: String, _ expected: Resolution) throws {
        #expect(try Self.resolver().resolve(address) == expected, "\(address)")
    }

    @Test("case folding", arguments: [
        ("bob", "bob"), ("BoB", "bob"), ("", ""), ("a+B.c", "a+b.c"),
        ("ÉLODIE", "élodie"), ("Straße", "strasse"), ("STRA\u{1E9E}E", "strasse"), ("ﬁle", "file"),
        ("ΌΣΟΣ", "όσοσ"), ("όσος", "όσοσ"), ("ＡＢＣ１", "abc1"), ("ſ", "s"), ("µ", "μ"),
        ("İ", "i\u{307}"), ("\u{AB70}", "\u{13A0}"), ("\u{13A0}", "\u{13A0}"), ("日本", "日本"),
    ])
    func folding(_ input: String, _ expected: String) {
        #expect(Array(CaseFolding.fold(input).unicodeScalars) == Array(expected.unicodeScalars), "\(input)")
    }

    @Test(
        "relay and routing tricks are refused",
        arguments: [
            ("user@remote.example", Resolution.notLocal),
            ("jose@example.test.evil.example", .notLocal),
            ("jose@exаmple.test", .notLocal),  // Cyrillic а: an IDN look-alike is another domain
            ("jose@[127.0.0.1]", .notLocal),
            ("user%remote.example@example.test", .refused("percent hack")),
            ("remote.example!user@example.test", .refused("bang path")),
            ("\"user@remote.example\"@example.test", .refused("quoted '@' in the local part")),
            ("\"jose\"@example.test", .refused("quoted local part")),
        ])
    func tricks(_ address: String, _ expected: Resolution) throws {
        let r = try Self.resolver().resolve(address)
        #expect(r == expected, "\(address)")
        #expect(r.reply?.code == 554 && r.reply?.status == EnhancedStatus(5, 7, 1))
    }

    @Test("a catch-all takes unknown users only")
    func catchAll() throws {
        let r = try Self.resolver(catchAll: true)
        #expect(r.resolve("nobody@example.test") == Self.mailboxes(["postmaster"]))
        #expect(r.resolve("jose@example.test") == Self.mailboxes(["jose"]))
        #expect(r.resolve("user@remote.example") == .notLocal)
    }

    @Test("replies for each refusal")
    func replies() {
        #expect(Resolution.unknownUser.reply == Reply(550, EnhancedStatus(5, 1, 1), "No such user here"))
        #expect(Resolution.aliasLoop.reply?.status == EnhancedStatus(5, 4, 6))
        #expect(Resolution.deliver([]).reply == nil)
    }

    @Test(
        "bad alias lines name file and line",
        arguments: [
            ("pepe jose\n", "aliases:1: expected 'user: destination, ...'"),
            ("ok: jose\nbad name: jose\n", "aliases:2: invalid alias name 'bad name'"),
            ("a@b: jose\n", "aliases:1: invalid alias name 'a@b'"),
            ("\n\nempty:\n", "aliases:3: alias 'empty' has no destination"),
            ("x: jose, <evil>\n", "aliases:1: invalid destination '<evil>'"),
            ("x: jose@\n", "aliases:1: invalid destination 'jose@'"),
            ("x: | relative/cmd\n", "aliases:1: a pipe alias needs an absolute command path"),
            ("x: a\nX: b\n", "aliases:2: alias 'X' is given twice"),
            ("*: a\n*: b\n", "aliases:2: the catch-all '*' is given twice"),
        ])
    func badAliases(_ text: String, _ expected: String) throws {
        let domain = try Domain("example.test")
        do {
            _ = try AliasFile.parse(text, file: "aliases", domain: domain, dropCharacters: ".")
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.map(\.description).contains { $0.hasPrefix(expected) }, "\(error.errors)")
        }
    }
}

@Suite("submission-senders")
struct SubmissionSendersTests {
    @Test("own-address, own-domain (the default), local-domains, any; <> always")
    func rules() throws {
        let c = try ConfigParser.parse("listen submission 127.0.0.1:587\ndomain example.test {\n}\ndomain other.test {\n}\n", file: "t")
        let d = c.domains[0]
        func allowed(_ rule: Configuration.SubmissionSenders, _ sender: String) -> Bool {
            rule.allows(user: "alice@example.test", sender: sender, userDomain: d) { c.localDomain($0) != nil }
        }
        #expect(c.domains[0].submissionSenders == .ownDomain)
        for rule in Configuration.SubmissionSenders.allCases { #expect(allowed(rule, ""), "<> under \(rule)") }
        #expect(allowed(.ownAddress, "alice@example.test") && allowed(.ownAddress, "Alice+lists@EXAMPLE.test") && allowed(.ownAddress, "a.lice@example.test"))
        #expect(!allowed(.ownAddress, "bob@example.test") && !allowed(.ownAddress, "alice@other.test"))
        #expect(allowed(.ownDomain, "bob@example.test") && allowed(.ownDomain, "bob@example.test."))
        #expect(!allowed(.ownDomain, "alice@other.test") && !allowed(.ownDomain, "alice@example.test.evil") && !allowed(.ownDomain, "alice"))
        #expect(allowed(.localDomains, "bob@other.test") && !allowed(.localDomains, "bob@elsewhere.example"))
        #expect(allowed(.any, "ceo@bank.example"))
    }

    @Test("durations are bounded: a session's at most a day, the queue's at most a year (no deadline can overflow)")
    func boundedDurations() {
        for (limit, value) in [("command-timeout", "99999999999"), ("session-timeout", "18446744073"), ("spool-timeout", "2d"), ("queue-lifetime", "400d")] {
            let e = errors("listen smtp 127.0.0.1:25\nlimits {\n\(limit) \(value)\n}\n")
            #expect(e.contains { $0.hasPrefix("tern.conf:3: invalid duration '\(value)'") && $0.contains("at most") }, "\(limit): \(e)")
        }
        #expect(errors("listen smtp 127.0.0.1:25\nlimits {\ncommand-timeout 1d\nqueue-lifetime 365d\n}\n").isEmpty)
    }
}
