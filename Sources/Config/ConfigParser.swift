// The configuration language: one statement a line, `#` comments, blocks in braces (`{` ends the
// opening line, `}` stands alone), double-quoted strings with backslash escapes. Words are separated
// by spaces, so `%{user}` is part of its word. Every error names the file and the line.

import DNS
import Reactor
import SMTP

/// A problem in a configuration file, printed as `FILE:LINE: message`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { "\(file):\(line): \(message)" }
}

/// Every error of a file (the parser goes on after an error so all are reported at once).
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var errors: [ConfigError]
    public init(errors: [ConfigError]) { self.errors = errors }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

public enum ConfigParser {
    /// Parses configuration text.
    /// - Parameters:
    ///   - file: the name used in error messages.
    ///   - baseDirectory: relative paths are resolved against it (the config file's folder); nil keeps them.
    public static func parse(_ text: String, file: String, baseDirectory: String? = nil) throws(ConfigErrors) -> Configuration {
        var p = Parser(file: file, base: baseDirectory)
        p.run(text)
        if !p.errors.isEmpty { throw ConfigErrors(errors: p.errors) }
        return p.config
    }
}

struct Token: Equatable {
    var text: String
    var quoted: Bool
}

struct Parser {
    let file: String
    let base: String?
    var config = Configuration()
    var errors: [ConfigError] = []
    var block: (kind: String, line: Int)? = nil
    var currentDomain: Configuration.LocalDomain? = nil
    var sawDeliver = false
    var sawResolver = false
    var sawOutbound: Set<String> = []
    var sawSPF = false
    var sawDMARC = false
    var sawIOBackend = false
    var sawSpool = false
    var sawHostname = false
    var seen: Set<String> = []

    init(file: String, base: String?) {
        self.file = file
        self.base = base
    }

    mutating func error(_ line: Int, _ message: String) {
        errors.append(ConfigError(file: file, line: line, message: message))
    }

