// The model of Tern's one configuration file (see docs/config.md). Parsing lives in
// ConfigParser.swift; this file only says what a configuration is.

import DNS
import Reactor
import SMTP

public struct Configuration: Sendable, Equatable {
    public enum ListenerKind: String, Sendable, Equatable, CaseIterable {
        /// Port 25 style: mail for our domains; relaying needs AUTH.
        case smtp
        /// Port 587: MAIL requires AUTH (RFC 6409).
        case submission
        /// Port 465: implicit TLS (RFC 8314).
        case submissions
    }

    public struct Listener: Sendable, Equatable {
        public var kind: ListenerKind
        public var host: String
        public var port: Int
        /// Where it was configured.
        public var line: Int

        public init(kind: ListenerKind, host: String, port: Int, line: Int) {
            self.kind = kind
            self.host = host
            self.port = port
            self.line = line
        }
    }

    public struct LocalDomain: Sendable, Equatable {
        public var name: Domain
        public var aliases: String?
        /// Characters that start a suffix to drop: `user+tag` delivers to `user`.
        public var suffixSeparators: String = "+"
        /// Characters removed from local parts: `first.last` delivers to `firstlast`.
        public var dropCharacters: String = "."
        /// `dkim SELECTOR FILE`: signing keys (one RSA and one Ed25519 key sign together).
        public var dkim: [DKIMKey] = []
        /// `users FILE`: who may authenticate (and receives mail) in this domain.
        public var users: String? = nil
        public var usersLine = 0
        /// `submission-senders`: which MAIL FROM an authenticated user of this domain may use.
        public var submissionSenders: SubmissionSenders = .ownDomain
        public var line: Int

        public init(name: Domain, aliases: String? = nil, line: Int) {
            self.name = name
            self.aliases = aliases
            self.line = line
        }
    }

    /// The envelope senders an authenticated user may use (`<>` is always allowed).
    public enum SubmissionSenders: String, Sendable, Equatable, CaseIterable {
        /// Only the user's own address (with a `+tag` suffix, or in another case).
        case ownAddress = "own-address"
        /// Any address in the user's domain (the default).
        case ownDomain = "own-domain"
        /// Any address in any of this server's domains.
        case localDomains = "local-domains"
        /// Anything (a trusted user relaying for others).
        case any
    }

    public struct DKIMKey: Sendable, Equatable {
        public var selector: String
        /// A PKCS#8 PEM private key file.
        public var file: String
        public var line: Int

        public init(selector: String, file: String, line: Int) {
            self.selector = selector
            self.file = file
            self.line = line
        }
    }

    public enum Delivery: Sendable, Equatable {
        /// A Maildir path pattern with %{user}, %{domain}, %{rcpt}.
        case maildir(String)
        /// An argument vector (no shell) with %{user}, %{domain}, %{rcpt}, %{sender}.
        case mda([String], timeout: Int)
    }

    public struct Limits: Sendable, Equatable {
        public var messageSize = 50 * 1024 * 1024
        public var recipients = 1000
        public var errors = 10
        /// Seconds.
        public var commandTimeout = 300
        public var dataTimeout = 180
        public var queueLifetime = 5 * 24 * 3600
        /// Failed AUTH attempts from one client address (in 15 minutes) before its attempts are
        /// refused unchecked with 454 4.7.0.
        public var authFailures = 10
        /// Seconds before the first retry of a deferred delivery; it doubles up to `retryMax`.
        public var retryInterval = 60
        public var retryMaxInterval = 3600
        /// Seconds after arrival when the sender of a message still deferred is warned (once); 0: never.
        public var delayWarning = 4 * 3600
        /// Seconds a session waits at the end of DATA for the spool to make its message durable
        /// before it answers 451 4.3.0 (a stalled disk must not leave clients without an answer).
        public var spoolTimeout = 30
        /// Seconds one SMTP session may last at most, whatever it does (0: no limit).
        public var sessionTimeout = 3600
        /// Seconds a session may go without the client taking any of our replies.
        public var writeTimeout = 300
        /// Bytes a second a message's data must arrive at, on average, for its data timeout to
        /// be extended (a client trickling a byte at a time is closed at the data timeout).
        public var minDataRate = 500

