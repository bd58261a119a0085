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
        public var recipients = 100
        public var errors = 10
        /// Seconds.
        public var commandTimeout = 300
        public var dataTimeout = 180
        public var queueLifetime = 5 * 24 * 3600
        /// Failed AUTH attempts from one client address (in 15 minutes) before its attempts are
        /// refused unchecked with 454 4.7.0.
        public var authFailures = 10

        public init(
            messageSize: Int = 50 * 1024 * 1024, recipients: Int = 100, errors: Int = 10, commandTimeout: Int = 300,
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
    /// `certificates DIR`: certbot's layout, DIR/NAME/fullchain.pem and DIR/NAME/privkey.pem.
    public var certificates: String? = nil
    public var certificatesLine = 0
    public var listeners: [Listener] = []
    public var domains: [LocalDomain] = []
    public var delivery: Delivery = .maildir("./var/mail/%{domain}/%{user}")
    public var limits = Limits()
    /// Where every DNS question goes (`resolver`).
    public var resolver: ResolverSetting = .system
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
            recipients 100
        }
        """
}
