// SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).

/// An enhanced status code `class.subject.detail`, e.g. 5.1.1.
public struct EnhancedStatus: Hashable, Sendable, CustomStringConvertible {
    public var klass: UInt8
    public var subject: UInt16
    public var detail: UInt16

    public init(_ klass: UInt8, _ subject: UInt16, _ detail: UInt16) {
        self.klass = klass
        self.subject = subject
        self.detail = detail
    }

    public var description: String { "\(klass).\(subject).\(detail)" }
}

/// One SMTP reply: a code, an optional enhanced status, and text lines.
/// Written as one typed value so a reply code can never drift from its status.
public struct Reply: Hashable, Sendable, CustomStringConvertible {
    public let code: Int
    public let status: EnhancedStatus?
    public let lines: [String]
    /// The reply as sent on the wire, rendered once: replies are written on every command.
    let encoded: [UInt8]

    public init(_ code: Int, _ status: EnhancedStatus?, _ text: String) {
        self.init(code, status, lines: [text])
    }

    public init(_ code: Int, _ status: EnhancedStatus?, lines: [String]) {
        self.code = code
        self.status = status
        self.lines = lines.isEmpty ? [""] : lines
        var bytes: [UInt8] = []
        for (i, line) in self.lines.enumerated() {
            bytes += Array(String(code).utf8)
            bytes.append(i == self.lines.count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            if let s = status {
                bytes += Array(s.description.utf8)
                if !line.isEmpty { bytes.append(UInt8(ascii: " ")) }
            }
            // No CR or LF may end up inside a reply line.
            bytes += line.utf8.map { $0 == 13 || $0 == 10 ? UInt8(ascii: " ") : $0 }
            bytes += [13, 10]
        }
        encoded = bytes
    }

    public var isPositive: Bool { code < 400 }
    public var isTransient: Bool { code >= 400 && code < 500 }
    public var isPermanent: Bool { code >= 500 }

    /// Appends the reply as sent on the wire: CRLF-terminated, the status on every line.
    @inline(__always)
    public func write(to out: OutputBuffer) {
        out.append(encoded)
    }

    public var wire: String { String(decoding: encoded, as: UTF8.self) }

    public var description: String {
        let s = status.map { " \($0)" } ?? ""
        return "\(code)\(s) \(lines.joined(separator: " / "))"
    }
}

extension Reply {
    // Success
    public static let ok = Reply(250, EnhancedStatus(2, 0, 0), "OK")
    public static let senderOK = Reply(250, EnhancedStatus(2, 1, 0), "Sender OK")
    public static let recipientOK = Reply(250, EnhancedStatus(2, 1, 5), "Recipient OK")
    public static let resetOK = Reply(250, EnhancedStatus(2, 0, 0), "Reset OK")
    public static let startData = Reply(354, nil, "End data with <CR><LF>.<CR><LF>")
    public static let messageAccepted = Reply(250, EnhancedStatus(2, 0, 0), "Message accepted")
    public static let bye = Reply(221, EnhancedStatus(2, 0, 0), "Bye")
    public static let cannotVerify = Reply(252, EnhancedStatus(2, 5, 0), "Cannot VRFY user, but will accept message and attempt delivery")
    public static let help = Reply(214, EnhancedStatus(2, 0, 0), "See RFC 5321; commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY")