        public init(
            messageSize: Int = 50 * 1024 * 1024, recipients: Int = 1000, errors: Int = 10, commandTimeout: Int = 300,
            dataTimeout: Int = 180, queueLifetime: Int = 5 * 24 * 3600
        ) {
            self.messageSize = messageSize
            self.recipients = recipients
            self.errors = errors
            self.commandTimeout = commandTimeout
            self.dataTimeout = dataTimeout
            self.queueLifetime = queueLifetime
        }
    }

    public var hostname = "localhost"
    public var spool = "./var/spool"
    public var spoolLine = 0
    /// The system user the network-facing processes (smtp, courier) run as (`user NAME`).
    public static let defaultUser = "_tern"
    public var user = Configuration.defaultUser
    /// The system user the queue and lookup processes run as (`queue-user NAME`): it owns the
    /// spool, the users files and the DKIM keys.
    public static let defaultQueueUser = "_ternq"
    public var queueUser = Configuration.defaultQueueUser
    /// The lines of `user` and `queue-user` (0: not given, the default holds).
    public var userLine = 0
    public var queueUserLine = 0
    /// `certificates DIR`: certbot's layout, DIR/NAME/fullchain.pem and DIR/NAME/privkey.pem.
    public var certificates: String? = nil
    public var certificatesLine = 0
    public var listeners: [Listener] = []
    public var domains: [LocalDomain] = []
    public var delivery: Delivery = .maildir("./var/mail/%{domain}/%{user}")
    public var limits = Limits()
    /// Where every DNS question goes (`resolver`).
    public var resolver: ResolverSetting = .system
    /// The line of the `resolver` statement (0: none).
    public var resolverLine = 0
    /// What an SPF `fail` at MAIL FROM does (`spf reject|tag`).
    public enum SPFPolicy: String, Sendable, Equatable { case reject, tag }
    public var spf: SPFPolicy = .reject
    /// What a DMARC `fail` does (`dmarc reject|quarantine-header|none`): `reject` honours p=reject
    /// with 550 5.7.1 and marks p=quarantine with a header; `quarantine-header` only marks; `none`
    /// records the result.
    public enum DMARCAction: String, Sendable, Equatable { case reject, quarantineHeader = "quarantine-header", none }
    public var dmarc: DMARCAction = .reject
    /// The public suffix list for DMARC's organisational domains (`public-suffix-list FILE`).
    public static let defaultPublicSuffixList = "/usr/share/publicsuffix/public_suffix_list.dat"
    public var publicSuffixList = Configuration.defaultPublicSuffixList
    /// Whether `public-suffix-list` was given (then a missing file is an error, not a warning).
    public var publicSuffixListLine = 0
    /// The reactor's I/O backend (`io-backend auto|epoll|io_uring`); read at start only.
    public var ioBackend: IOBackendKind = .auto

    /// Outbound delivery (`outbound KEY VALUE` statements).
    public struct Outbound: Sendable, Equatable {
        /// The port receivers are reached on (25; another for tests and closed networks).
        public var port = 25
        /// PEM file of the CAs that verify receivers' certificates; nil: the system store.
        public var caFile: String? = nil
        public var connectionsPerDestination = 10
        public var connections = 200
        public var messagesPerConnection = 100
        /// MTA-STS (RFC 8461) on MX deliveries (`outbound mta-sts on|off`), and the HTTPS port of
        /// policy hosts (443; another for tests).
        public var mtaSTS = true
        public var mtaSTSPort = 443
        public init() {}
    }
    public var outbound = Outbound()

    /// Where mail for a domain goes other than by its MX: `relay DOMAIN [via URL [auth FILE]]`,
    /// `relay * via URL [auth FILE]`.
    public struct Relay: Sendable, Equatable {
        /// nil for `relay *` (the default route; it accepts nothing by itself).
        public var domain: Domain?
        /// nil: the domain's own MX hosts.
        public var via: Smarthost?
        public var line: Int
        public init(domain: Domain?, via: Smarthost?, line: Int) {
            self.domain = domain
            self.via = via
            self.line = line
        }
    }
    public var relays: [Relay] = []

    /// The domains mail is accepted for and relayed (`relay DOMAIN`, not `relay *`).
    public var relayDomains: Set<Domain> { Set(relays.compactMap(\.domain)) }

