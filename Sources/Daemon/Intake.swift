// The queue side of taking a message, the one place that turns an accepted envelope and a
// streamed body into a spool record and answers once it is durable. The single process
// (MailDelegate) and the queue process (QueueService) both go through it, so the deliveries,
// the end of the Received field, the spool-timeout and the log line cannot differ between them.
import Config
import Glibc
import IPC
import Policy
import Queue
import Reactor
import SMTP
import Spool

/// One recipient as the queue stores it: the address as given, its DSN parameters, and what it
/// resolved to.
struct IntakeRecipient: Sendable {
    var address: String
    var notify: UInt8
    var originalRecipient: String
    var destinations: [Destination]
}

/// A message waiting for the spool's answer (its loop only): the spool-timeout timer, the
/// spool's ticket once accepted, and whether the answer was given.
final class PendingAnswer: @unchecked Sendable {
    var timer: UInt64? = nil
    var ticket: AcceptTicket? = nil
    var answered = false
    var answer: ((Reply) -> Void)? = nil
    let spool: Spool
    let loop: EventLoop

    init(spool: Spool, loop: EventLoop) {
        self.spool = spool
        self.loop = loop
    }

    /// Gives the answer once (loop thread): later answers, the timer's included, are dropped.
    func give(_ reply: Reply) {
        guard !answered else { return }
        answered = true
        if let t = timer { loop.cancel(t) }
        timer = nil
        let a = answer
        answer = nil
        a?(reply)
    }

    /// Nobody waits for the answer any more (the client or the smtp channel went away): the
    /// message is withdrawn when the spool still allows it. Returns false when it was stored
    /// already (it will be delivered: the client got no 250 and may send it again).
    @discardableResult
    func withdraw() -> Bool {
        guard !answered else { return false }
        answered = true
        if let t = timer { loop.cancel(t) }
        timer = nil
        answer = nil
        guard let t = ticket else { return true }
        return spool.abandon(t)
    }
}

enum Intake {
    /// One delivery per destination: recipients that name one mailbox, address or command (the
    /// same RCPT twice, `bob` and `bob+tag`, aliases meeting) make one copy; the first
    /// recipient's DSN parameters are kept.
    static func deliveries(_ recipients: [IntakeRecipient]) -> [SpoolDelivery] {
        var out: [SpoolDelivery] = []
        var seen: Set<String> = []
        for r in recipients {
            for d in r.destinations {
                let delivery = SpoolDelivery(d, recipient: r.address, notify: r.notify, originalRecipient: r.originalRecipient)
                guard seen.insert("\(delivery.kind.rawValue) \(delivery.destination)").inserted else { continue }
                out.append(delivery)
            }
        }
        return out
    }

    /// The start of our Received field (RFC 5321 4.4), up to the `with` clause: "Received: from
    /// HELO ([ADDRESS])\r\n\tby HOST (Tern) with ESMTPS (TLSv1.3 …)". smtp makes it; the queue
    /// ends it (`receivedEnd`).
    static func receivedStart(helo: String, peer: String, hostname: String, extended: Bool, tls: String?, authenticated: Bool, smtpUTF8: Bool) -> String {
        // The client's name goes into a header: printable ASCII only, no comment or clause syntax.
        let name = String(decoding: (helo.isEmpty ? "unknown" : helo).utf8.filter { $0 > 32 && $0 < 127 && $0 != 40 && $0 != 41 && $0 != 59 }, as: UTF8.self)
        // RFC 3848: ESMTPS over TLS, ESMTPSA authenticated; the protocol and cipher as a comment.
        // (RFC 6531: UTF8SMTP, UTF8SMTPS, UTF8SMTPSA.)
        let suffix = (tls != nil ? "S" : "") + (authenticated ? "A" : "")
        var with = extended ? "ESMTP" + suffix : "SMTP"
        if smtpUTF8 { with = "UTF8SMTP" + suffix }
        if let tls { with += " (\(tls))" }
        return "Received: from \(name) ([\(peer)])\r\n\tby \(hostname) (Tern) with \(with)"
    }

    /// The rest of the Received field: the queue id, the recipient when there is one, the date.
    static func receivedEnd(id: UInt64, recipients: [String], now: Int = time(nil)) -> String {
        let forClause = recipients.count == 1 ? "\r\n\tfor <\(recipients[0])>" : ""
        return " id \(QueueID.text(id))\(forClause);\r\n\t\(rfc5322Date(now))\r\n"
    }

    /// Whether `start` is a Received field's start as `receivedStart` makes it: one header field
    /// named Received, folded only with CRLF and a tab, no bare CR or LF, no control characters,
    /// no line of its own after it (the queue appends to it; a hostile smtp cannot add a field
    /// through it).
    static func isReceivedStart(_ start: [UInt8]) -> Bool {
        let prefix = Array("Received: ".utf8)
        guard start.count <= 4096, start.starts(with: prefix) else { return false }
        var i = 0
        while i < start.count {
            let b = start[i]
            if b == 13 {
                guard i + 2 < start.count, start[i + 1] == 10, start[i + 2] == 9 else { return false }
                i += 3
                continue
            }
            if b == 10 || b == 0 || b == 127 || (b < 32 && b != 9) { return false }
            i += 1
        }
        return true
    }

