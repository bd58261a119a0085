import SMTP
import Testing

/// Connects a client state machine to a server state machine through memory, one "turn" at a time
/// (all bytes one side wrote are delivered before the other side runs), optionally in pieces.
struct Loopback {
    var client: ClientStateMachine
    var server: ServerStateMachine
    let cOut = OutputBuffer()
    let sOut = OutputBuffer()
    var toClient: [UInt8] = []
    var toServer: [UInt8] = []
    var clientEvents: [ClientEvent] = []
    var serverClosed: Bool { server.isClosed }
    var piece = Int.max
    let raw: [UInt8]

    init(client: ClientConfiguration, server: ServerConfiguration, body: [UInt8]) {
        var s = server
        s.policyEvents = true
        self.client = ClientStateMachine(configuration: client)
        self.server = ServerStateMachine(context: ServerContext(s))
        raw = body
        self.server.start(into: sOut)
        toClient = Array(sOut.bytes)
        sOut.clear()
    }

    var serverPending: [UInt8] = []
    /// Everything the client wrote, in order.
    var sent: [UInt8] = []

    /// What the in-memory server does with its events.
    final class ServerSide: ServerEventHandler {
        var messages: [[UInt8]] = []
        var current: [UInt8] = []
        var finalReply: (Envelope) -> Reply = { _ in .messageAccepted }
        var rcptPolicy: (String) -> Reply? = { _ in nil }
        var senderPolicy: () -> Reply? = { nil }
        func messageStart() { current = [] }
        func messageBody(_ bytes: UnsafeRawBufferPointer) { current += bytes }
        /// MAIL commands the policy was asked about.
        var transactions = 0
        func checkSender(_ session: ServerStateMachine) -> Reply? {
            transactions += 1
            return senderPolicy()
        }
        func checkRecipient(_ session: ServerStateMachine) -> Reply? {
            rcptPolicy(session.envelope.recipient(session.envelope.recipientCount - 1))
        }
        func messageComplete(_ session: ServerStateMachine) -> Reply? {
            messages.append(current)
            return finalReply(session.envelope)
        }
    }
    let serverSide = ServerSide()
    var messages: [[UInt8]] { serverSide.messages }

    /// Delivers what the client wrote to the server in pieces of `piece` bytes, as the reactor would.
    mutating func runServer() {
        guard !server.isClosed else { toServer = []; return }
        let input = toServer
        toServer = []
        sent += input
        var offset = 0
        while offset < input.count, !server.isClosed {
            let end = min(input.count, offset + piece)
            serverPending += input[offset..<end]
            offset = end
            let consumed = serverPending.withUnsafeBytes { server.consume($0, into: sOut, handler: serverSide) }
            serverPending.removeFirst(consumed)
        }
        toClient += Array(sOut.bytes)
        sOut.clear()
    }

    /// Runs the client over what the server sent; `onEvent` may begin transactions.
    mutating func runClient(_ onEvent: (inout Loopback, ClientEvent) -> Void) {
        var input = toClient
        toClient = []
        var k = 0
        while true {
            let (n, e) = input.withUnsafeBytes { client.process(UnsafeRawBufferPointer(rebasing: $0[k...]), into: cOut) }
            k += n
            if e == .needInput { break }
            clientEvents.append(e)
            onEvent(&self, e)
            if case .closed = e { break }
            if case .failed = e { break }
        }
        if k < input.count { input = Array(input[k...]); toClient = input + toClient }
        toServer += Array(cOut.bytes)
        cOut.clear()
    }

    mutating func run(_ onEvent: (inout Loopback, ClientEvent) -> Void) {
        for _ in 0..<10_000 {
            runClient(onEvent)
            if toServer.isEmpty && toClient.isEmpty { return }
            runServer()
            if serverClosed && toClient.isEmpty { runClient(onEvent); return }
        }
        Issue.record("loopback did not settle")
    }
}

let sampleBody = Array("Subject: test\r\n\r\n.leading dot\r\nbody\r\n".utf8)

