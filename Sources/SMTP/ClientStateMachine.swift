// The client side of an SMTP session as a sans-IO state machine, the mirror of
// `ServerStateMachine`: greeting, EHLO (HELO fallback), and transactions with MAIL/RCPT/DATA
// or BDAT, pipelined (RFC 2920) when the server offers PIPELINING. Replies are matched to
// commands through a queue of expected replies, so transactions may overlap: the next MAIL
// can be written right behind the end of the previous body.

/// What the server said in its EHLO reply.
public struct ServerCapabilities: Sendable, Equatable {
    public var extended = false
    public var pipelining = false
    public var size: Int? = nil
    public var eightBitMIME = false
    public var smtpUTF8 = false
    public var chunking = false
    public var binaryMIME = false
    public var dsn = false
    public var enhancedStatusCodes = false
    public var startTLS = false
    public var auth: [String] = []
    public init() {}

    mutating func parse(keyword line: String) {
        let words = line.split(separator: " ")
        guard let first = words.first else { return }
        switch first.uppercased() {
        case "PIPELINING": pipelining = true
        case "SIZE": size = words.count > 1 ? Int(words[1]) : 0
        case "8BITMIME": eightBitMIME = true
        case "SMTPUTF8": smtpUTF8 = true
        case "CHUNKING": chunking = true
        case "BINARYMIME": binaryMIME = true
        case "DSN": dsn = true
        case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
        case "STARTTLS": startTLS = true
        case "AUTH": auth = words.dropFirst().map { $0.uppercased() }
        default: break
        }
    }
}

public struct ClientConfiguration: Sendable {
    /// Our name in EHLO/HELO.
    public var heloName: String
    /// Use PIPELINING when the server offers it.
    public var allowPipelining: Bool
    /// Use BDAT when the server offers CHUNKING.
    public var allowChunking: Bool
    /// Require STARTTLS (RFC 3207) after the first EHLO: a server that does not offer it fails
    /// the session. (Implicit TLS needs nothing here: the driver runs TLS before the greeting.)
    public var startTLS: Bool
    /// STARTTLS whenever the server offers it, and carry on in clear when it does not or refuses
    /// (an MTA's outbound sessions; whether clear is acceptable is the driver's policy, from
    /// `isTLS` and `tlsRefused`).
    public var opportunisticTLS = false
    /// Log in with AUTH PLAIN (RFC 4616), or LOGIN when only that is offered, after EHLO, once
    /// over TLS (the driver says so through `tlsEstablished`, or `implicitTLS`); never in clear.
    public var auth: (user: String, password: String)?
    /// The driver runs TLS from the first byte (RFC 8314).
    public var implicitTLS: Bool

    public init(
        heloName: String = "localhost", allowPipelining: Bool = true, allowChunking: Bool = false, startTLS: Bool = false,
        auth: (user: String, password: String)? = nil, implicitTLS: Bool = false
    ) {
        self.heloName = heloName
        self.allowPipelining = allowPipelining
        self.allowChunking = allowChunking
        self.startTLS = startTLS
        self.auth = auth
        self.implicitTLS = implicitTLS
    }
}

/// One message to send.
public struct ClientTransaction: Sendable {
    public var sender: String
    public var recipients: [String]
    /// The body length in bytes as BDAT sends it (unstuffed), also used for SIZE=.
    public var bodyLength: Int
    public var body: BodyType
    public var smtpUTF8: Bool
    /// Extra MAIL parameters, each with its leading space (DSN's " RET=HDRS ENVID=x").
    public var mailParameters = ""
    /// Extra RCPT parameters per recipient, each with its leading space (" NOTIFY=… ORCPT=…");
    /// empty, or one per recipient.
    public var recipientParameters: [String] = []

    public init(sender: String, recipients: [String], bodyLength: Int, body: BodyType = .sevenBit, smtpUTF8: Bool = false) {
        self.sender = sender
        self.recipients = recipients
        self.bodyLength = bodyLength
        self.body = body
        self.smtpUTF8 = smtpUTF8
    }
}

/// The outcome of one transaction.
public struct TransactionResult: Sendable, Equatable {
    /// The final reply code (end of data, or the reply that ended the transaction early).
    public var code: Int
    public var status: EnhancedStatus?
    /// Reply text of a failure (empty on success).
    public var text: String
    /// Reply code per recipient, in order.
    public var recipientCodes: [Int]
    /// Per recipient: the reply text of a refusal (enhanced status included, as the server sent
    /// it), empty for an accepted one.
    public var recipientTexts: [String] = []
    /// MAIL was refused: `code` and `text` are its reply, and no recipient was tried.
    public var senderRefused = false
    public var accepted: Bool { code >= 200 && code < 300 }