    /// Whether `trace` is whole header fields (each line ends with CRLF, continuation lines start
    /// with space or tab), so nothing smtp sends before the Received field can join it.
    static func isTrace(_ trace: [UInt8]) -> Bool {
        guard !trace.isEmpty else { return true }
        guard trace.count >= 2, trace[trace.count - 2] == 13, trace[trace.count - 1] == 10, trace[0] != 32, trace[0] != 9 else { return false }
        for (i, b) in trace.enumerated() {
            if b == 13, i + 1 >= trace.count || trace[i + 1] != 10 { return false }
            if b == 10, i == 0 || trace[i - 1] != 13 { return false }
            if b == 0 { return false }
        }
        return true
    }

    /// Stores the message once its body is all staged: `parts` (trace fields and the header
    /// section) then the streamed body, into the spool; `answer` gets the reply (250 once the
    /// group commit made it durable, else a 4xx) on `loop`. One spool-timeout covers the body's
    /// last bytes reaching its staged file (the stager thread) and the group commit: a disk that
    /// does not answer gets a 451 and the message withdrawn; the loop never waits on the disk.
    /// Loop thread. The returned answer can be withdrawn (nobody waits any more).
    static func commit(
        spool: Spool, loop: EventLoop, message: SpoolMessage, parts: [[UInt8]], stream: BodyStream, timeout seconds: Int,
        summary: @escaping @Sendable (Int) -> String, answer: @escaping (Reply) -> Void
    ) -> PendingAnswer {
        let pending = PendingAnswer(spool: spool, loop: loop)
        pending.answer = answer
        let id = message.id
        let box = Transfer(pending)
        pending.timer = loop.schedule(after: UInt64(seconds) * 1_000_000_000) {
            let p = box.value
            p.timer = nil
            guard !p.answered else { return }
            // Too late only when it was stored meanwhile: then the 250 is on its way.
            if let t = p.ticket, !spool.abandon(t) { return }
            Log.error("spool: \(QueueID.text(id)) not on disk after \(seconds) s: answered 451 and withdrawn (\(spool.condition))")
            p.give(Policy.spoolTimedOut)
        }
        let parts = Transfer(parts)
        stream.finish { result in
            loop.execute {
                let p = box.value
                guard !p.answered else { return }
                let body: StreamedBody
                switch result {
                case .failure(let e):
                    Log.error("spool: message \(QueueID.text(id)) not stored: \(e)")
                    p.give(Policy.refusal(for: e.isNoSpace ? .full : .failing(e.description)))
                    return
                case .success(let b): body = b
                }
                let size = parts.value.reduce(0) { $0 + $1.count } + body.count
                let line = summary(size)
                let done: @Sendable (AcceptOutcome) -> Void = { outcome in
                    // (A failure is logged by the spool, with its cause.)
                    if outcome == .stored { Log.mail("queued \(line)") }
                    loop.execute {
                        box.value.give(outcome == .stored ? Reply(250, EnhancedStatus(2, 0, 0), "Ok: queued as \(QueueID.text(id))") : Policy.refusal(for: outcome.condition))
                    }
                }
                let result: AcceptResult
                switch body {
                case .inMemory(let bytes): result = spool.accept(message, bodyParts: parts.value + [bytes], completion: done)
                case .staged(let staged): result = spool.accept(message, bodyParts: parts.value, staged: staged, completion: done)
                }
                switch result {
                case .refused(let why):
                    Log.error("spool: \(QueueID.text(id)) refused: \(why)")
                    p.give(Policy.refusal(for: why))
                case .queued(let ticket):
                    p.ticket = ticket
                }
            }
        }
        return pending
    }

    /// The spool message for an envelope (its body is in the parts `commit` is given).
    static func spoolMessage(id: UInt64, sender: String, deliveries: [SpoolDelivery], body: BodyKind, smtpUTF8: Bool, envelopeID: String, ret: UInt8) -> SpoolMessage {
        var flags: UInt8 = body == .binaryMIME ? 2 : body == .eightBitMIME ? 1 : 0
        if smtpUTF8 { flags |= 0x80 }
        return SpoolMessage(id: id, arrival: Int64(time(nil)), sender: sender, body: [], deliveries: deliveries, envelopeID: envelopeID, ret: ret, bodyFlags: flags)
    }

    /// Counts Received: header fields in the header section.
    static func receivedCount(_ m: [UInt8]) -> Int {
        var count = 0
        var i = 0
        let key = Array("received:".utf8)
        while i < m.count {
            // A header line starts at i; an empty line ends the header section.
            if m[i] == 13 || m[i] == 10 { break }
            if i + key.count <= m.count, zip(m[i..<(i + key.count)], key).allSatisfy({ ($0 | 0x20) == $1 || $0 == $1 }) { count += 1 }
            guard let lf = m[i...].firstIndex(of: 10) else { break }
            i = lf + 1
        }
        return count
    }
}

extension AcceptOutcome {
    var condition: SpoolCondition? {
        if case .failed(let c) = self { return c }
        return nil
    }
}