/// Sends `count` messages through a loopback and QUITs; returns the loopback.
func sendMessages(
    _ count: Int, client: ClientConfiguration, server: ServerConfiguration = ServerConfiguration(),
    recipients: [String] = ["rcpt@example.test"], piece: Int = .max,
    configure: (inout Loopback) -> Void = { _ in }
) -> Loopback {
    var lb = Loopback(client: client, server: server, body: sampleBody)
    lb.piece = piece
    configure(&lb)
    let tx = ClientTransaction(sender: "sender@example.org", recipients: recipients, bodyLength: sampleBody.count)
    let stuffed = DotStuffing.stuff(sampleBody)
    var begun = 0
    var done = 0
    func beginNext(_ lb: inout Loopback) {
        guard begun < count else {
            if done == count { lb.client.quit(into: lb.cOut) }
            return
        }
        begun += 1
        if lb.client.begin(tx, into: lb.cOut) {
            lb.raw.withUnsafeBytes { lb.client.writeChunkBody($0, into: lb.cOut) }
        }
    }
    lb.run { lb, e in
        switch e {
        case .ready: beginNext(&lb)
        case .sendBody:
            if lb.client.usesChunking {
                lb.raw.withUnsafeBytes { lb.client.writeChunkBody($0, into: lb.cOut) }
            } else {
                stuffed.withUnsafeBytes { lb.client.writeDataBody($0, into: lb.cOut) }
            }
        case .transactionDone:
            done += 1
            beginNext(&lb)
        default: break
        }
    }
    return lb
}

func results(_ lb: Loopback) -> [TransactionResult] {
    lb.clientEvents.compactMap { if case .transactionDone(let r) = $0 { return r } else { return nil } }
}

@Suite("Client state machine against the server state machine")
struct ClientTests {
    @Test(
        "messages arrive intact with every mode",
        arguments: [
            (true, false), (false, false), (true, true), (false, true),
        ])
    func modes(pipelining: Bool, chunking: Bool) {
        for piece in [Int.max, 7, 1] {
            let lb = sendMessages(3, client: ClientConfiguration(allowPipelining: pipelining, allowChunking: chunking), piece: piece)
            #expect(lb.messages == Array(repeating: sampleBody, count: 3), "pipelining \(pipelining) chunking \(chunking) piece \(piece)")
            #expect(results(lb).map(\.code) == [250, 250, 250])
            #expect(lb.clientEvents.last == .closed(code: 221))
            #expect(lb.client.capabilities.pipelining && lb.client.capabilities.chunking && lb.client.capabilities.smtpUTF8)
        }
    }

    @Test("per-recipient codes; a transaction with no accepted recipient fails without a body")
    func recipients() {
        let lb = sendMessages(1, client: ClientConfiguration(), recipients: ["a@x.test", "bad@x.test", "c@x.test"]) { lb in
            lb.serverSide.rcptPolicy = { $0.hasPrefix("bad") ? Reply(550, EnhancedStatus(5, 1, 1), "No such user") : nil }
        }
        #expect(results(lb).first?.recipientCodes == [250, 550, 250])
        #expect(results(lb).first?.recipientTexts == ["", "5.1.1 No such user", ""])
        #expect(results(lb).first?.senderRefused == false)
        #expect(results(lb).first?.accepted == true)
        for pipelining in [true, false] {
            let none = sendMessages(1, client: ClientConfiguration(allowPipelining: pipelining), recipients: ["bad@x.test"]) { lb in
                lb.serverSide.rcptPolicy = { _ in Reply(550, EnhancedStatus(5, 1, 1), "No such user") }
            }
            #expect(none.messages.isEmpty)
            #expect(results(none).first?.accepted == false)
            #expect(results(none).first?.recipientCodes == [550])
        }
    }

