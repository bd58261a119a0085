// The server side of an SMTP session (RFC 5321) as a sans-IO state machine.
//
// Bytes in, replies and events out. `process(_:into:)` consumes as many complete commands as the
// input holds and writes every reply into the shared output buffer, so a pipelined group
// (RFC 2920) is answered in one write by the driver. Message content is handed out as ranges of
// the input (`ServerEvent.body`), dot-unstuffed in place by `BodyScanner`.
//
// Session state (HELO name, error count) is kept apart from transaction state (`Envelope`),
// as OpenSMTPD's smtp_session.c does.

/// What the driver must do next.
public enum ServerEvent: Equatable, Sendable {
    /// All complete input is consumed; flush the output and read more.
    case needInput
    /// A message body begins (DATA accepted, or the first BDAT chunk of a transaction): discard
    /// any body bytes kept from an earlier message that was refused.
    case messageStart
    /// Message content: `range` of the input passed to `process`.
    case body(Range<Int>)
    /// MAIL FROM parsed (see `envelope`): call `resolveSender(_:into:)`. Only with `policyEvents`.
    case checkSender
    /// RCPT TO parsed (the last recipient of `envelope`): call `resolveRecipient(_:into:)`. Only with `policyEvents`.
    case checkRecipient
    /// End of message: the envelope and body are complete; call `finishMessage(_:into:)` once stored.
    case message
    /// STARTTLS accepted (RFC 3207): flush the output (the 220), discard every byte received after
    /// the STARTTLS line (plaintext pipelined behind it must not reach the TLS session: the
    /// CVE-2011-0411 command-injection class), run the TLS handshake, then call `tlsEstablished()`
    /// and feed decrypted input.
    case startTLS
    /// AUTH credentials complete (RFC 4954): call `takeCredentials()`, check them, and answer with
    /// `resolveAuth(_:into:)` (now or later; the machine waits).
    case authenticate
    /// Flush the output and close the connection.
    case close
}

public struct ServerStateMachine: Sendable {
    enum Phase: Sendable, Equatable {
        case greeting  // greeting not yet written
        case hello  // waiting for HELO/EHLO
        case ready  // no transaction
        case data  // inside DATA
        case bdat(remaining: Int, last: Bool)  // inside a BDAT chunk
        case discardingLine  // skipping the rest of an overlong command line
        case closed
    }

    enum Pending: Sendable, Equatable {
        case sender, recipient, message, auth
    }

    /// The SASL exchange in progress: the next line is a response, not a command.
    enum SASLStep: Sendable, Equatable {
        case plain, loginUser, loginPassword
    }

    public let context: ServerContext
    var phase: Phase = .greeting
    var pending: Pending? = nil
    public private(set) var envelope = Envelope()
    /// The HELO/EHLO argument, once given.
    public private(set) var heloName: String? = nil
    public private(set) var isExtended = false
    /// The session runs over TLS (after STARTTLS, or from the start with implicit TLS).
    public private(set) var isTLS = false
    public private(set) var errorCount = 0
    /// The user a successful AUTH established (its authentication identity).
    public private(set) var authenticatedUser: String? = nil
    var sasl: SASLStep? = nil
    var saslUser = ""
    var saslPassword: [UInt8] = []
    var authFailures = 0
    /// Bytes of message content received in the current transaction.
    public private(set) var messageSize = 0
    var scanner = BodyScanner()
    /// The reply to give at the end of the body instead of accepting it (size, long line).
    var bodyFailure: Reply? = nil
    var usedBDAT = false
    /// A BDAT chunk whose bytes are skipped because the command is not acceptable now.
    var bdatRejection: Reply? = nil
    /// Line endings of text sent with BDAT (not BINARYMIME).
    var chunkLines = ChunkLineCheck()

    public init(context: ServerContext) {
        self.context = context
    }

    var config: ServerConfiguration { context.configuration }

    /// The timeout for the current state (RFC 5321 §4.5.3.2), in nanoseconds.
    public var timeout: UInt64 {
        switch phase {
        case .data, .bdat: return config.dataTimeout
        default: return config.commandTimeout
        }
    }