    mutating func run(_ text: String) {
        var n = 0
        var last = 1
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            n += 1
            guard let tokens = tokenize(raw, line: n), !tokens.isEmpty else { continue }
            last = n
            statement(tokens, line: n)
        }
        if let b = block { error(b.line, "'\(b.kind)' block is not closed with '}'") }
        if config.listeners.isEmpty { error(last, "no 'listen' statement: Tern would not accept mail") }
    }

    /// Splits a line into tokens; nil after reporting an error.
    mutating func tokenize(_ line: Substring, line n: Int) -> [Token]? {
        var tokens: [Token] = []
        var current = ""
        var inToken = false
        var quoted = false
        var it = line.unicodeScalars.makeIterator()
        func flush(_ tokens: inout [Token], _ current: inout String, _ inToken: inout Bool, _ wasQuoted: Bool) {
            if inToken { tokens.append(Token(text: current, quoted: wasQuoted)) }
            current = ""
            inToken = false
        }
        var tokenQuoted = false
        while let c = it.next() {
            if quoted {
                if c == "\"" {
                    quoted = false
                    continue
                }
                if c == "\\" {
                    guard let e = it.next() else { break }
                    switch e {
                    case "n": current.unicodeScalars.append("\n")
                    case "t": current.unicodeScalars.append("\t")
                    case "\\", "\"": current.unicodeScalars.append(e)
                    default:
                        error(n, "unknown escape '\\\(e)' in a quoted string")
                        return nil
                    }
                    continue
                }
                current.unicodeScalars.append(c)
                continue
            }
            switch c {
            case "#":
                flush(&tokens, &current, &inToken, tokenQuoted)
                return tokens
            case " ", "\t", "\r":
                flush(&tokens, &current, &inToken, tokenQuoted)
                tokenQuoted = false
            case "\"":
                if inToken && !tokenQuoted {
                    error(n, "a quote inside a word; quote the whole value")
                    return nil
                }
                quoted = true
                inToken = true
                tokenQuoted = true
            default:
                if c.value < 0x20 || c.value == 0x7F {
                    error(n, "control character U+\(String(c.value, radix: 16, uppercase: true)) in the line")
                    return nil
                }
                current.unicodeScalars.append(c)
                inToken = true
            }
        }
        if quoted {
            error(n, "unterminated quoted string")
            return nil
        }
        flush(&tokens, &current, &inToken, tokenQuoted)
        return tokens
    }

    func path(_ p: String) -> String {
        guard let base, !p.hasPrefix("/") else { return p }
        return base.hasSuffix("/") ? base + p : base + "/" + p
    }

    mutating func statement(_ t: [Token], line n: Int) {
        let word = t[0].quoted ? "" : t[0].text
        // Closing a block.
        if word == "}" {
            guard t.count == 1 else { return error(n, "nothing may follow '}' on its line") }
            guard let b = block else { return error(n, "'}' without an open block") }
            if b.kind == "domain", let d = currentDomain {
                config.domains.append(d)
                currentDomain = nil
            }
            block = nil
            return
        }
        let args = Array(t.dropFirst())
        if let b = block {
            switch b.kind {
            case "domain": domainStatement(word, args, line: n)
            case "limits": limitsStatement(word, args, line: n)
            default: break
            }
            return
        }
        switch word {
        case "hostname":
            guard let v = single(args, "hostname", "NAME", n) else { return }
            if sawHostname { return error(n, "'hostname' is given twice") }
            sawHostname = true
            do {
                config.hostname = try Domain(v).ascii
            } catch {
                self.error(n, "invalid hostname '\(v)': \(error)")
            }
        case "user", "queue-user":
            guard let v = single(args, word, "NAME", n) else { return }
            let isQueue = word == "queue-user"
            if (isQueue ? config.queueUserLine : config.userLine) != 0 { return error(n, "'\(word)' is given twice") }
            guard Configuration.isUserName(v) else {
                return error(n, "invalid \(word) '\(v)': a system user name is 1-32 of a-z, 0-9, '_' and '-', not starting with '-' or a digit")
            }
            if isQueue {
                config.queueUser = v
                config.queueUserLine = n
            } else {
                config.user = v
                config.userLine = n
            }
            if config.user == config.queueUser {
                return error(n, "user and queue-user are both '\(v)': they must differ (the network-facing processes may not read the spool)")
            }
        case "spool":
            guard let v = single(args, "spool", "DIR", n) else { return }
            if sawSpool { return error(n, "'spool' is given twice") }
            sawSpool = true
            config.spool = path(v)
            config.spoolLine = n
        case "certificates":
            guard let v = single(args, "certificates", "DIR", n) else { return }
            if config.certificates != nil { return error(n, "'certificates' is given twice") }
            config.certificates = path(v)
            config.certificatesLine = n
        case "listen":
            listen(args, line: n)
        case "domain":
            guard args.count == 2, args[1].text == "{", !args[1].quoted else {
                return error(n, "usage: domain NAME {")
            }
            let name = args[0].text
            do {
                let d = try Domain(name)
                if config.domains.contains(where: { $0.name == d }) { error(n, "domain '\(name)' is configured twice") }
                currentDomain = Configuration.LocalDomain(name: d, line: n)
            } catch {
                self.error(n, "invalid domain '\(name)': \(error)")
                currentDomain = nil
            }
            block = ("domain", n)
        case "deliver":
            deliver(args, line: n)
        case "limits":
            guard args.count == 1, args[0].text == "{", !args[0].quoted else { return error(n, "usage: limits {") }
            block = ("limits", n)
        case "spf":
            if sawSPF { return error(n, "'spf' is given twice") }
            sawSPF = true
            guard args.count == 1, let p = Configuration.SPFPolicy(rawValue: args[0].text) else {
                return error(n, "usage: spf reject|tag (what an SPF fail at MAIL FROM does)")
            }
            config.spf = p
        case "dmarc":
            if sawDMARC { return error(n, "'dmarc' is given twice") }
            sawDMARC = true
            guard args.count == 1, let a = Configuration.DMARCAction(rawValue: args[0].text) else {
                return error(n, "usage: dmarc reject|quarantine-header|none (what a DMARC fail does)")
            }
            config.dmarc = a
        case "io-backend":
            if sawIOBackend { return error(n, "'io-backend' is given twice") }
            sawIOBackend = true
            guard args.count == 1, let k = IOBackendKind(rawValue: args[0].text) else {
                return error(n, "usage: io-backend auto|epoll|io_uring")
            }
            config.ioBackend = k
        case "public-suffix-list":
            guard let v = single(args, "public-suffix-list", "FILE", n) else { return }
            if config.publicSuffixListLine != 0 { return error(n, "'public-suffix-list' is given twice") }
            config.publicSuffixList = path(v)
            config.publicSuffixListLine = n
        case "outbound":
            outbound(args, line: n)
        case "relay":
            relay(args, line: n)
        case "resolver":
            if sawResolver { return error(n, "'resolver' is given twice") }
            sawResolver = true
            config.resolverLine = n
            switch ResolverSetting.parse(args.map(\.text)) {
            case .success(.zone(let file)): config.resolver = .zone(path(file))
            case .success(let setting): config.resolver = setting
            case .failure(let e): error(n, e.message)
            }
        default:
            error(n, "unknown statement '\(t[0].text)'")
        }
    }

    mutating func single(_ args: [Token], _ name: String, _ what: String, _ n: Int) -> String? {
        guard args.count == 1, !(args[0].text == "{" && !args[0].quoted) else {
            error(n, "usage: \(name) \(what)")
            return nil
        }
        guard !args[0].text.isEmpty else {
            error(n, "\(name) needs a non-empty \(what)")
            return nil
        }
        return args[0].text
    }

    mutating func listen(_ args: [Token], line n: Int) {
        guard args.count == 2 else { return error(n, "usage: listen smtp|submission|submissions ADDRESS:PORT") }
        guard let kind = Configuration.ListenerKind(rawValue: args[0].text) else {
            return error(n, "unknown listener kind '\(args[0].text)' (smtp, submission or submissions)")
        }
        guard let (host, port) = Self.hostPort(args[1].text) else {
            return error(n, "invalid address '\(args[1].text)': expected ADDRESS:PORT with a numeric address, e.g. 127.0.0.1:25 or [::1]:25")
        }
        if config.listeners.contains(where: { $0.host == host && $0.port == port }) {
            return error(n, "\(args[1].text) is already a listener")
        }
        config.listeners.append(Configuration.Listener(kind: kind, host: host, port: port, line: n))
    }

    static func hostPort(_ s: String) -> (String, Int)? {
        guard let hp = try? HostPort(parsing: s) else { return nil }
        return (hp.host, hp.port)
    }

    static let placeholders: Set<String> = ["user", "domain", "rcpt", "sender"]

    /// Checks `%{name}` placeholders; returns the unknown one, if any.
    static func unknownPlaceholder(_ s: String, allowed: Set<String>) -> String? {
        var rest = Substring(s)
        while let r = rest.firstRange(of: "%{") {
            guard let close = rest[r.upperBound...].firstIndex(of: "}") else { return String(rest[r.lowerBound...]) }
            let name = String(rest[r.upperBound..<close])
            if !allowed.contains(name) { return "%{\(name)}" }
            rest = rest[rest.index(after: close)...]
        }
        return nil
    }

    mutating func deliver(_ args: [Token], line n: Int) {
        if sawDeliver { return error(n, "'deliver' is given twice") }
        sawDeliver = true
        guard args.count >= 2 else { return error(n, "usage: deliver maildir PATH | deliver mda \"COMMAND ARGS\" [timeout DURATION]") }
        switch args[0].text {
        case "maildir":
            guard args.count == 2 else { return error(n, "usage: deliver maildir PATH") }
            if let bad = Self.unknownPlaceholder(args[1].text, allowed: ["user", "domain", "rcpt"]) {
                return error(n, "unknown placeholder \(bad) (maildir paths take %{user}, %{domain}, %{rcpt})")
            }
            guard args[1].text.contains("%{user}") || args[1].text.contains("%{rcpt}") else {
                return error(n, "a maildir path must contain %{user} or %{rcpt}, or every user shares one Maildir")
            }
            config.delivery = .maildir(path(args[1].text))
        case "mda":
            var timeout = 300
            if args.count == 4, args[2].text == "timeout" {
                guard let t = Self.duration(args[3].text) else { return error(n, "invalid duration '\(args[3].text)' (e.g. 30s, 5m, 1h)") }
                timeout = t
            } else if args.count != 2 {
                return error(n, "usage: deliver mda \"COMMAND ARGS\" [timeout DURATION]")
            }
            guard let argv = Self.argv(args[1].text), !argv.isEmpty else {
                return error(n, "the mda command is empty or has an unterminated quote")
            }
            if let bad = Self.unknownPlaceholder(args[1].text, allowed: Self.placeholders) {
                return error(n, "unknown placeholder \(bad) (the mda takes %{user}, %{domain}, %{rcpt}, %{sender})")
            }
            guard argv[0].hasPrefix("/") else { return error(n, "the mda program must be an absolute path, got '\(argv[0])'") }
            config.delivery = .mda(argv, timeout: timeout)
        default:
            error(n, "unknown delivery '\(args[0].text)' (maildir or mda)")
        }
    }

    /// Splits a command into words: spaces separate, single or double quotes group. No shell.
    static func argv(_ s: String) -> [String]? {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character? = nil
        for c in s {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
                continue
            }
            switch c {
            case "'", "\"":
                quote = c
                inWord = true
            case " ", "\t":
                if inWord { words.append(current) }
                current = ""
                inWord = false
            default:
                current.append(c)
                inWord = true
            }
        }
        if quote != nil { return nil }
        if inWord { words.append(current) }
        return words
    }

    mutating func domainStatement(_ word: String, _ args: [Token], line n: Int) {
        switch word {
        case "aliases":
            guard let v = single(args, "aliases", "FILE", n) else { return }
            let resolved = path(v)
            currentDomain?.aliases = resolved
        case "suffix-separators":
            guard args.count == 1 else { return error(n, "usage: suffix-separators \"CHARS\" (\"\" for none)") }
            currentDomain?.suffixSeparators = args[0].text
        case "drop-characters":
            guard args.count == 1 else { return error(n, "usage: drop-characters \"CHARS\" (\"\" for none)") }
            currentDomain?.dropCharacters = args[0].text
        case "dkim":
            guard args.count == 2, !args[0].text.isEmpty, !args[1].text.isEmpty else { return error(n, "usage: dkim SELECTOR FILE (a PKCS#8 PEM private key)") }
            let selector = args[0].text
            guard selector.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || (($0 | 0x20) >= 97 && ($0 | 0x20) <= 122) || $0 == 45 || $0 == 95 || $0 == 46 }) else {
                return error(n, "invalid DKIM selector '\(selector)' (letters, digits, '-', '_' and '.')")
            }
            if currentDomain?.dkim.contains(where: { $0.selector == selector }) == true { return error(n, "DKIM selector '\(selector)' is given twice") }
            let file = path(args[1].text)
            currentDomain?.dkim.append(Configuration.DKIMKey(selector: selector, file: file, line: n))
        case "users":
            guard let v = single(args, "users", "FILE", n) else { return }
            if currentDomain?.users != nil { return error(n, "'users' is given twice in this domain") }
            let file = path(v)
            currentDomain?.users = file
            currentDomain?.usersLine = n
        case "submission-senders":
            guard args.count == 1, let v = Configuration.SubmissionSenders(rawValue: args[0].text) else {
                return error(n, "usage: submission-senders own-address|own-domain|local-domains|any")
            }
            currentDomain?.submissionSenders = v
        case "domain", "limits", "listen", "hostname", "spool", "deliver", "resolver", "spf", "dmarc", "public-suffix-list", "certificates", "io-backend", "outbound", "relay", "user", "queue-user":
            error(n, "'\(word)' is not allowed inside a domain block (missing '}'?)")
        default:
            error(n, "unknown statement '\(word)' in a domain block")
        }
    }

    mutating func limitsStatement(_ word: String, _ args: [Token], line n: Int) {
        guard args.count == 1 else { return error(n, "usage: \(word) VALUE") }
        let v = args[0].text
        switch word {
        case "message-size":
            guard let s = Self.size(v), s > 0 else { return error(n, "invalid size '\(v)' (e.g. 50M, 512K, 1G)") }
            config.limits.messageSize = s
        case "recipients":
            guard let r = Int(v), r >= 1, r <= 100_000 else { return error(n, "invalid recipient limit '\(v)' (1–100000)") }
            config.limits.recipients = r
        case "errors":
            guard let r = Int(v), r >= 1, r <= 1000 else { return error(n, "invalid error limit '\(v)' (1–1000)") }
            config.limits.errors = r
        case "auth-failures":
            guard let r = Int(v), r >= 1, r <= 10_000 else { return error(n, "invalid AUTH failure limit '\(v)' (1–10000 per client address in 15 minutes)") }
            config.limits.authFailures = r
        case "delay-warning" where v == "off":
            config.limits.delayWarning = 0
        case "session-timeout" where v == "off":
            config.limits.sessionTimeout = 0
        case "min-data-rate":
            guard let s = Self.size(v), s >= 1, s <= 1 << 30 else { return error(n, "invalid rate '\(v)' (bytes a second, e.g. 500, 2K)") }
            config.limits.minDataRate = s
        case "command-timeout", "data-timeout", "queue-lifetime", "retry-interval", "retry-max-interval", "delay-warning", "spool-timeout", "session-timeout", "write-timeout":
            // Bounded, so that no setting can overflow a deadline in nanoseconds: a day for what
            // a session waits, a year for the queue's times.
            let most = ["queue-lifetime", "retry-interval", "retry-max-interval", "delay-warning"].contains(word) ? 365 * 86400 : 86400
            guard let d = Self.duration(v), d > 0, d <= most else {
                return error(n, "invalid duration '\(v)' (e.g. 30s, 5m, 2h, 5d; at most \(most == 86400 ? "1d" : "365d"))")
            }
            switch word {
            case "command-timeout": config.limits.commandTimeout = d
            case "data-timeout": config.limits.dataTimeout = d
            case "retry-interval": config.limits.retryInterval = d
            case "retry-max-interval": config.limits.retryMaxInterval = d
            case "delay-warning": config.limits.delayWarning = d
            case "spool-timeout": config.limits.spoolTimeout = d
            case "session-timeout": config.limits.sessionTimeout = d
            case "write-timeout": config.limits.writeTimeout = d
            default: config.limits.queueLifetime = d
            }
        default:
            error(n, "unknown limit '\(word)' (message-size, recipients, errors, auth-failures, command-timeout, data-timeout, queue-lifetime, retry-interval, retry-max-interval, delay-warning, spool-timeout, session-timeout, write-timeout, min-data-rate)")
        }
    }

    /// `relay DOMAIN [via URL [auth FILE]]`, `relay * via URL [auth FILE]`.
    mutating func relay(_ args: [Token], line n: Int) {
        let usage = "usage: relay DOMAIN [via URL [auth FILE]] or relay * via URL [auth FILE]"
        guard !args.isEmpty, args.count == 1 || args.count == 3 || args.count == 5 else { return error(n, usage) }
        var domain: Domain? = nil
        if args[0].text != "*" || args[0].quoted {
            do {
                domain = try Domain(args[0].text)
            } catch {
                return self.error(n, "invalid domain '\(args[0].text)' in relay: \(error)")
            }
        }
        if config.relays.contains(where: { $0.domain == domain }) {
            return error(n, domain.map { "relay for '\($0.unicode)' is given twice" } ?? "'relay *' is given twice")
        }
        var via: Smarthost? = nil
        if args.count >= 3 {
            guard args[1].text == "via" else { return error(n, usage) }
            switch Smarthost.parse(args[2].text) {
            case .success(let s): via = s
            case .failure(let why): return error(n, why.description)
            }
            if args.count == 5 {
                guard args[3].text == "auth" else { return error(n, usage) }
                via!.authFile = path(args[4].text)
            }
        }
        if domain == nil, via == nil { return error(n, "'relay *' needs 'via URL': it is the route for every other domain") }
        if let v = via {
            if v.user != nil, v.authFile == nil { return error(n, "\(v) names a user: add 'auth FILE' (the file holds the password)") }
            if v.authFile != nil, v.user == nil { return error(n, "'auth FILE' needs a user in the URL (smtp+starttls://USER@host)") }
            if v.user != nil, v.security == .opportunistic {
                return error(n, "AUTH only over TLS: use smtp+starttls:// or smtps:// to log in to \(v.host)")
            }
        }
        config.relays.append(Configuration.Relay(domain: domain, via: via, line: n))
    }

    /// `outbound port N`, `outbound ca-file FILE`, `outbound connections N`,
    /// `outbound connections-per-destination N`, `outbound messages-per-connection N`.
    mutating func outbound(_ args: [Token], line n: Int) {
        let usage = "usage: outbound port N | ca-file FILE | connections N | connections-per-destination N | messages-per-connection N | mta-sts on|off | mta-sts-port N"
        guard args.count == 2 else { return error(n, usage) }
        let (key, v) = (args[0].text, args[1].text)
        if sawOutbound.contains(key) { return error(n, "'outbound \(key)' is given twice") }
        func number(_ range: ClosedRange<Int>, _ what: String) -> Int? {
            guard let x = Int(v), range.contains(x) else {
                error(n, "invalid \(what) '\(v)' (\(range.lowerBound)–\(range.upperBound))")
                return nil
            }
            return x
        }
        switch key {
        case "port":
            guard let p = number(1...65535, "port") else { return }
            config.outbound.port = p
        case "ca-file":
            config.outbound.caFile = path(v)
        case "connections":
            guard let c = number(1...100_000, "connection limit") else { return }
            config.outbound.connections = c
        case "connections-per-destination":
            guard let c = number(1...1000, "connection limit") else { return }
            config.outbound.connectionsPerDestination = c
        case "mta-sts":
            guard v == "on" || v == "off" else { return error(n, "usage: outbound mta-sts on|off") }
            config.outbound.mtaSTS = v == "on"
        case "mta-sts-port":
            guard let p = number(1...65535, "port") else { return }
            config.outbound.mtaSTSPort = p
        case "messages-per-connection":
            guard let c = number(1...100_000, "message limit") else { return }
            config.outbound.messagesPerConnection = c
        default:
            return error(n, "unknown outbound setting '\(key)' (\(usage))")
        }
        sawOutbound.insert(key)
    }

    /// `50M`, `512K`, `1G`, or bytes.
    static func size(_ s: String) -> Int? {
        guard let last = s.last else { return nil }
        let mult: Int
        var digits = Substring(s)
        switch last {
        case "K", "k": mult = 1024
        case "M", "m": mult = 1024 * 1024
        case "G", "g": mult = 1024 * 1024 * 1024
        default: mult = 1
        }
        if mult > 1 { digits = digits.dropLast() }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let v = Int(digits), v >= 0 else { return nil }
        let (r, o) = v.multipliedReportingOverflow(by: mult)
        return o ? nil : r
    }

    /// `30s`, `5m`, `2h`, `5d`, or seconds; in seconds.
    static func duration(_ s: String) -> Int? {
        guard let last = s.last else { return nil }
        let mult: Int
        var digits = Substring(s)
        switch last {
        case "s": mult = 1
        case "m": mult = 60
        case "h": mult = 3600
        case "d": mult = 86400
        default: mult = 1
        }
        if last.isLetter { digits = digits.dropLast() }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let v = Int(digits), v >= 0 else { return nil }
        let (r, o) = v.multipliedReportingOverflow(by: mult)
        return o ? nil : r
    }
}