    @Test(
        "a transaction that did not end with its data's final reply is followed by RSET: the next message is delivered, not refused as nested",
        arguments: [(true, false), (false, false), (true, true), (false, true)])
    func resetAfterRefusal(pipelining: Bool, chunking: Bool) {
        // The first transaction is refused (every recipient for good, every recipient for now,
        // the sender); the message after it must be delivered.
        let refusals: [(String, Reply, Bool)] = [
            ("550 at RCPT", Reply(550, EnhancedStatus(5, 1, 1), "No such user"), false),
            ("451 at RCPT", Reply(451, EnhancedStatus(4, 7, 1), "Greylisted"), false),
            ("451 at MAIL", Reply(451, EnhancedStatus(4, 3, 0), "Try later"), true),
        ]
        for (what, reply, atMail) in refusals {
            for piece in [Int.max, 1] {
                let lb = sendMessages(2, client: ClientConfiguration(allowPipelining: pipelining, allowChunking: chunking), piece: piece) { lb in
                    let side = lb.serverSide
                    if atMail {
                        side.senderPolicy = { side.transactions == 1 ? reply : nil }
                    } else {
                        side.rcptPolicy = { _ in side.transactions == 1 ? reply : nil }
                    }
                }
                let r = results(lb)
                let mode = "\(what), pipelining \(pipelining) chunking \(chunking) piece \(piece)"
                #expect(r.count == 2 && r.first?.accepted == false && r.last?.code == 250, "\(mode): \(r)")
                #expect(atMail ? r.first?.code == reply.code : r.first?.recipientCodes == [reply.code], "\(mode): \(r)")
                #expect(lb.messages == [sampleBody], "\(mode)")
                #expect(String(decoding: lb.sent, as: UTF8.self).components(separatedBy: "RSET\r\n").count == 2, "one RSET, \(mode)")
                #expect(!lb.client.needsReset)
            }
        }
        // After a message delivered or refused at the end of its DATA, no RSET; after a refused
        // BDAT LAST one (RFC 3030 §4.2 leaves the transaction's fate to the server).
        let plain = sendMessages(3, client: ClientConfiguration(allowPipelining: pipelining, allowChunking: chunking)) { lb in
            let side = lb.serverSide
            side.finalReply = { _ in side.messages.count == 1 ? Reply(554, EnhancedStatus(5, 7, 1), "Spam") : .messageAccepted }
        }
        #expect(String(decoding: plain.sent, as: UTF8.self).components(separatedBy: "RSET\r\n").count == (chunking ? 2 : 1))
        #expect(results(plain).map(\.code) == [554, 250, 250])
    }

    @Test("without pipelining MAIL waits for RSET's reply; a refused RSET ends the session")
    func refusedReset() {
        let out = OutputBuffer()
        var c = ClientStateMachine(configuration: ClientConfiguration(allowPipelining: false))
        func feed(_ s: String) -> ClientEvent {
            let bytes = Array(s.utf8)
            return bytes.withUnsafeBytes { c.process($0, into: out).event }
        }
        func written() -> String {
            defer { out.clear() }
            return String(decoding: out.bytes, as: UTF8.self)
        }
        let e1 = feed("220 mx.test ESMTP\r\n")
        #expect(e1 == .needInput)
        let e2 = feed("250-mx.test\r\n250 PIPELINING\r\n")
        #expect(e2 == .ready)
        _ = written()
        let tx = ClientTransaction(sender: "a@x.test", recipients: ["b@x.test"], bodyLength: 10)
        let b1 = c.begin(tx, into: out)
        #expect(!b1)
        let w1 = written()
        #expect(w1 == "MAIL FROM:<a@x.test>\r\n")
        guard case .transactionDone(let r) = feed("550 5.7.1 Go away\r\n") else {
            Issue.record("no result")
            return
        }
        #expect(r.senderRefused && r.code == 550)
        #expect(c.needsReset)
        let b2 = c.begin(tx, into: out)
        #expect(!b2)
        let w2 = written()
        #expect(w2 == "RSET\r\n", "MAIL waits for the reply to RSET")
        let e3 = feed("250 2.0.0 Ok\r\n")
        #expect(e3 == .needInput)
        let w3 = written()
        #expect(w3 == "MAIL FROM:<a@x.test>\r\n")
        guard case .transactionDone = feed("550 5.7.1 Go away\r\n") else {
            Issue.record("no result")
            return
        }
        let b3 = c.begin(tx, into: out)
        #expect(!b3)
        let w4 = written()
        #expect(w4 == "RSET\r\n")
        guard case .failed(let code, _) = feed("502 5.5.1 RSET not implemented\r\n") else {
            Issue.record("a refused RSET must end the session")
            return
        }
        #expect(code == 502)
        let w5 = written()
        #expect(w5 == "QUIT\r\n")
    }