    public var isClosed: Bool { phase == .closed }
    /// Inside DATA, or a BDAT transaction (its chunks and the commands between them): the data
    /// timeout and minimum rate apply, across chunks.
    public var isReceivingData: Bool {
        switch phase {
        case .data, .bdat: return true
        case .ready: return usedBDAT
        default: return false
        }
    }
    /// Command and SASL lines read so far: a driver moves the command deadline when it grows.
    public private(set) var linesRead = 0
    /// The settings this session runs with.
    public var configuration: ServerConfiguration { config }
    /// Why the server closed the session, for its log line (nil: the client quit or went away).
    public private(set) var closeReason: String? = nil
    /// Waiting for the driver to resolve a check or store a message.
    public var isAwaitingDecision: Bool { pending != nil }

    // MARK: Driver entry points

    /// Writes the 220 greeting.
    public mutating func start(into out: OutputBuffer) {
        guard phase == .greeting else { return }
        out.append(context.greeting)
        phase = .hello
    }

    /// The session ran past a time limit: `why` says which, for the log (the client gets 421 4.4.2).
    public mutating func timedOut(_ why: String, into out: OutputBuffer) {
        timedOut(into: out)
        closeReason = why
    }

    /// The session idled past `timeout`.
    public mutating func timedOut(into out: OutputBuffer) {
        guard phase != .closed else { return }
        Reply.timeout.write(to: out)
        closeReason = "timeout (421 4.4.2)"
        phase = .closed
    }

    /// The server is shutting down.
    public mutating func shutdown(into out: OutputBuffer) {
        guard phase != .closed else { return }
        Reply.shuttingDown.write(to: out)
        phase = .closed
    }

    /// The TLS handshake after `startTLS` completed (or implicit TLS, before `start`): the session
    /// starts over — the client must send EHLO again, nothing said before TLS is kept (RFC 3207 §4.2).
    public mutating func tlsEstablished() {
        isTLS = true
        authenticatedUser = nil
        sasl = nil
        heloName = nil
        isExtended = false
        envelope.reset()
        messageSize = 0
        bodyFailure = nil
        usedBDAT = false
        if phase != .greeting, phase != .closed { phase = .hello }
    }

    /// Answers a `checkSender` event: nil accepts, a reply rejects.
    public mutating func resolveSender(_ rejection: Reply?, into out: OutputBuffer) -> ServerEvent? {
        precondition(pending == .sender)
        pending = nil
        if let r = rejection {
            envelope.reset()
            return fail(r, out)
        }
        Reply.senderOK.write(to: out)
        return nil
    }

    /// Answers a `checkRecipient` event: nil accepts, a reply rejects.
    public mutating func resolveRecipient(_ rejection: Reply?, into out: OutputBuffer) -> ServerEvent? {
        precondition(pending == .recipient)
        pending = nil
        if let r = rejection {
            envelope.removeLastRecipient()
            return fail(r, out)
        }
        Reply.recipientOK.write(to: out)
        return nil
    }

    /// Answers a `message` event with the final reply (250 once stored durably, or an error).
    public mutating func finishMessage(_ reply: Reply, into out: OutputBuffer) {
        precondition(pending == .message)
        pending = nil
        reply.write(to: out)
        endTransaction()
    }

    /// The credentials of an `authenticate` event, handed over once (the machine forgets them).
    public mutating func takeCredentials() -> (user: String, password: [UInt8]) {
        defer {
            saslUser = ""
            saslPassword = []
        }
        return (saslUser, saslPassword)
    }

    /// Answers an `authenticate` event: 235 and the session is authenticated, or the refusal
    /// (535 5.7.8 for bad credentials, 454 4.7.0 when the client is over its failure limit),
    /// counted; after `maxAuthFailures` refusals the session is closed with 421.
    public mutating func resolveAuth(_ outcome: AuthOutcome, into out: OutputBuffer) -> ServerEvent? {
        precondition(pending == .auth)
        pending = nil
        switch outcome {
        case .authenticated(let user):
            authenticatedUser = user
            Reply.authSucceeded.write(to: out)
            return nil
        case .refused(let reply):
            authFailures += 1
            if let e = fail(reply, out) { return e }
            guard authFailures < config.maxAuthFailures else {
                Reply.authTooManyFailures.write(to: out)
                closeReason = "too many failed authentication attempts (421 4.7.0)"
                phase = .closed
                return .close
            }
            return nil
        }
    }

