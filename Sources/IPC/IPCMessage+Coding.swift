// The wire form of `IPCMessage`, version 2 (docs/architecture.md has the table):
//
//   frame   = length:u32 type:u8 payload      (length counts type and payload: 1 … 256 KiB)
//   integers big-endian; data and strings = length:u32 bytes; lists = count:u16 items
//
// Decoding checks every field: lengths against what is left and `IPCLimits`, strings as UTF-8
// without NUL, tags and codes against their ranges, and that nothing follows the last field.
import Config
import SMTP

extension IPCMessage {
    enum Tag: UInt8 {
        case hello = 1
        case shutdown = 2
        case reload = 3
        case authCheck = 10
        case authAnswer = 11
        case resolveRecipient = 12
        case resolved = 13
        case senderCheck = 14
        case senderAnswer = 15
        case messageBegin = 20
        case messageChunk = 21
        case messageEnd = 22
        case messageAbort = 23
        case messageStored = 24
        case messageRefused = 25
        case mailCheck = 26
        case mailAnswer = 27
        case spoolState = 28
        case deliver = 30
        case delivered = 31
        case tlsReached = 32
        case mtaSTSPolicy = 33
        case courierDraining = 34
    }

    var tag: Tag {
        switch self {
        case .hello: return .hello
        case .shutdown: return .shutdown
        case .reload: return .reload
        case .authCheck: return .authCheck
        case .authAnswer: return .authAnswer
        case .resolveRecipient: return .resolveRecipient
        case .resolved: return .resolved
        case .senderCheck: return .senderCheck
        case .senderAnswer: return .senderAnswer
        case .messageBegin: return .messageBegin
        case .messageChunk: return .messageChunk
        case .messageEnd: return .messageEnd
        case .messageAbort: return .messageAbort
        case .messageStored: return .messageStored
        case .messageRefused: return .messageRefused
        case .mailCheck: return .mailCheck
        case .mailAnswer: return .mailAnswer
        case .spoolState: return .spoolState
        case .deliver: return .deliver
        case .delivered: return .delivered
        case .tlsReached: return .tlsReached
        case .mtaSTSPolicy: return .mtaSTSPolicy
        case .courierDraining: return .courierDraining
        }
    }