    @Test("the final reply and its enhanced status reach the result")
    func finalReply() {
        let lb = sendMessages(2, client: ClientConfiguration()) { lb in
            lb.serverSide.finalReply = { _ in Reply(451, EnhancedStatus(4, 3, 0), "Try later") }
        }
        let r = results(lb)
        #expect(r.map(\.code) == [451, 451])
        #expect(r.first?.status == EnhancedStatus(4, 3, 0))
        #expect(r.first?.text == "Try later")
    }

    @Test("SIZE is declared when offered, and a refusal at MAIL ends the transaction")
    func sizeRefused() {
        for pipelining in [true, false] {
            let lb = sendMessages(1, client: ClientConfiguration(allowPipelining: pipelining), server: ServerConfiguration(maxMessageSize: 10))
            #expect(lb.messages.isEmpty)
            #expect(results(lb).first?.code == 552)
            #expect(lb.clientEvents.last == .closed(code: 221))
        }
    }

    @Test("a refused greeting and EHLO fallback to HELO")
    func greetingAndHelo() {
        var c = ClientStateMachine(configuration: ClientConfiguration(heloName: "me.test"))
        let out = OutputBuffer()
        let refuse = Array("554 5.7.1 go away\r\n".utf8)
        let (_, e) = refuse.withUnsafeBytes { c.process($0, into: out) }
        #expect(e == .failed(code: 554, text: "go away"))
        #expect(String(decoding: out.bytes, as: UTF8.self) == "QUIT\r\n")

        var h = ClientStateMachine(configuration: ClientConfiguration(heloName: "me.test"))
        out.clear()
        let replies = Array("220 old.test\r\n502 5.5.1 no EHLO\r\n250 old.test\r\n".utf8)
        var k = 0
        var events: [ClientEvent] = []
        replies.withUnsafeBytes { b in
            while true {
                let (n, e) = h.process(UnsafeRawBufferPointer(rebasing: b[k...]), into: out)
                k += n
                if e == .needInput { break }
                events.append(e)
            }
        }
        #expect(events == [.ready])
        #expect(String(decoding: out.bytes, as: UTF8.self) == "EHLO me.test\r\nHELO me.test\r\n")
        #expect(!h.capabilities.pipelining && !h.capabilities.extended)
    }

    @Test("421 closes; garbage fails")
    func closing() {
        var c = ClientStateMachine(configuration: ClientConfiguration())
        let out = OutputBuffer()
        let r = Array("220 x\r\n421 4.3.2 shutting down\r\n".utf8)
        var k = 0
        var events: [ClientEvent] = []
        r.withUnsafeBytes { b in
            while true {
                let (n, e) = c.process(UnsafeRawBufferPointer(rebasing: b[k...]), into: out)
                k += n
                if e == .needInput { break }
                events.append(e)
                if case .closed = e { break }
            }
        }
        #expect(events == [.closed(code: 421)])
        var g = ClientStateMachine(configuration: ClientConfiguration())
        let junk = Array("HTTP/1.1 400 Bad Request\r\n".utf8)
        let (_, e) = junk.withUnsafeBytes { g.process($0, into: out) }
        #expect(e == .failed(code: 0, text: "malformed reply"))
    }

    @Test("capabilities are parsed from EHLO")
    func capabilities() {
        var c = ClientStateMachine(configuration: ClientConfiguration())
        let out = OutputBuffer()
        let r = Array("220 x\r\n250-x\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 DSN\r\n".utf8)
        var k = 0
        r.withUnsafeBytes { b in
            while true {
                let (n, e) = c.process(UnsafeRawBufferPointer(rebasing: b[k...]), into: out)
                k += n
                if e == .needInput || e == .ready { break }
            }
        }
        #expect(c.capabilities.size == 1000)
        #expect(c.capabilities.startTLS)
        #expect(c.capabilities.auth == ["PLAIN", "LOGIN"])
        #expect(c.capabilities.eightBitMIME && c.capabilities.dsn)
        #expect(!c.capabilities.pipelining)
    }