    /// Consumes input. Call again with the unconsumed rest after `body`, `checkSender`,
    /// `checkRecipient` (once resolved) and `message` (once finished).
    /// - Returns: bytes consumed from `input` and what to do next.
    public mutating func process(_ b: UnsafeRawBufferPointer, into out: OutputBuffer) -> (consumed: Int, event: ServerEvent) {
        var i = 0
        let n = b.count
        while true {
            if pending != nil { return (i, .needInput) }
            switch phase {
            case .closed:
                return (n, .close)
            case .greeting:
                start(into: out)
            case .data:
                switch scanner.scan(b, from: i) {
                case .data(let r, let next):
                    if let e = take(r) { return (next, e) }
                    i = next
                case .needMore(let r, let next):
                    if let e = take(r) { return (next, e) }
                    return (next, .needInput)
                case .end(let r, let next):
                    if let e = take(r) {
                        // Deliver the last bytes first; the scanner is at a line start again,
                        // so the end marker is seen again on the next call.
                        return (r.upperBound, e)
                    }
                    i = next
                    if let e = endOfBody(out) { return (i, e) }
                case .badLineEnding:
                    Reply.bareLineEnding.write(to: out)
                    envelope.reset()
                    closeReason = "bare CR or LF in the message data (521 5.5.2)"
                    phase = .closed
                    return (n, .close)
                }
            case .bdat(let remaining, let last):
                let take = min(remaining, n - i)
                let r = i..<(i + take)
                i += take
                let left = remaining - take
                phase = .bdat(remaining: left, last: last)
                // A body event first; the chunk is finished on the next call (remaining is then 0).
                if take > 0, bdatRejection == nil, bodyFailure == nil, envelope.body != .binaryMIME, !chunkLines.scan(b, r) {
                    bodyFailure = .bareLineEndingInChunk
                }
                if take > 0, bdatRejection == nil, let e = self.take(r) { return (i, e) }
                if left == 0 {
                    if let e = finishChunk(last: last, out) { return (i, e) }
                    continue
                }
                return (i, .needInput)
            case .discardingLine:
                guard let lf = b.firstIndex(of: LF, from: i, to: n) else { return (n, .needInput) }
                i = lf + 1
                phase = isExtended || heloName != nil ? .ready : .hello
                if let e = fail(.lineTooLong, out) { return (n, e) }
            case .hello, .ready:
                let cap = min(n, i + config.maxMailLine)
                guard let lf = b.firstIndex(of: LF, from: i, to: cap) else {
                    guard n - i >= config.maxMailLine else { return (i, .needInput) }
                    // Too long already: skip to its end without buffering it.
                    phase = .discardingLine
                    i = cap
                    continue
                }
                let lineStart = i
                i = lf + 1
                guard lf > lineStart, b[lf - 1] == CR else {
                    if let e = fail(.bareLineFeedInCommand, out) { return (n, e) }
                    continue
                }
                if let e = command(b, lineStart..<(lf - 1), out) {
                    return (e == .close ? n : i, e)
                }
            }
        }
    }

    // MARK: Body

    /// Passes message bytes on unless the body is being discarded.
    mutating func take(_ r: Range<Int>) -> ServerEvent? {
        guard !r.isEmpty else { return nil }
        messageSize += r.count
        if bodyFailure != nil { return nil }
        if config.maxMessageSize > 0, messageSize > config.maxMessageSize {
            bodyFailure = .messageTooBig
            return nil
        }
        return .body(r)
    }

    mutating func endOfBody(_ out: OutputBuffer) -> ServerEvent? {
        phase = .ready
        if scanner.sawLongLine, bodyFailure == nil { bodyFailure = .textLineTooLong }
        scanner.reset()
        if let f = bodyFailure {
            endTransaction()
            return fail(f, out)
        }
        pending = .message
        return .message
    }

    mutating func finishChunk(last: Bool, _ out: OutputBuffer) -> ServerEvent? {
        phase = .ready
        if let r = bdatRejection {
            bdatRejection = nil
            return fail(r, out)
        }
        if last, bodyFailure == nil, envelope.body != .binaryMIME, !chunkLines.isComplete { bodyFailure = .bareLineEndingInChunk }
        if let f = bodyFailure {
            // RFC 3030: the transaction fails; later chunks are refused until a new MAIL.
            endTransaction()
            return fail(f, out)
        }
        if last {
            pending = .message
            return .message
        }
        out.append("250 2.0.0 " as StaticString)
        out.appendDecimal(messageSize)
        out.append(" octets received\r\n" as StaticString)
        return nil
    }

    mutating func endTransaction() {
        envelope.reset()
        messageSize = 0
        bodyFailure = nil
        usedBDAT = false
    }

    // MARK: Replies