    /// The whole frame, length prefix included.
    public func encoded() -> [UInt8] {
        var w = FrameWriter(type: tag.rawValue, capacity: { if case .messageChunk(_, let b) = self { return b.count + 8 } else { return 64 } }())
        switch self {
        case .hello(let version, let role):
            w.u16(version)
            w.u8(role.rawValue)
        case .shutdown(let grace):
            w.u32(grace)
        case .reload(let text):
            w.string(text)
        case .authCheck(let r, let user, let password, let client):
            w.u32(r)
            w.string(user)
            w.data(password)
            w.string(client)
        case .authAnswer(let r, let a, let token):
            w.u32(r)
            w.u8(a.rawValue)
            w.data(token)
        case .resolveRecipient(let r, let rcpt):
            w.u32(r)
            w.string(rcpt)
        case .resolved(let r, let resolution):
            w.u32(r)
            Self.write(resolution, &w)
        case .senderCheck(let r, let user, let sender):
            w.u32(r)
            w.string(user)
            w.string(sender)
        case .senderAnswer(let r, let allowed):
            w.u32(r)
            w.bool(allowed)
        case .messageBegin(let t, let e):
            w.u32(t)
            w.string(e.sender)
            w.u8(e.body.rawValue)
            w.bool(e.smtpUTF8)
            w.string(e.envelopeID)
            w.u8(e.ret)
            w.string(e.client)
            w.string(e.user)
            w.data(e.userToken)
            w.count(e.recipients.count)
            for r in e.recipients {
                w.string(r.address)
                w.u8(r.notify)
                w.string(r.originalRecipient)
                w.count(r.destinations.count)
                for d in r.destinations { Self.write(d, &w) }
            }
        case .messageChunk(let t, let bytes):
            w.u32(t)
            w.data(bytes)
        case .messageEnd(let t, let trace, let received, let sign, let deadline):
            w.u32(t)
            w.data(trace)
            w.data(received)
            w.bool(sign)
            w.u64(deadline)
        case .mailCheck(let r, let sender, let size, let tls):
            w.u32(r)
            w.string(sender)
            w.u64(size)
            w.u8(tls)
        case .mailAnswer(let r, let reply):
            w.u32(r)
            w.bool(reply != nil)
            if let reply { Self.write(reply, &w) }
        case .messageAbort(let t):
            w.u32(t)
        case .messageStored(let t, let id):
            w.u32(t)
            w.u64(id)
        case .messageRefused(let t, let reply):
            w.u32(t)
            Self.write(reply, &w)
        case .spoolState(let refusal, let reason, let room):
            w.bool(refusal != nil)
            if let refusal { Self.write(refusal, &w) }
            w.string(reason)
            w.u64(room)
        case .deliver(let j, let o):
            w.u32(j)
            w.u64(o.id)
            w.string(o.domain)
            w.string(o.sender)
            w.count(o.recipients.count)
            for (k, r) in o.recipients.enumerated() {
                w.string(r)
                w.u8(k < o.notify.count ? o.notify[k] : 0)
                w.string(k < o.originalRecipients.count ? o.originalRecipients[k] : "")
            }
            w.string(o.envelopeID)
            w.u8(o.ret)
            w.u8(o.body.rawValue)
            w.bool(o.smtpUTF8)
            w.u64(o.size)
            w.string(o.historyKey)
            w.u8(o.tlsFloor)
        case .delivered(let j, let outcomes):
            w.u32(j)
            w.count(outcomes.count)
            for o in outcomes {
                w.u8(o.kind.rawValue)
                w.string(o.status)
                w.string(o.text)
                w.bool(o.withoutDSN)
            }
        case .tlsReached(let domain, let level):
            w.string(domain)
            w.u8(level)
        case .mtaSTSPolicy(let domain, let id, let fetched, let text):
            w.string(domain)
            w.string(id)
            w.i64(fetched)
            w.data(text)
        case .courierDraining:
            break
        }
        return w.finish()
    }