    public init(code: Int, status: EnhancedStatus?, text: String, recipientCodes: [Int]) {
        self.code = code
        self.status = status
        self.text = text
        self.recipientCodes = recipientCodes
    }
}

public enum ClientEvent: Equatable, Sendable {
    case needInput
    /// Greeting and EHLO done; `capabilities` is set. Begin transactions.
    case ready
    /// Write the body now: raw for BDAT (`usesChunking`), dot-stuffed plus `.<CRLF>` for DATA
    /// (see `writeDataBody(_:into:)`).
    case sendBody
    case transactionDone(TransactionResult)
    /// STARTTLS answered 220: run the TLS handshake (nothing else may be written in clear), then
    /// call `tlsEstablished(into:)` and carry on over TLS.
    case startTLS
    /// QUIT answered, or the server closed with 421.
    case closed(code: Int)
    /// The server refused the session (greeting or HELO) or sent something unparseable.
    case failed(code: Int, text: String)
}

public struct ClientStateMachine: Sendable {
    enum Expect: Sendable, Equatable {
        case greeting, ehlo, helo, startTLS, auth, authLoginUser, authLoginPassword, mail, rcpt(Int), data, dataEnd, bdatLast, rset, quit
    }

    public let configuration: ClientConfiguration
    public private(set) var capabilities = ServerCapabilities()
    var expects: [Expect] = []
    var head = 0
    var ehloLines: [String] = []
    var failureText: [String] = []
    // Reply-side state of the transaction whose replies are being read.
    var recipientCodes: [Int] = []
    var recipientTexts: [String] = []
    var acceptedRecipients = 0
    var earlyResult: TransactionResult? = nil
    /// The transaction waiting for replies before its next command (no pipelining).
    var stepwise: ClientTransaction? = nil
    /// The last transaction did not end with the final reply to its data (a refused MAIL, every
    /// recipient refused, DATA refused, a failed BDAT): the server may still hold its sender or
    /// recipients, so the next one begins with RSET. The one place that decides it: `handle`.
    public private(set) var needsReset = false
    /// A transaction waiting for the reply to its RSET (no pipelining).
    var afterReset: ClientTransaction? = nil
    public private(set) var isReady = false
    /// STARTTLS completed: the session runs over TLS.
    public private(set) var isTLS = false
    /// The server offered STARTTLS and then refused it (opportunistic sessions carry on in clear).
    public private(set) var tlsRefused = false
    /// The current transactions use BDAT.
    public private(set) var usesChunking = false
    public var pipelines: Bool { configuration.allowPipelining && capabilities.pipelining }

    public init(configuration: ClientConfiguration) {
        self.configuration = configuration
        isTLS = configuration.implicitTLS
        expects.reserveCapacity(16)
        expects.append(.greeting)
    }

    /// Replies still outstanding.
    public var outstanding: Int { expects.count - head }

    /// A DATA command waits for its 354: nothing may be written until it comes (RFC 2920 §3.1).
    public var awaitingDataReply: Bool { expects[head...].contains(.data) }

    mutating func expect(_ e: Expect) { expects.append(e) }

    mutating func popExpect() -> Expect? {
        guard head < expects.count else { return nil }
        let e = expects[head]
        head += 1
        if head == expects.count {
            expects.removeAll(keepingCapacity: true)
            head = 0
        }
        return e
    }

    /// EHLO (and TLS, if any) done: AUTH when configured (over TLS only), else ready.
    mutating func afterEHLO(into out: OutputBuffer) -> ClientEvent? {
        if let auth = configuration.auth {
            guard isTLS, capabilities.auth.contains("PLAIN") || capabilities.auth.contains("LOGIN") else {
                quit(into: out)
                return .failed(code: 0, text: isTLS ? "neither AUTH PLAIN nor LOGIN offered" : "AUTH without TLS refused")
            }
            if capabilities.auth.contains("PLAIN") {
                out.append("AUTH PLAIN " as StaticString)
                out.append(Base64.encode(Array("\0\(auth.user)\0\(auth.password)".utf8)))
                out.append("\r\n" as StaticString)
                expect(.auth)
            } else {
                // AUTH LOGIN: the user name and the password, each after a 334.
                out.append("AUTH LOGIN\r\n" as StaticString)
                expect(.authLoginUser)
            }
            return nil
        }
        isReady = true
        return .ready
    }