    /// Writes an error reply and counts it; closes the session past the error limit.
    mutating func fail(_ reply: Reply, _ out: OutputBuffer) -> ServerEvent? {
        reply.write(to: out)
        // Any error ends a SASL exchange (the one place that says so): the next line is a command
        // again, never taken as credentials (an over-long or bare-LF response included).
        if sasl != nil {
            sasl = nil
            saslUser = ""
            saslPassword = []
        }
        errorCount += 1
        if errorCount >= config.maxErrors {
            Reply.tooManyErrors.write(to: out)
            closeReason = "too many errors (421 4.7.0)"
            phase = .closed
            return .close
        }
        return nil
    }

    // MARK: Commands

    @inline(__always)
    static func verb(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        UInt32(lower(b[at])) | UInt32(lower(b[at + 1])) << 8 | UInt32(lower(b[at + 2])) << 16
            | UInt32(lower(b[at + 3])) << 24
    }

    static func code(_ s: StaticString) -> UInt32 {
        let p = s.utf8Start
        return UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24
    }

    static let HELO = code("helo"), EHLO = code("ehlo"), MAIL = code("mail"), RCPT = code("rcpt")
    static let DATA = code("data"), BDAT = code("bdat"), RSET = code("rset"), NOOP = code("noop")
    static let QUIT = code("quit"), HELP = code("help"), VRFY = code("vrfy"), EXPN = code("expn")
    static let AUTH = code("auth")

    /// Handles one command line `b[line]` (CRLF excluded).
    mutating func command(_ b: UnsafeRawBufferPointer, _ line: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        linesRead &+= 1
        if let step = sasl { return saslResponse(step, b, line, out) }
        let s = line.lowerBound
        // The verb ends at the first space.
        var verbEnd = s
        while verbEnd < line.upperBound, b[verbEnd] != SP { verbEnd += 1 }
        let verbLength = verbEnd - s
        if verbLength >= 1, b[verbEnd - 1] == UInt8(ascii: ":") || isHTTP(b, s, verbLength) {
            Reply.httpOnSMTP.write(to: out)
            closeReason = "an HTTP request, not SMTP"
            phase = .closed
            return .close
        }
        guard verbLength == 4 else {
            if line.count + 2 > config.maxCommandLine { return fail(.lineTooLong, out) }
            if verbLength == 8, b.matchesKeyword("starttls", at: s) { return startTLS(verbEnd == line.upperBound, out) }
            return fail(.unrecognized, out)
        }
        let v = Self.verb(b, s)
        // MAIL and RCPT lines grow with extensions, AUTH with its initial response.
        let isLong = v == Self.MAIL || v == Self.RCPT || v == Self.AUTH
        if line.count + 2 > (isLong ? config.maxMailLine : config.maxCommandLine) {
            return fail(.lineTooLong, out)
        }
        // Argument: after the space(s), trailing spaces trimmed.
        var argStart = verbEnd
        while argStart < line.upperBound, b[argStart] == SP { argStart += 1 }
        var argEnd = line.upperBound
        while argEnd > argStart, b[argEnd - 1] == SP { argEnd -= 1 }
        let arg = argStart..<argEnd

        switch v {
        case Self.EHLO, Self.HELO:
            return hello(b, arg, extended: v == Self.EHLO, out)
        case Self.MAIL:
            return mail(b, arg, out)
        case Self.RCPT:
            return rcpt(b, arg, out)
        case Self.DATA:
            return data(arg, out)
        case Self.BDAT:
            return bdat(b, arg, out)
        case Self.RSET:
            guard arg.isEmpty else { return fail(.noArguments, out) }
            envelope.reset()
            messageSize = 0
            bodyFailure = nil
            usedBDAT = false
            Reply.resetOK.write(to: out)
            return nil
        case Self.NOOP:
            Reply.ok.write(to: out)
            return nil
        case Self.QUIT:
            Reply.bye.write(to: out)
            phase = .closed
            return .close
        case Self.HELP:
            Reply.help.write(to: out)
            return nil
        case Self.VRFY:
            guard !arg.isEmpty else { return fail(.vrfySyntax, out) }
            Reply.cannotVerify.write(to: out)
            return nil
        case Self.EXPN:
            return fail(.expnDisabled, out)
        case Self.AUTH:
            return auth(b, arg, out)
        default:
            return fail(.unrecognized, out)
        }
    }