    @Test("dot-stuffing doubles leading dots and ends with CRLF")
    func stuffing() {
        #expect(DotStuffing.stuff(Array(".a\r\nb\r\n..c".utf8)) == Array("..a\r\nb\r\n...c\r\n".utf8))
    }
}

/// Runs `machine` over one server reply.
func feed(_ m: inout ClientStateMachine, _ reply: String, _ out: OutputBuffer) -> ClientEvent {
    let bytes = Array(reply.utf8)
    return bytes.withUnsafeBytes { m.process($0, into: out).event }
}

@Suite("Client state machine: what the courier needs")
struct ClientCourierTests {
    func ready(pipelining: Bool) -> (ClientStateMachine, OutputBuffer) {
        var m = ClientStateMachine(configuration: ClientConfiguration(heloName: "me.test", allowPipelining: pipelining))
        let out = OutputBuffer()
        _ = feed(&m, "220 mx\r\n", out)
        let e = feed(&m, "250-mx\r\n250-PIPELINING\r\n250 DSN\r\n", out)
        #expect(e == .ready)
        out.clear()
        return (m, out)
    }

    @Test("extra MAIL and RCPT parameters are written as given, pipelined or not")
    func parameters() {
        var t = ClientTransaction(sender: "s@x.test", recipients: ["a@y.test", "b@y.test"], bodyLength: 10)
        t.mailParameters = " RET=HDRS ENVID=abc"
        t.recipientParameters = [" NOTIFY=FAILURE ORCPT=rfc822;a@y.test", ""]
        var (m, out) = ready(pipelining: true)
        _ = m.begin(t, into: out)
        #expect(String(decoding: Array(out.bytes), as: UTF8.self)
            == "MAIL FROM:<s@x.test> RET=HDRS ENVID=abc\r\nRCPT TO:<a@y.test> NOTIFY=FAILURE ORCPT=rfc822;a@y.test\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        var (n, o2) = ready(pipelining: false)
        _ = n.begin(t, into: o2)
        #expect(String(decoding: Array(o2.bytes), as: UTF8.self) == "MAIL FROM:<s@x.test> RET=HDRS ENVID=abc\r\n")
        o2.clear()
        _ = feed(&n, "250 ok\r\n", o2)
        #expect(String(decoding: Array(o2.bytes), as: UTF8.self) == "RCPT TO:<a@y.test> NOTIFY=FAILURE ORCPT=rfc822;a@y.test\r\n")
    }

    @Test("a refused sender is told apart from refused recipients")
    func senderRefused() {
        let t = ClientTransaction(sender: "s@x.test", recipients: ["a@y.test", "b@y.test"], bodyLength: 10)
        var (m, out) = ready(pipelining: true)
        _ = m.begin(t, into: out)
        var events: [ClientEvent] = []
        for r in ["550 5.7.1 sender blocked\r\n", "503 5.5.1 MAIL first\r\n", "503 5.5.1 MAIL first\r\n", "554 5.5.1 no valid recipients\r\n"] {
            events.append(feed(&m, r, out))
        }
        guard case .transactionDone(let r)? = events.last else {
            Issue.record("no result: \(events)")
            return
        }
        #expect(r.senderRefused)
        #expect(r.code == 550)
        #expect(r.text == "sender blocked")
        var (n, o2) = ready(pipelining: true)
        _ = n.begin(t, into: o2)
        var last: ClientEvent = .needInput
        for reply in ["250 ok\r\n", "450 4.2.1 try later\r\n", "550 5.1.1 unknown\r\n", "554 5.5.1 no valid recipients\r\n"] { last = feed(&n, reply, o2) }
        guard case .transactionDone(let q) = last else {
            Issue.record("no result: \(last)")
            return
        }
        #expect(!q.senderRefused)
        #expect(q.recipientCodes == [450, 550])
        #expect(q.recipientTexts == ["4.2.1 try later", "5.1.1 unknown"])
    }
}