    /// Decodes one frame's type and payload (the length prefix already taken off).
    public static func decode(type: UInt8, payload: UnsafeRawBufferPointer) throws(IPCError) -> IPCMessage {
        guard let tag = Tag(rawValue: type) else { throw .unknownType(type) }
        var r = FrameReader(payload)
        let m: IPCMessage
        switch tag {
        case .hello:
            let version = try r.u16("version")
            let raw = try r.u8("role")
            guard let role = IPCRole(rawValue: raw) else { throw .badValue(field: "role", value: UInt64(raw)) }
            m = .hello(version: version, role: role)
        case .shutdown:
            m = .shutdown(grace: try r.u32("grace"))
        case .reload:
            m = .reload(configuration: try r.string("configuration", limit: IPCLimits.frame))
        case .authCheck:
            let req = try r.u32("request")
            let user = try r.string("user", limit: IPCLimits.name)
            let password = try r.data("password", limit: IPCLimits.password)
            m = .authCheck(request: req, user: user, password: password, client: try r.string("client", limit: IPCLimits.name))
        case .authAnswer:
            let req = try r.u32("request")
            let raw = try r.u8("answer")
            guard let a = AuthAnswer(rawValue: raw) else { throw .badValue(field: "answer", value: UInt64(raw)) }
            let token = try r.data("token", limit: IPCLimits.name)
            m = .authAnswer(request: req, a, token: token)
        case .resolveRecipient:
            let req = try r.u32("request")
            m = .resolveRecipient(request: req, recipient: try r.string("recipient", limit: IPCLimits.name))
        case .resolved:
            let req = try r.u32("request")
            m = .resolved(request: req, try readResolution(&r))
        case .senderCheck:
            let req = try r.u32("request")
            let user = try r.string("user", limit: IPCLimits.name)
            m = .senderCheck(request: req, user: user, sender: try r.string("sender", limit: IPCLimits.name))
        case .senderAnswer:
            let req = try r.u32("request")
            m = .senderAnswer(request: req, allowed: try r.bool("allowed"))
        case .messageBegin:
            let t = try r.u32("transaction")
            let sender = try r.string("sender", limit: IPCLimits.name)
            let rawBody = try r.u8("body")
            guard let body = BodyKind(rawValue: rawBody) else { throw .badValue(field: "body", value: UInt64(rawBody)) }
            let utf8 = try r.bool("smtputf8")
            let envid = try r.string("envid", limit: IPCLimits.name)
            let ret = try r.u8("ret")
            guard ret <= 2 else { throw .badValue(field: "ret", value: UInt64(ret)) }
            let client = try r.string("client", limit: IPCLimits.name)
            let user = try r.string("user", limit: IPCLimits.name)
            let userToken = try r.data("user token", limit: IPCLimits.name)
            let n = try r.count("recipients")
            guard n > 0 else { throw .badValue(field: "recipients", value: 0) }
            var rcpts: [IPCRecipient] = []
            rcpts.reserveCapacity(n)
            for _ in 0..<n {
                let address = try r.string("recipient", limit: IPCLimits.name)
                let notify = try r.u8("notify")
                guard notify <= 0x0f else { throw .badValue(field: "notify", value: UInt64(notify)) }
                let orcpt = try r.string("orcpt", limit: IPCLimits.name)
                let k = try r.count("destinations")
                guard k > 0 else { throw .badValue(field: "destinations", value: 0) }
                var dests: [Destination] = []
                for _ in 0..<k { dests.append(try readDestination(&r)) }
                rcpts.append(IPCRecipient(address: address, notify: notify, originalRecipient: orcpt, destinations: dests))
            }
            m = .messageBegin(transaction: t, IPCEnvelope(sender: sender, body: body, smtpUTF8: utf8, envelopeID: envid, ret: ret, client: client, user: user, userToken: userToken, recipients: rcpts))
        case .messageChunk:
            let t = try r.u32("transaction")
            m = .messageChunk(transaction: t, bytes: try r.data("chunk", limit: IPCLimits.chunk))
        case .messageEnd:
            let t = try r.u32("transaction")
            let trace = try r.data("trace", limit: IPCLimits.text)
            let received = try r.data("received", limit: IPCLimits.text)
            let sign = try r.bool("sign")
            m = .messageEnd(transaction: t, trace: trace, received: received, sign: sign, deadline: try r.u64("deadline"))
        case .mailCheck:
            let req = try r.u32("request")
            let sender = try r.string("sender", limit: IPCLimits.name)
            let size = try r.u64("size")
            let tls = try r.u8("tls")
            guard tls <= 2 else { throw .badValue(field: "tls", value: UInt64(tls)) }
            m = .mailCheck(request: req, sender: sender, size: size, tls: tls)
        case .mailAnswer:
            let req = try r.u32("request")
            m = .mailAnswer(request: req, try r.bool("refused") ? try readReply(&r) : nil)
        case .messageAbort:
            m = .messageAbort(transaction: try r.u32("transaction"))
        case .messageStored:
            let t = try r.u32("transaction")
            m = .messageStored(transaction: t, queueID: try r.u64("queue id"))
        case .messageRefused:
            let t = try r.u32("transaction")
            m = .messageRefused(transaction: t, try readReply(&r))
        case .spoolState:
            let refusal = try r.bool("refused") ? try readReply(&r) : nil
            let reason = try r.string("reason", limit: IPCLimits.name)
            m = .spoolState(refusal: refusal, reason: reason, room: try r.u64("room"))
        case .deliver:
            let j = try r.u32("job")
            let id = try r.u64("queue id")
            let domain = try r.string("domain", limit: IPCLimits.name)
            let sender = try r.string("sender", limit: IPCLimits.name)
            let n = try r.count("recipients")
            guard n > 0, !domain.isEmpty else { throw .badValue(field: n > 0 ? "domain" : "recipients", value: 0) }
            var rcpts: [String] = [], notify: [UInt8] = [], orcpts: [String] = []
            rcpts.reserveCapacity(n)
            for _ in 0..<n {
                rcpts.append(try r.string("recipient", limit: IPCLimits.name))
                let bits = try r.u8("notify")
                guard bits <= 0x0f else { throw .badValue(field: "notify", value: UInt64(bits)) }
                notify.append(bits)
                orcpts.append(try r.string("orcpt", limit: IPCLimits.name))
            }
            let envid = try r.string("envid", limit: IPCLimits.name)
            let ret = try r.u8("ret")
            guard ret <= 2 else { throw .badValue(field: "ret", value: UInt64(ret)) }
            let rawBody = try r.u8("body")
            guard let body = BodyKind(rawValue: rawBody) else { throw .badValue(field: "body", value: UInt64(rawBody)) }
            let utf8 = try r.bool("smtputf8")
            let size = try r.u64("size")
            let key = try r.string("history key", limit: IPCLimits.name)
            let floor = try r.u8("tls floor")
            guard floor <= 2 else { throw .badValue(field: "tls floor", value: UInt64(floor)) }
            m = .deliver(job: j, IPCOutbound(id: id, domain: domain, sender: sender, recipients: rcpts, notify: notify, originalRecipients: orcpts, envelopeID: envid, ret: ret, body: body, smtpUTF8: utf8, size: size, historyKey: key, tlsFloor: floor))
        case .delivered:
            let j = try r.u32("job")
            let n = try r.count("outcomes")
            guard n > 0 else { throw .badValue(field: "outcomes", value: 0) }
            var outcomes: [IPCOutcome] = []
            outcomes.reserveCapacity(n)
            for _ in 0..<n {
                let raw = try r.u8("outcome")
                guard let kind = IPCOutcome.Kind(rawValue: raw) else { throw .badValue(field: "outcome", value: UInt64(raw)) }
                let status = try r.string("status", limit: 16)
                // An attempt's status is an enhanced code of its own class ("4.4.1" for a
                // temporary failure): the queue records it, and a bounce says it.
                if kind != .notAttempted {
                    let klass: UInt8 = kind == .delivered ? 2 : kind == .temporary ? 4 : 5
                    guard Self.isEnhancedStatus(status, klass: klass) else { throw .badText(field: "status") }
                }
                let text = try r.string("outcome text", limit: IPCLimits.text)
                guard !text.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { throw .badText(field: "outcome text") }
                outcomes.append(IPCOutcome(kind, status: status, text: text, withoutDSN: try r.bool("without dsn")))
            }
            m = .delivered(job: j, outcomes: outcomes)
        case .tlsReached:
            let domain = try r.string("domain", limit: IPCLimits.name)
            let level = try r.u8("level")
            guard level <= 2 else { throw .badValue(field: "level", value: UInt64(level)) }
            m = .tlsReached(domain: domain, level: level)
        case .mtaSTSPolicy:
            let domain = try r.string("domain", limit: IPCLimits.name)
            let id = try r.string("policy id", limit: 32)
            let fetched = try r.i64("fetched")
            // RFC 8461 §3.2: a policy is at most 64 KiB.
            m = .mtaSTSPolicy(domain: domain, id: id, fetched: fetched, text: try r.data("policy", limit: 64 * 1024))
        case .courierDraining:
            m = .courierDraining
        }
        try r.end()
        return m
    }