    /// STARTTLS (RFC 3207): offered only when configured, once, outside a mail transaction.
    mutating func startTLS(_ noArgument: Bool, _ out: OutputBuffer) -> ServerEvent? {
        guard config.startTLS else { return fail(.notImplemented, out) }
        guard !isTLS else { return fail(.tlsAlreadyActive, out) }
        guard noArgument else { return fail(.noArguments, out) }
        guard phase == .ready || phase == .hello else { return fail(.helloFirst, out) }
        guard !envelope.hasSender else { return fail(.tlsInTransaction, out) }
        Reply.readyForTLS.write(to: out)
        return .startTLS
    }

    // MARK: AUTH (RFC 4954; PLAIN RFC 4616, LOGIN draft-murchison-sasl-login)

    static let loginUserChallenge: StaticString = "334 VXNlcm5hbWU6\r\n"  // "Username:"
    static let loginPasswordChallenge: StaticString = "334 UGFzc3dvcmQ6\r\n"  // "Password:"

    mutating func auth(_ b: UnsafeRawBufferPointer, _ arg: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        guard config.auth else { return fail(.notImplemented, out) }
        // Passwords only over TLS: before it, say so whatever else is wrong.
        guard isTLS else { return fail(.authNeedsTLS, out) }
        guard phase == .ready, heloName != nil, isExtended else { return fail(.helloFirst, out) }
        guard authenticatedUser == nil else { return fail(.authAlready, out) }
        guard !envelope.hasSender else { return fail(.authInTransaction, out) }
        var i = arg.lowerBound
        while i < arg.upperBound, b[i] != SP { i += 1 }
        let mechanism = arg.lowerBound..<i
        while i < arg.upperBound, b[i] == SP { i += 1 }
        let initial: Range<Int>? = i < arg.upperBound ? i..<arg.upperBound : nil
        if mechanism.count == 5, b.matchesKeyword("plain", at: mechanism.lowerBound) {
            guard let initial else {
                sasl = .plain
                out.append("334 \r\n" as StaticString)
                return nil
            }
            return saslResponse(.plain, b, initial, out)
        }
        if mechanism.count == 5, b.matchesKeyword("login", at: mechanism.lowerBound) {
            guard let initial else {
                sasl = .loginUser
                out.append(Self.loginUserChallenge)
                return nil
            }
            return saslResponse(.loginUser, b, initial, out)
        }
        return fail(mechanism.isEmpty ? .authSyntax : .authMechanism, out)
    }

    /// One SASL response line (base64; `*` cancels, `=` is empty).
    mutating func saslResponse(_ step: SASLStep, _ b: UnsafeRawBufferPointer, _ line: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        linesRead &+= 1
        sasl = nil
        if line.count == 1, b[line.lowerBound] == UInt8(ascii: "*") {
            saslUser = ""
            return fail(.authCancelled, out)
        }
        let decoded: [UInt8]
        if line.count == 1, b[line.lowerBound] == UInt8(ascii: "=") {
            decoded = []
        } else {
            guard !line.isEmpty, let d = Base64.decode(UnsafeRawBufferPointer(rebasing: b[line])) else {
                saslUser = ""
                return fail(.authBadBase64, out)
            }
            decoded = d
        }
        switch step {
        case .plain:
            // [authzid] NUL authcid NUL passwd; an authorization identity other than the
            // authentication identity is not allowed (no proxy authorization).
            // Exactly RFC 4616's form: two NULs, a user and a password without NUL (trailing NULs
            // are not ignored).
            let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
            guard parts.count == 3, let user = String(validating: parts[1], as: UTF8.self), !user.isEmpty, !parts[2].isEmpty,
                parts[0].isEmpty || parts[0].elementsEqual(parts[1])
            else {
                return resolveAuthNow(.refused(.authFailed), out)
            }
            saslUser = user
            saslPassword = Array(parts[2])
        case .loginUser:
            saslUser = String(validating: decoded, as: UTF8.self) ?? ""
            sasl = .loginPassword
            out.append(Self.loginPasswordChallenge)
            return nil
        case .loginPassword:
            saslPassword = decoded
            guard !saslUser.isEmpty else {
                saslPassword = []
                return resolveAuthNow(.refused(.authFailed), out)
            }
        }
        pending = .auth
        return .authenticate
    }

    /// A refusal the machine decides itself (malformed credentials), counted like any other.
    mutating func resolveAuthNow(_ outcome: AuthOutcome, _ out: OutputBuffer) -> ServerEvent? {
        pending = .auth
        return resolveAuth(outcome, into: out)
    }