    /// The TLS handshake after `startTLS` finished: EHLO again (RFC 3207 §4.2: what the server
    /// said before TLS is forgotten).
    public mutating func tlsEstablished(into out: OutputBuffer) {
        isTLS = true
        capabilities = ServerCapabilities()
        writeEHLO(out)
    }

    mutating func writeEHLO(_ out: OutputBuffer) {
        out.append("EHLO " as StaticString)
        out.append(configuration.heloName)
        out.append("\r\n" as StaticString)
        expect(.ehlo)
    }

    /// Writes the commands of a transaction (all at once when pipelining).
    /// - Returns: true when the driver must write the raw body right now (pipelined BDAT).
    public mutating func begin(_ t: ClientTransaction, into out: OutputBuffer) -> Bool {
        precondition(isReady, "begin() before .ready")
        usesChunking = configuration.allowChunking && capabilities.chunking
        if needsReset {
            // RSET may lead a pipelined group (RFC 2920 §3.1); without pipelining MAIL waits for
            // its reply.
            reset(into: out)
            if !pipelines {
                afterReset = t
                return false
            }
        }
        writeMail(t, out)
        if pipelines {
            for i in t.recipients.indices { writeRcpt(t, i, out) }
            if usesChunking {
                writeBDATHeader(t.bodyLength, out)
                return true
            }
            out.append("DATA\r\n" as StaticString)
            expect(.data)
            return false
        }
        stepwise = t
        return false
    }

    func writeMailParameters(_ t: ClientTransaction, _ out: OutputBuffer) {
        if capabilities.size != nil {
            out.append(" SIZE=" as StaticString)
            out.appendDecimal(t.bodyLength)
        }
        switch t.body {
        case .eightBitMIME where capabilities.eightBitMIME: out.append(" BODY=8BITMIME" as StaticString)
        case .binaryMIME where capabilities.binaryMIME && usesChunking: out.append(" BODY=BINARYMIME" as StaticString)
        default: break
        }
        if t.smtpUTF8, capabilities.smtpUTF8 { out.append(" SMTPUTF8" as StaticString) }
        if !t.mailParameters.isEmpty { out.append(t.mailParameters) }
    }

    mutating func writeMail(_ t: ClientTransaction, _ out: OutputBuffer) {
        out.append("MAIL FROM:<" as StaticString)
        out.append(t.sender)
        out.append(">" as StaticString)
        writeMailParameters(t, out)
        out.append("\r\n" as StaticString)
        expect(.mail)
    }

    mutating func writeRcpt(_ t: ClientTransaction, _ i: Int, _ out: OutputBuffer) {
        out.append("RCPT TO:<" as StaticString)
        out.append(t.recipients[i])
        out.append(">" as StaticString)
        if i < t.recipientParameters.count { out.append(t.recipientParameters[i]) }
        out.append("\r\n" as StaticString)
        expect(.rcpt(i))
    }

    mutating func writeBDATHeader(_ length: Int, _ out: OutputBuffer) {
        out.append("BDAT " as StaticString)
        out.appendDecimal(length)
        out.append(" LAST\r\n" as StaticString)
        expect(.bdatLast)
    }

    /// Writes a dot-stuffed body (ending in CRLF) and the end-of-data marker.
    public mutating func writeDataBody(_ stuffed: UnsafeRawBufferPointer, into out: OutputBuffer) {
        out.append(stuffed)
        out.append(".\r\n" as StaticString)
        expect(.dataEnd)
    }

    /// Writes the raw body of a BDAT transaction (the header was written by the state machine).
    public func writeChunkBody(_ raw: UnsafeRawBufferPointer, into out: OutputBuffer) {
        out.append(raw)
    }

    public mutating func quit(into out: OutputBuffer) {
        out.append("QUIT\r\n" as StaticString)
        expect(.quit)
    }

    public mutating func reset(into out: OutputBuffer) {
        out.append("RSET\r\n" as StaticString)
        expect(.rset)
        needsReset = false
    }

