// What a server session advertises and enforces. Shared by all sessions of a listener.

/// The ESMTP extensions a server advertises (RFC 5321 §4.1.1.1).
public struct ServerExtensions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let pipelining = ServerExtensions(rawValue: 1 << 0)  // RFC 2920
    public static let eightBitMIME = ServerExtensions(rawValue: 1 << 1)  // RFC 6152
    public static let smtpUTF8 = ServerExtensions(rawValue: 1 << 2)  // RFC 6531
    public static let size = ServerExtensions(rawValue: 1 << 3)  // RFC 1870
    public static let enhancedStatusCodes = ServerExtensions(rawValue: 1 << 4)  // RFC 2034
    public static let chunking = ServerExtensions(rawValue: 1 << 5)  // RFC 3030
    public static let binaryMIME = ServerExtensions(rawValue: 1 << 6)  // RFC 3030
    public static let dsn = ServerExtensions(rawValue: 1 << 7)  // RFC 3461
    public static let all: ServerExtensions = [
        .pipelining, .eightBitMIME, .smtpUTF8, .size, .enhancedStatusCodes, .chunking, .binaryMIME, .dsn,
    ]
}

public struct ServerConfiguration: Sendable {
    /// Our name in the greeting and the EHLO reply.
    public var hostname: String
    public var extensions: ServerExtensions
    /// Largest message accepted, in bytes; 0 means no limit (and SIZE is advertised without a value).
    public var maxMessageSize: Int
    /// Recipients per transaction; more are answered 452 4.5.3.
    public var maxRecipients: Int
    /// Errors (4xx/5xx replies to commands) before the session is closed with 421.
    public var maxErrors: Int
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
    public var maxCommandLine: Int
    /// Longest MAIL/RCPT line: extensions raise the limit (RFC 1870, 3461, 4954, 6531).
    public var maxMailLine: Int
    /// RFC 5321 §4.5.3.2 server timeout while waiting for the next command, in nanoseconds.
    public var commandTimeout: UInt64
    /// Timeout between data blocks of DATA/BDAT, in nanoseconds.
    public var dataTimeout: UInt64
    /// Emit `checkSender`/`checkRecipient` events so a policy can decide; otherwise every
    /// syntactically valid sender and recipient is accepted.
    public var policyEvents: Bool
    /// Greeting text after the hostname.
    public var greetingText: String
    /// Offer STARTTLS (RFC 3207): the driver can start TLS on the `startTLS` event.
    public var startTLS = false
    /// Offer AUTH PLAIN and LOGIN (RFC 4954, 4616) — only once the session runs over TLS; before
    /// TLS, AUTH is answered `530 5.7.0 Must issue a STARTTLS command first`.
    public var auth = false
    /// MAIL requires a successful AUTH first (submission, RFC 6409): `530 5.7.0` otherwise.
    public var requireAuth = false
    /// Failed AUTH attempts in one session before it is closed with 421.
    public var maxAuthFailures = 3
    /// The whole session's limit, in nanoseconds (0: none).
    public var sessionTimeout: UInt64 = 3600_000_000_000
    /// How long the client may take none of our replies, in nanoseconds.
    public var writeTimeout: UInt64 = 300_000_000_000
    /// Bytes a second the data must average for the data timeout to be extended.
    public var minDataRate = 500

    public init(
        hostname: String = "localhost",
        extensions: ServerExtensions = .all,
        maxMessageSize: Int = 50 * 1024 * 1024,
        maxRecipients: Int = 1000,
        maxErrors: Int = 10,
        maxCommandLine: Int = 512,
        maxMailLine: Int = 1536,
        commandTimeout: UInt64 = 300_000_000_000,
        dataTimeout: UInt64 = 180_000_000_000,
        policyEvents: Bool = false,
        greetingText: String = "ESMTP Tern"
    ) {
        self.hostname = hostname
        self.extensions = extensions
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.maxErrors = maxErrors
        self.maxCommandLine = maxCommandLine
        self.maxMailLine = max(maxMailLine, maxCommandLine)
        self.commandTimeout = commandTimeout
        self.dataTimeout = dataTimeout
        self.policyEvents = policyEvents
        self.greetingText = greetingText
    }
}

/// A configuration with its fixed replies rendered once, shared by reference by every session.
public final class ServerContext: Sendable {
    public let configuration: ServerConfiguration
    let greeting: [UInt8]
    /// The EHLO reply over TLS (AUTH offered when configured).
    let ehloReply: [UInt8]
    /// The EHLO reply before TLS: STARTTLS offered when configured, never AUTH.
    let ehloReplyOfferingTLS: [UInt8]
    let heloReply: [UInt8]

    public init(_ configuration: ServerConfiguration) {
        self.configuration = configuration
        let c = configuration
        greeting = Array("220 \(c.hostname) \(c.greetingText)\r\n".utf8)
        var lines = ["\(c.hostname)"]
        let e = c.extensions
        if e.contains(.pipelining) { lines.append("PIPELINING") }
        if e.contains(.size) { lines.append(c.maxMessageSize > 0 ? "SIZE \(c.maxMessageSize)" : "SIZE") }
        if e.contains(.eightBitMIME) { lines.append("8BITMIME") }
        if e.contains(.smtpUTF8) { lines.append("SMTPUTF8") }
        if e.contains(.enhancedStatusCodes) { lines.append("ENHANCEDSTATUSCODES") }
        if e.contains(.chunking) { lines.append("CHUNKING") }
        if e.contains(.chunking) && e.contains(.binaryMIME) { lines.append("BINARYMIME") }
        if e.contains(.dsn) { lines.append("DSN") }
        func render(_ lines: [String]) -> [UInt8] {
            var ehlo = ""
            for (i, l) in lines.enumerated() { ehlo += "250\(i == lines.count - 1 ? " " : "-")\(l)\r\n" }
            return Array(ehlo.utf8)
        }
        // AUTH is offered over TLS only (passwords never travel in clear).
        ehloReply = render(c.auth ? lines + ["AUTH PLAIN LOGIN"] : lines)
        ehloReplyOfferingTLS = c.startTLS ? render(lines + ["STARTTLS"]) : render(lines)
        heloReply = Array("250 \(c.hostname)\r\n".utf8)
    }
}