    /// GET, PUT, POST, HEAD, CONNECT: a web client (or an attack through a web proxy) on the SMTP port.
    func isHTTP(_ b: UnsafeRawBufferPointer, _ s: Int, _ len: Int) -> Bool {
        switch len {
        case 3: return b.matchesKeyword("get", at: s) || b.matchesKeyword("put", at: s)
        case 4: return b.matchesKeyword("post", at: s) || b.matchesKeyword("head", at: s)
        case 7: return b.matchesKeyword("connect", at: s)
        default: return false
        }
    }

    mutating func hello(_ b: UnsafeRawBufferPointer, _ arg: Range<Int>, extended: Bool, _ out: OutputBuffer) -> ServerEvent? {
        guard !arg.isEmpty else { return fail(.helloNeedsDomain, out) }
        // Take the first word; refuse control characters and invalid UTF-8.
        var end = arg.lowerBound
        while end < arg.upperBound, b[end] != SP {
            if b[end] < 32 || b[end] == 127 { return fail(.helloBadDomain, out) }
            end += 1
        }
        guard PathParser.isValidUTF8(b, from: arg.lowerBound, to: end) else { return fail(.helloBadDomain, out) }
        heloName = String(decoding: UnsafeRawBufferPointer(rebasing: b[arg.lowerBound..<end]), as: UTF8.self)
        isExtended = extended
        envelope.reset()
        messageSize = 0
        bodyFailure = nil
        usedBDAT = false
        phase = .ready
        out.append(extended ? (isTLS ? context.ehloReply : context.ehloReplyOfferingTLS) : context.heloReply)
        return nil
    }

    /// Skips `FROM:` / `TO:` and optional spaces; returns the index of the path.
    func afterKeyword(_ b: UnsafeRawBufferPointer, _ arg: Range<Int>, _ keyword: StaticString) -> Int? {
        guard b.matchesKeyword(keyword, at: arg.lowerBound),
            arg.lowerBound + keyword.utf8CodeUnitCount <= arg.upperBound
        else { return nil }
        var i = arg.lowerBound + keyword.utf8CodeUnitCount
        while i < arg.upperBound, b[i] == SP { i += 1 }
        return i
    }

    mutating func mail(_ b: UnsafeRawBufferPointer, _ arg: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        guard phase == .ready, heloName != nil else { return fail(.helloFirst, out) }
        guard !config.requireAuth || authenticatedUser != nil else { return fail(isTLS || !config.startTLS ? .authRequired : .authNeedsTLS, out) }
        guard !envelope.hasSender else { return fail(.nestedMail, out) }
        guard let p = afterKeyword(b, arg, "from:") else { return fail(.mailSyntax, out) }
        let path: ParsedPath
        switch PathParser.parse(b, from: p, to: arg.upperBound, allowNull: true, allowPostmaster: false) {
        case .success(let parsed): path = parsed
        case .failure: return fail(.badSenderSyntax, out)
        }
        // Parameters
        var e = Envelope()
        swap(&e, &envelope)  // reuse storage; `e` is the cleared transaction being built
        e.reset()
        var seen: UInt8 = 0
        var i = path.end
        var failure: Reply? = nil
        while failure == nil {
            guard let (k, v, next) = Self.nextParameter(b, from: i, to: arg.upperBound, failure: &failure) else { break }
            i = next
            let ext = config.extensions
            func once(_ bit: UInt8) -> Bool {
                if seen & bit != 0 { return false }
                seen |= bit
                return true
            }
            if b.matchesKeyword("size", at: k.lowerBound), k.count == 4, ext.contains(.size) {
                guard once(1), let v, !v.isEmpty, v.allSatisfy({ isDigit(b[$0]) }) else { failure = .badParameter; break }
                // Any number of digits is a size (RFC 1870 says 20 at most, but a larger one is
                // still plainly too big): past what an Int holds it is larger than any limit.
                let size = Self.decimal(b, v) ?? Int.max
                if config.maxMessageSize > 0, size > config.maxMessageSize { failure = .sizeExceededAtMail; break }
                e.declaredSize = size
            } else if b.matchesKeyword("body", at: k.lowerBound), k.count == 4 {
                guard once(2), let v else { failure = .badParameter; break }
                if v.count == 4, b.matchesKeyword("7bit", at: v.lowerBound) {
                    e.body = .sevenBit
                } else if v.count == 8, b.matchesKeyword("8bitmime", at: v.lowerBound), ext.contains(.eightBitMIME) {
                    e.body = .eightBitMIME
                } else if v.count == 10, b.matchesKeyword("binarymime", at: v.lowerBound),
                    ext.contains(.binaryMIME), ext.contains(.chunking)
                {
                    e.body = .binaryMIME
                } else {
                    failure = .badParameter
                }
            } else if b.matchesKeyword("smtputf8", at: k.lowerBound), k.count == 8, ext.contains(.smtpUTF8) {
                guard once(4), v == nil else { failure = .badParameter; break }
                e.smtpUTF8 = true
            } else if b.matchesKeyword("ret", at: k.lowerBound), k.count == 3, ext.contains(.dsn) {
                guard once(8), let v else { failure = .badParameter; break }
                if v.count == 4, b.matchesKeyword("full", at: v.lowerBound) {
                    e.ret = .full
                } else if v.count == 4, b.matchesKeyword("hdrs", at: v.lowerBound) {
                    e.ret = .headers
                } else {
                    failure = .badParameter
                }
            } else if b.matchesKeyword("envid", at: k.lowerBound), k.count == 5, ext.contains(.dsn) {
                guard once(16), let v, v.count <= 100, Xtext.isValid(b, v) else { failure = .badParameter; break }
                e.setEnvelopeID(b, v)
            } else if b.matchesKeyword("auth", at: k.lowerBound), k.count == 4 {
                // RFC 4954 §5: accepted and not trusted (the session's own AUTH is what counts).
                guard once(32), v != nil else { failure = .badParameter; break }
            } else {
                failure = .unknownParameter
            }
        }
        if failure == nil, path.isUTF8, !e.smtpUTF8 { failure = .utf8NeedsSMTPUTF8 }
        if let f = failure {
            e.reset()
            swap(&e, &envelope)
            return fail(f, out)
        }
        e.setSender(b, path.mailbox)
        swap(&e, &envelope)
        if config.policyEvents {
            pending = .sender
            return .checkSender
        }
        Reply.senderOK.write(to: out)
        return nil
    }