    /// Consumes reply bytes.
    public mutating func process(_ b: UnsafeRawBufferPointer, into out: OutputBuffer) -> (consumed: Int, event: ClientEvent) {
        var i = 0
        while true {
            let line: ReplyLine
            do {
                guard let l = try ReplyParser.line(b, from: i) else { return (i, .needInput) }
                line = l
            } catch {
                return (b.count, .failed(code: 0, text: "malformed reply"))
            }
            i = line.next
            guard let expected = expects.indices.contains(head) ? expects[head] : nil else {
                if line.code == 421 { return (i, .closed(code: 421)) }
                return (b.count, .failed(code: line.code, text: "unexpected reply"))
            }
            if expected == .ehlo, line.code == 250 {
                ehloLines.append(String(decoding: UnsafeRawBufferPointer(rebasing: b[line.text]), as: UTF8.self))
            } else if line.code >= 400 {
                failureText.append(String(decoding: UnsafeRawBufferPointer(rebasing: b[line.text]), as: UTF8.self))
            }
            guard line.isLast else { continue }
            _ = popExpect()
            let status = line.code >= 400 ? ReplyParser.enhancedStatus(b, line.text)?.0 : nil
            if let e = handle(expected, code: line.code, status: status, out) {
                guard case .transactionDone(var r) = e else { return (i, e) }
                // Only the final reply to the data ends a transaction for sure (RFC 5321 §4.1.1.4;
                // a failed BDAT LAST may leave it open, RFC 3030 §4.2).
                needsReset = !(expected == .dataEnd || (expected == .bdatLast && r.accepted))
                // Each recipient's refusal text, in order (empty for accepted ones).
                r.recipientTexts = (0..<r.recipientCodes.count).map { $0 < recipientTexts.count ? recipientTexts[$0] : "" }
                return (i, .transactionDone(r))
            }
        }
    }

    func failureString() -> String {
        failureText.map { t -> String in
            // Drop a leading enhanced status from the text.
            var s = Substring(t)
            if let sp = s.firstIndex(of: " "), s[..<sp].allSatisfy({ $0.isNumber || $0 == "." }), s[..<sp].contains(".") {
                s = s[s.index(after: sp)...]
            }
            return String(s)
        }.joined(separator: " ")
    }

    /// A reply that ends the session: QUIT, and the failure with the reply's words (then forgotten).
    mutating func giveUp(_ code: Int, _ out: OutputBuffer) -> ClientEvent {
        let t = failureString()
        failureText.removeAll()
        quit(into: out)
        return .failed(code: code, text: t)
    }