    // MARK: Parts

    /// "C.S.D" with C the class, S and D at most three digits each.
    public static func isEnhancedStatus(_ s: String, klass: UInt8) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "\(klass)" else { return false }
        return parts.dropFirst().allSatisfy { p in (1...3).contains(p.count) && p.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } }
    }

    static func write(_ d: Destination, _ w: inout FrameWriter) {
        switch d {
        case .mailbox(let user, let domain):
            w.u8(1)
            w.string(user)
            w.string(domain.ascii)
        case .remote(let address):
            w.u8(2)
            w.string(address)
        case .pipe(let argv):
            w.u8(3)
            w.count(argv.count)
            for a in argv { w.string(a) }
        }
    }

    static func readDestination(_ r: inout FrameReader) throws(IPCError) -> Destination {
        let tag = try r.u8("destination")
        switch tag {
        case 1:
            let user = try r.string("mailbox user", limit: IPCLimits.name)
            let name = try r.string("mailbox domain", limit: IPCLimits.name)
            guard !user.isEmpty, let domain = try? Domain(name) else { throw .badValue(field: "mailbox", value: 0) }
            return .mailbox(user: user, domain: domain)
        case 2:
            return .remote(try r.string("remote address", limit: IPCLimits.name))
        case 3:
            let n = try r.count("argv")
            guard n > 0 else { throw .badValue(field: "argv", value: 0) }
            var argv: [String] = []
            for _ in 0..<n { argv.append(try r.string("argument", limit: IPCLimits.text)) }
            return .pipe(argv)
        default:
            throw .badValue(field: "destination", value: UInt64(tag))
        }
    }

    static func write(_ res: Resolution, _ w: inout FrameWriter) {
        switch res {
        case .deliver(let dests):
            w.u8(1)
            w.count(dests.count)
            for d in dests { write(d, &w) }
        case .unknownUser: w.u8(2)
        case .notLocal: w.u8(3)
        case .refused(let why):
            w.u8(4)
            w.string(why)
        case .aliasLoop: w.u8(5)
        }
    }

    static func readResolution(_ r: inout FrameReader) throws(IPCError) -> Resolution {
        let tag = try r.u8("resolution")
        switch tag {
        case 1:
            let n = try r.count("destinations")
            guard n > 0 else { throw .badValue(field: "destinations", value: 0) }
            var dests: [Destination] = []
            for _ in 0..<n { dests.append(try readDestination(&r)) }
            return .deliver(dests)
        case 2: return .unknownUser
        case 3: return .notLocal
        case 4: return .refused(try r.string("reason", limit: IPCLimits.text))
        case 5: return .aliasLoop
        default: throw .badValue(field: "resolution", value: UInt64(tag))
        }
    }

    static func write(_ reply: Reply, _ w: inout FrameWriter) {
        w.u16(UInt16(reply.code))
        w.bool(reply.status != nil)
        if let s = reply.status {
            w.u8(s.klass)
            w.u16(s.subject)
            w.u16(s.detail)
        }
        w.count(reply.lines.count)
        for l in reply.lines { w.string(l) }
    }

    /// A reply the queue or lookup may send back to a client: 2xx to 5xx, its enhanced status of
    /// the same class, at most 100 lines.
    static func readReply(_ r: inout FrameReader) throws(IPCError) -> Reply {
        let code = try r.u16("reply code")
        guard (200...599).contains(code) else { throw .badValue(field: "reply code", value: UInt64(code)) }
        var status: EnhancedStatus? = nil
        if try r.bool("reply status") {
            let k = try r.u8("status class")
            let s = try r.u16("status subject")
            let d = try r.u16("status detail")
            guard UInt16(k) == code / 100, s <= 999, d <= 999 else { throw .badValue(field: "enhanced status", value: UInt64(k)) }
            status = EnhancedStatus(k, s, d)
        }
        let n = try r.count("reply lines", limit: 100)
        guard n > 0 else { throw .badValue(field: "reply lines", value: 0) }
        var lines: [String] = []
        for _ in 0..<n {
            let l = try r.string("reply line", limit: 512)
            guard !l.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { throw .badText(field: "reply line") }
            lines.append(l)
        }
        return Reply(Int(code), status, lines: lines)
    }
}