    mutating func rcpt(_ b: UnsafeRawBufferPointer, _ arg: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        guard phase == .ready, heloName != nil else { return fail(.helloFirst, out) }
        guard envelope.hasSender else { return fail(.mailFirst, out) }
        guard let p = afterKeyword(b, arg, "to:") else { return fail(.rcptSyntax, out) }
        let path: ParsedPath
        switch PathParser.parse(b, from: p, to: arg.upperBound, allowNull: false, allowPostmaster: true) {
        case .success(let parsed): path = parsed
        case .failure: return fail(.badRecipientSyntax, out)
        }
        var notify: DSNNotify = []
        var orcpt: Range<Int>? = nil
        var i = path.end
        var failure: Reply? = nil
        while failure == nil {
            guard let (k, v, next) = Self.nextParameter(b, from: i, to: arg.upperBound, failure: &failure) else { break }
            i = next
            if b.matchesKeyword("notify", at: k.lowerBound), k.count == 6, config.extensions.contains(.dsn) {
                guard notify.isEmpty, let v, let parsed = Self.notify(b, v) else { failure = .badParameter; break }
                notify = parsed
            } else if b.matchesKeyword("orcpt", at: k.lowerBound), k.count == 5, config.extensions.contains(.dsn) {
                // addr-type ";" xtext
                guard orcpt == nil, let v, v.count <= 500,
                    let semi = b.firstIndex(of: UInt8(ascii: ";"), from: v.lowerBound, to: v.upperBound),
                    semi > v.lowerBound, semi + 1 < v.upperBound, Xtext.isValid(b, (semi + 1)..<v.upperBound)
                else { failure = .badParameter; break }
                orcpt = v
            } else {
                failure = .unknownParameter
            }
        }
        if failure == nil, path.isUTF8, !envelope.smtpUTF8 { failure = .utf8NeedsSMTPUTF8 }
        if let f = failure { return fail(f, out) }
        if envelope.recipientCount >= config.maxRecipients {
            Reply.tooManyRecipients.write(to: out)
            return nil
        }
        envelope.addRecipient(b, path.mailbox, notify: notify, orcpt: orcpt)
        if config.policyEvents {
            pending = .recipient
            return .checkRecipient
        }
        Reply.recipientOK.write(to: out)
        return nil
    }