    mutating func handle(_ e: Expect, code: Int, status: EnhancedStatus?, _ out: OutputBuffer) -> ClientEvent? {
        defer { if code < 400 { failureText.removeAll(keepingCapacity: true) } }
        let ok = code >= 200 && code < 300
        switch e {
        case .greeting:
            guard code == 220 else {
                return giveUp(code, out)
            }
            writeEHLO(out)
        case .ehlo:
            if ok {
                capabilities = ServerCapabilities()
                capabilities.extended = true
                for l in ehloLines.dropFirst() { capabilities.parse(keyword: l) }
                ehloLines.removeAll()
                if !isTLS, configuration.startTLS || (configuration.opportunisticTLS && capabilities.startTLS) {
                    guard capabilities.startTLS else {
                        quit(into: out)
                        return .failed(code: 0, text: "STARTTLS not offered")
                    }
                    out.append("STARTTLS\r\n" as StaticString)
                    expect(.startTLS)
                    return nil
                }
                return afterEHLO(into: out)
            }
            ehloLines.removeAll()
            failureText.removeAll()
            if code == 421 { return .closed(code: code) }
            out.append("HELO " as StaticString)
            out.append(configuration.heloName)
            out.append("\r\n" as StaticString)
            expect(.helo)
        case .authLoginUser, .authLoginPassword:
            guard code == 334, let auth = configuration.auth else {
                return giveUp(code, out)
            }
            out.append(Base64.encode(Array((e == .authLoginUser ? auth.user : auth.password).utf8)))
            out.append("\r\n" as StaticString)
            expect(e == .authLoginUser ? .authLoginPassword : .auth)
        case .auth:
            guard code == 235 else {
                return giveUp(code, out)
            }
            isReady = true
            return .ready
        case .startTLS:
            guard code == 220 else {
                let t = failureString()
                failureText.removeAll()
                if !configuration.startTLS {
                    // Opportunistic: the session goes on in clear, on what the first EHLO said
                    // (unless the server is closing it).
                    if code == 421 { return .closed(code: code) }
                    tlsRefused = true
                    return afterEHLO(into: out)
                }
                quit(into: out)
                return .failed(code: code, text: t.isEmpty ? "STARTTLS refused" : t)
            }
            return .startTLS
        case .helo:
            if configuration.startTLS {
                // HELO means no ESMTP, so no STARTTLS.
                quit(into: out)
                return .failed(code: 0, text: "STARTTLS not offered")
            }
            guard ok else {
                let t = failureString()
                failureText.removeAll()
                return .failed(code: code, text: t)
            }
            capabilities = ServerCapabilities()
            isReady = true
            return .ready
        case .mail:
            recipientCodes.removeAll(keepingCapacity: true)
            recipientTexts.removeAll(keepingCapacity: true)
            acceptedRecipients = 0
            earlyResult = nil
            if code == 421 { return .closed(code: code) }
            if !ok {
                earlyResult = TransactionResult(code: code, status: status, text: failureString(), recipientCodes: [])
                earlyResult!.senderRefused = true
                failureText.removeAll(keepingCapacity: true)
                if let t = stepwise {
                    // Not pipelined: nothing else was sent for this transaction.
                    stepwise = nil
                    earlyResult!.recipientCodes = Array(repeating: 503, count: t.recipients.count)
                    return .transactionDone(takeEarly())
                }
                return nil
            }
            if let t = stepwise { writeRcpt(t, 0, out) }
        case .rcpt(let index):
            recipientCodes.append(code)
            if ok {
                acceptedRecipients += 1
                recipientTexts.append("")
            } else {
                recipientTexts.append(failureText.joined(separator: " "))
                failureText.removeAll(keepingCapacity: true)
            }
            if code == 421 { return .closed(code: code) }
            if let t = stepwise {
                if index + 1 < t.recipients.count {
                    writeRcpt(t, index + 1, out)
                } else {
                    stepwise = nil
                    if acceptedRecipients == 0 {
                        return .transactionDone(TransactionResult(code: code, status: status, text: "no recipient accepted", recipientCodes: recipientCodes))
                    }
                    if usesChunking {
                        writeBDATHeader(t.bodyLength, out)
                        return .sendBody
                    }
                    out.append("DATA\r\n" as StaticString)
                    expect(.data)
                }
            }
        case .data:
            if code == 354 {
                if acceptedRecipients == 0 || earlyResult != nil {
                    // RFC 2920 §3.1: DATA succeeded although nothing else did; end it empty.
                    out.append(".\r\n" as StaticString)
                    expect(.dataEnd)
                    if earlyResult == nil {
                        earlyResult = TransactionResult(code: 554, status: nil, text: "no recipient accepted", recipientCodes: recipientCodes)
                    }
                    return nil
                }
                return .sendBody
            }
            if code == 421 { return .closed(code: code) }
            let result = earlyResult ?? TransactionResult(code: code, status: status, text: failureString(), recipientCodes: recipientCodes)
            earlyResult = nil
            return .transactionDone(result)
        case .dataEnd, .bdatLast:
            if code == 421 && earlyResult == nil { return .closed(code: code) }
            if earlyResult != nil { return .transactionDone(takeEarly()) }
            return .transactionDone(
                TransactionResult(code: code, status: status, text: ok ? "" : failureString(), recipientCodes: recipientCodes))
        case .rset:
            guard ok else {
                // The server cannot be brought back to a clean state: the session is over.
                afterReset = nil
                return giveUp(code, out)
            }
            if let t = afterReset {
                afterReset = nil
                stepwise = t
                writeMail(t, out)
            }
        case .quit:
            return .closed(code: code)
        }
        return nil
    }

    mutating func takeEarly() -> TransactionResult {
        var r = earlyResult!
        earlyResult = nil
        if r.recipientCodes.isEmpty { r.recipientCodes = recipientCodes }
        return r
    }
}

/// Dot-stuffing for DATA (RFC 5321 §4.5.2), used when preparing a body to send.
public enum DotStuffing {
    /// Returns `body` with a dot doubled at every line start, ending in CRLF.
    public static func stuff(_ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count + body.count / 64 + 2)
        var lineStart = true
        for c in body {
            if lineStart, c == UInt8(ascii: ".") { out.append(c) }
            out.append(c)
            lineStart = c == LF
        }
        if !(out.count >= 2 && out[out.count - 2] == CR && out[out.count - 1] == LF) {
            out.append(CR)
            out.append(LF)
        }
        return out
    }
}