    public init() {}

    /// The local domain `d` belongs to, if any (A-labels and U-labels compare equal).
    public func localDomain(_ d: Domain) -> LocalDomain? {
        domains.first { $0.name == d }
    }

    /// What `ternd` runs without `--config`.
    public static let embeddedDefault = """
        # Tern's embedded default: a local test server.
        hostname localhost
        spool ./var/spool
        listen smtp 127.0.0.1:2525
        domain localhost {
        }
        deliver maildir ./var/mail/%{domain}/%{user}
        limits {
            message-size 50M
            recipients 1000
        }
        """
}

/// A relay host (smarthost): `smtp://host[:port]` (STARTTLS when offered),
/// `smtp+starttls://[user@]host[:port]` (STARTTLS required; port 587 by default),
/// `smtps://[user@]host[:port]` (TLS from the first byte; port 465).
public struct Smarthost: Sendable, Equatable, Hashable, CustomStringConvertible {
    public enum Security: String, Sendable, Equatable, Hashable {
        case opportunistic = "smtp"
        case startTLS = "smtp+starttls"
        case implicitTLS = "smtps"
    }
    public var security: Security
    public var host: String
    public var port: Int
    /// AUTH PLAIN as this user (only over TLS), with the password in `authFile`.
    public var user: String?
    public var authFile: String?

    public init(security: Security, host: String, port: Int, user: String? = nil, authFile: String? = nil) {
        self.security = security
        self.host = host
        self.port = port
        self.user = user
        self.authFile = authFile
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(security.rawValue)://\(user.map { "\($0)@" } ?? "")\(h):\(port)"
    }

    /// Parses a relay URL, or says what is wrong with it.
    public static func parse(_ url: String) -> Result<Smarthost, URLError> {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .failure("'\(url)' is not a URL like smtp+starttls://user@smtp.example.net:587") }
        guard let security = Security(rawValue: parts[0].lowercased()) else {
            return .failure("unknown scheme in '\(url)' (smtp, smtp+starttls or smtps)")
        }
        var rest = parts[1]
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        var user: String? = nil
        if let at = rest.lastIndex(of: "@") {
            user = String(rest[..<at]).removingPercentEscapes
            rest = rest[rest.index(after: at)...]
            if user!.isEmpty { return .failure("empty user name in '\(url)'") }
        }
        var host: String
        var portText: Substring? = nil
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return .failure("unclosed '[' in '\(url)'") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return .failure("unexpected '\(after)' in '\(url)'") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            portText = rest[rest.index(after: colon)...]
        } else {
            host = String(rest)
        }
        guard !host.isEmpty, !host.contains("/") else { return .failure("no host in '\(url)'") }
        if !host.contains(":"), host.first?.isNumber != true {
            guard let d = try? Domain(host) else { return .failure("invalid host name '\(host)' in '\(url)'") }
            host = d.ascii
        }
        var port: Int
        switch security {
        case .opportunistic: port = 25
        case .startTLS: port = 587
        case .implicitTLS: port = 465
        }
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { return .failure("invalid port '\(portText)' in '\(url)'") }
            port = p
        }
        return .success(Smarthost(security: security, host: host, port: port, user: user))
    }
}

/// What is wrong with a relay URL.
public struct URLError: Error, Equatable, Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public let description: String
    public init(stringLiteral s: String) { description = s }
    public init(stringInterpolation s: DefaultStringInterpolation) { description = String(stringInterpolation: s) }
}

extension String {
    /// `%40` → `@` (user names in URLs).
    var removingPercentEscapes: String {
        var out: [UInt8] = []
        var b = Array(utf8)[...]
        while let c = b.first {
            b = b.dropFirst()
            if c == UInt8(ascii: "%"), b.count >= 2, let v = UInt8(String(decoding: b.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                b = b.dropFirst(2)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Configuration {
    /// A portable system user name (useradd's rule, without the trailing '$'): 1-32 of a-z, 0-9,
    /// '_' and '-', starting with a letter or '_'.
    public static func isUserName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...32).contains(b.count), b[0] == UInt8(ascii: "_") || (b[0] >= 97 && b[0] <= 122) else { return false }
        return b.allSatisfy { $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) }
    }
}