    mutating func data(_ arg: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        guard phase == .ready, heloName != nil else { return fail(.helloFirst, out) }
        guard arg.isEmpty else { return fail(.noArguments, out) }
        guard envelope.hasSender else { return fail(.mailFirst, out) }
        guard envelope.recipientCount > 0 else { return fail(.noValidRecipients, out) }
        guard !usedBDAT else { return fail(.dataAfterBDAT, out) }
        guard envelope.body != .binaryMIME else { return fail(.binaryNeedsBDAT, out) }
        Reply.startData.write(to: out)
        scanner.reset()
        messageSize = 0
        bodyFailure = nil
        phase = .data
        return .messageStart
    }

    mutating func bdat(_ b: UnsafeRawBufferPointer, _ arg: Range<Int>, _ out: OutputBuffer) -> ServerEvent? {
        guard config.extensions.contains(.chunking) else { return fail(.unrecognized, out) }
        // BDAT chunk-size [SP "LAST"]
        var i = arg.lowerBound
        while i < arg.upperBound, isDigit(b[i]) { i += 1 }
        guard i > arg.lowerBound, i - arg.lowerBound <= 18, let size = Self.decimal(b, arg.lowerBound..<i) else {
            return fail(.bdatSyntax, out)
        }
        var last = false
        if i < arg.upperBound {
            while i < arg.upperBound, b[i] == SP { i += 1 }
            guard arg.upperBound - i == 4, b.matchesKeyword("last", at: i) else { return fail(.bdatSyntax, out) }
            last = true
        }
        // The chunk's bytes follow whatever we answer: skip them when the command is refused.
        if heloName == nil || phase != .ready {
            bdatRejection = .helloFirst
        } else if !envelope.hasSender {
            bdatRejection = .mailFirst
        } else if envelope.recipientCount == 0 {
            bdatRejection = .noValidRecipients
        } else {
            bdatRejection = nil
            if !usedBDAT {
                usedBDAT = true
                messageSize = 0
                bodyFailure = nil
                chunkLines = ChunkLineCheck()
                phase = .bdat(remaining: size, last: last)
                return .messageStart
            }
        }
        phase = .bdat(remaining: size, last: last)
        return nil
    }

    // MARK: Parameter helpers

    /// Parses the next ` keyword[=value]` after a path. Returns nil at the end of the line.
    static func nextParameter(
        _ b: UnsafeRawBufferPointer, from start: Int, to end: Int, failure: inout Reply?
    ) -> (key: Range<Int>, value: Range<Int>?, next: Int)? {
        guard start < end else { return nil }
        guard b[start] == SP else {
            failure = .badParameter
            return nil
        }
        var i = start
        while i < end, b[i] == SP { i += 1 }
        guard i < end else { return nil }
        let keyStart = i
        while i < end, isLetDig(b[i]) || (i > keyStart && b[i] == UInt8(ascii: "-")) { i += 1 }
        guard i > keyStart else {
            failure = .badParameter
            return nil
        }
        let key = keyStart..<i
        if i < end, b[i] == UInt8(ascii: "=") {
            i += 1
            let valueStart = i
            while i < end, b[i] != SP {
                guard b[i] >= 33, b[i] <= 126, b[i] != UInt8(ascii: "=") else {
                    failure = .badParameter
                    return nil
                }
                i += 1
            }
            guard i > valueStart else {
                failure = .badParameter
                return nil
            }
            return (key, valueStart..<i, i)
        }
        guard i == end || b[i] == SP else {
            failure = .badParameter
            return nil
        }
        return (key, nil, i)
    }

    static func decimal(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> Int? {
        guard !r.isEmpty, r.count <= 18 else { return nil }
        var v = 0
        for k in r {
            guard isDigit(b[k]) else { return nil }
            v = v * 10 + Int(b[k] - 48)
        }
        return v
    }

    static func notify(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> DSNNotify? {
        var result: DSNNotify = []
        var i = r.lowerBound
        while i < r.upperBound {
            var j = i
            while j < r.upperBound, b[j] != UInt8(ascii: ",") { j += 1 }
            let len = j - i
            if len == 5, b.matchesKeyword("never", at: i) {
                result.insert(.never)
            } else if len == 7, b.matchesKeyword("success", at: i) {
                result.insert(.success)
            } else if len == 7, b.matchesKeyword("failure", at: i) {
                result.insert(.failure)
            } else if len == 5, b.matchesKeyword("delay", at: i) {
                result.insert(.delay)
            } else {
                return nil
            }
            i = j + 1
            if j + 1 == r.upperBound { return nil }  // trailing comma
        }
        // NEVER excludes the others (RFC 3461 §4.1).
        if result.contains(.never), result != .never { return nil }
        return result.isEmpty ? nil : result
    }
}