    // Syntax and sequence
    public static let unrecognized = Reply(500, EnhancedStatus(5, 5, 1), "Unrecognized command")
    public static let lineTooLong = Reply(500, EnhancedStatus(5, 5, 2), "Line too long")
    public static let bareLineFeedInCommand = Reply(500, EnhancedStatus(5, 5, 2), "Command lines must end with CRLF")
    public static let notImplemented = Reply(502, EnhancedStatus(5, 5, 1), "Command not implemented")
    public static let readyForTLS = Reply(220, EnhancedStatus(2, 0, 0), "Ready to start TLS")
    public static let tlsAlreadyActive = Reply(503, EnhancedStatus(5, 5, 1), "TLS already active")
    public static let tlsInTransaction = Reply(503, EnhancedStatus(5, 5, 1), "Mail transaction in progress; send RSET first")
    public static let authSucceeded = Reply(235, EnhancedStatus(2, 7, 0), "Authentication successful")
    public static let authNeedsTLS = Reply(530, EnhancedStatus(5, 7, 0), "Must issue a STARTTLS command first")
    public static let authRequired = Reply(530, EnhancedStatus(5, 7, 0), "Authentication required")
    public static let authFailed = Reply(535, EnhancedStatus(5, 7, 8), "Authentication credentials invalid")
    public static let authAlready = Reply(503, EnhancedStatus(5, 5, 1), "Already authenticated")
    public static let authInTransaction = Reply(503, EnhancedStatus(5, 5, 1), "AUTH is not permitted during a mail transaction")
    public static let authSyntax = Reply(501, EnhancedStatus(5, 5, 4), "Syntax: AUTH mechanism [initial-response]")
    public static let authMechanism = Reply(504, EnhancedStatus(5, 5, 4), "Unrecognized authentication type (PLAIN and LOGIN are offered)")
    public static let authCancelled = Reply(501, EnhancedStatus(5, 0, 0), "Authentication cancelled")
    public static let authBadBase64 = Reply(501, EnhancedStatus(5, 5, 2), "Cannot decode the response (base64)")
    public static let authTooManyFailures = Reply(421, EnhancedStatus(4, 7, 0), "Too many failed authentication attempts; closing")
    public static let expnDisabled = Reply(502, EnhancedStatus(5, 5, 1), "EXPN is not available")
    public static let helloFirst = Reply(503, EnhancedStatus(5, 5, 1), "Send EHLO or HELO first")
    public static let nestedMail = Reply(503, EnhancedStatus(5, 5, 1), "Sender already given; send RSET first")
    public static let mailFirst = Reply(503, EnhancedStatus(5, 5, 1), "Send MAIL first")
    public static let rcptFirst = Reply(503, EnhancedStatus(5, 5, 1), "Send RCPT first")
    public static let noValidRecipients = Reply(554, EnhancedStatus(5, 5, 1), "No valid recipients")
    public static let dataAfterBDAT = Reply(503, EnhancedStatus(5, 5, 1), "DATA cannot follow BDAT in one transaction")
    public static let binaryNeedsBDAT = Reply(503, EnhancedStatus(5, 5, 1), "BODY=BINARYMIME requires BDAT")
    public static let helloNeedsDomain = Reply(501, EnhancedStatus(5, 5, 4), "Domain or address literal required")
    public static let helloBadDomain = Reply(501, EnhancedStatus(5, 5, 4), "Invalid domain or address literal")
    public static let noArguments = Reply(501, EnhancedStatus(5, 5, 4), "No arguments allowed")
    public static let mailSyntax = Reply(501, EnhancedStatus(5, 5, 4), "Syntax: MAIL FROM:<address> [parameters]")
    public static let rcptSyntax = Reply(501, EnhancedStatus(5, 5, 4), "Syntax: RCPT TO:<address> [parameters]")
    public static let vrfySyntax = Reply(501, EnhancedStatus(5, 5, 4), "Syntax: VRFY address")
    public static let bdatSyntax = Reply(501, EnhancedStatus(5, 5, 4), "Syntax: BDAT size [LAST]")
    public static let badSenderSyntax = Reply(501, EnhancedStatus(5, 1, 7), "Bad sender address syntax")
    public static let badRecipientSyntax = Reply(501, EnhancedStatus(5, 1, 3), "Bad recipient address syntax")
    public static let badParameter = Reply(501, EnhancedStatus(5, 5, 4), "Invalid parameter value")
    public static let duplicateParameter = Reply(501, EnhancedStatus(5, 5, 4), "Duplicate parameter")
    public static let unknownParameter = Reply(555, EnhancedStatus(5, 5, 4), "Unsupported parameter")
    public static let utf8NeedsSMTPUTF8 = Reply(553, EnhancedStatus(5, 6, 7), "Non-ASCII address requires SMTPUTF8")

    // Limits and content
    public static let sizeExceededAtMail = Reply(552, EnhancedStatus(5, 3, 4), "Message size exceeds fixed maximum message size")
    public static let messageTooBig = Reply(552, EnhancedStatus(5, 3, 4), "Message too big")
    public static let tooManyRecipients = Reply(452, EnhancedStatus(4, 5, 3), "Too many recipients")
    public static let textLineTooLong = Reply(554, EnhancedStatus(5, 6, 0), "Message has a line longer than 1000 bytes")
    public static let bareLineEnding = Reply(521, EnhancedStatus(5, 5, 2), "Bare CR or LF in message data is not allowed; closing")
    public static let bareLineEndingInChunk = Reply(554, EnhancedStatus(5, 6, 0), "Bare CR or LF in message text is not allowed (BODY=BINARYMIME carries them)")

    // Closing
    public static let tooManyErrors = Reply(421, EnhancedStatus(4, 7, 0), "Too many errors; closing")
    public static let timeout = Reply(421, EnhancedStatus(4, 4, 2), "Timeout; closing")
    public static let httpOnSMTP = Reply(221, EnhancedStatus(2, 7, 0), "HTTP command on an SMTP port; closing")
    public static let shuttingDown = Reply(421, EnhancedStatus(4, 3, 2), "Service shutting down; closing")
}
