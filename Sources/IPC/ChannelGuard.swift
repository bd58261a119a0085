// What each side of a channel may send, and when. The one place that decides whether a peer's
// well-formed message is in order: the receiver calls `received` for every message before it acts
// on it, and `sent` for every message it sends. Queue and lookup treat smtp and courier as
// hostile: a message out of order throws, and the caller closes the channel and logs it.
//
// The rules (peer → us):
//   any     first `hello` with our version and the role expected at that end; never again
//   parent  `shutdown`, `reload`
//   smtp → lookup   `authCheck`, `resolveRecipient`, `senderCheck`, each with a request id not
//                   already waiting for its answer, at most `maxOutstanding` waiting
//   lookup → smtp   the answer of the same kind to a request smtp sent and has no answer for
//   smtp → queue    `mailCheck` (a request, as for lookup); `messageBegin` (a new transaction id, at most `maxOutstanding` open), then
//                   `messageChunk`s (at most `maxBody` bytes in all), then `messageEnd`;
//                   `messageAbort` at any point until the queue answers
//   queue → smtp    `mailAnswer` to a `mailCheck` waiting for it; `messageStored` for an ended transaction, `messageRefused` for an open or
//                   ended one; `spoolState` at any time
//   queue → courier `deliver` (a new job id, at most `maxOutstanding` open, a size of at most
//                   `maxBody`), then `messageChunk`s for that job up to its size exactly;
//                   `mtaSTSPolicy` at any time
//   courier → queue `delivered` for a job whose body was all sent, one outcome per recipient;
//                   `tlsReached`, `mtaSTSPolicy` and `courierDraining` at any time

public struct ChannelGuard: Sendable {
    public let local: IPCRole
    public let peer: IPCRole
    /// The largest body (with its trace fields) a transaction may stream.
    public let maxBody: Int
    public let maxOutstanding: Int

    var greeted = false
    /// Requests waiting for an answer (the lookup side: asked of us; the smtp side: asked by us),
    /// with the kind of answer each wants.
    var requests: [UInt32: IPCMessage.Tag] = [:]
    enum Transaction: Equatable {
        case open(bytes: Int)
        case ended
    }
    var transactions: [UInt32: Transaction] = [:]
    /// The courier's jobs: the body's size, the bytes of it that came, the recipients.
    struct Job: Equatable {
        var size: UInt64
        var received: UInt64
        var recipients: Int
        var complete: Bool { received == size }
    }
    var jobs: [UInt32: Job] = [:]

    public init(local: IPCRole, peer: IPCRole, maxBody: Int = 64 * 1024 * 1024, maxOutstanding: Int = 4096) {
        self.local = local
        self.peer = peer
        self.maxBody = maxBody
        self.maxOutstanding = maxOutstanding
    }

    /// Open transactions and unanswered requests (for tests and the status output).
    public var outstanding: (requests: Int, transactions: Int) { (requests.count, transactions.count + jobs.count) }

    /// Checks a message the peer sent; throws when the peer may not send it now.
    public mutating func received(_ m: IPCMessage) throws(IPCError) {
        if case .hello(let version, let role) = m {
            guard !greeted else { throw .outOfOrder("a second hello") }
            guard version == IPCMessage.version else { throw .versionMismatch(peer: version, ours: IPCMessage.version) }
            guard role == peer else { throw .outOfOrder("hello from \(role) on the \(peer) channel") }
            greeted = true
            return
        }
        guard greeted else { throw .outOfOrder("\(m.tag) before hello") }
        switch (peer, local, m) {
        case (.parent, _, .shutdown), (.parent, _, .reload):
            return
        case (.smtp, .lookup, .authCheck(let r, _, _, _)): try ask(r, answer: .authAnswer)
        case (.smtp, .lookup, .resolveRecipient(let r, _)): try ask(r, answer: .resolved)
        case (.smtp, .lookup, .senderCheck(let r, _, _)): try ask(r, answer: .senderAnswer)
        case (.smtp, .queue, .mailCheck(let r, _, _, _)): try ask(r, answer: .mailAnswer)
        case (.lookup, .smtp, .authAnswer(let r, _, _)), (.lookup, .smtp, .resolved(let r, _)), (.lookup, .smtp, .senderAnswer(let r, _)),
            (.queue, .smtp, .mailAnswer(let r, _)):
            guard let wanted = requests[r] else { throw .outOfOrder("an answer to request \(r), which was not asked") }
            guard wanted == m.tag else { throw .outOfOrder("\(m.tag) to request \(r), which wants \(wanted)") }
            requests[r] = nil
        case (.smtp, .queue, .messageBegin(let t, _)):
            guard transactions[t] == nil else { throw .outOfOrder("transaction \(t) begun twice") }
            guard transactions.count < maxOutstanding else { throw .outOfOrder("more than \(maxOutstanding) transactions open") }
            transactions[t] = .open(bytes: 0)
        case (.smtp, .queue, .messageChunk(let t, let bytes)):
            guard case .open(let n)? = transactions[t] else { throw .outOfOrder("a chunk for transaction \(t), which is not open") }
            guard n + bytes.count <= maxBody else { throw .outOfOrder("transaction \(t) is over \(maxBody) bytes") }
            transactions[t] = .open(bytes: n + bytes.count)
        case (.smtp, .queue, .messageEnd(let t, let trace, let received, _, _)):
            guard case .open(let n)? = transactions[t] else { throw .outOfOrder("the end of transaction \(t), which is not open") }
            guard n + trace.count + received.count <= maxBody else { throw .outOfOrder("transaction \(t) is over \(maxBody) bytes") }
            transactions[t] = .ended
        case (.smtp, .queue, .messageAbort(let t)):
            guard transactions[t] != nil else { throw .outOfOrder("abort of transaction \(t), which is not open") }
            transactions[t] = nil
        case (.queue, .smtp, .messageStored(let t, _)):
            guard transactions[t] == .ended else { throw .outOfOrder("transaction \(t) stored before its end") }
            transactions[t] = nil
        case (.queue, .smtp, .spoolState):
            return
        case (.queue, .smtp, .messageRefused(let t, _)):
            guard transactions[t] != nil else { throw .outOfOrder("refusal of transaction \(t), which is not open") }
            transactions[t] = nil
        case (.queue, .courier, .deliver(let j, let o)):
            guard jobs[j] == nil else { throw .outOfOrder("job \(j) sent twice") }
            guard jobs.count < maxOutstanding else { throw .outOfOrder("more than \(maxOutstanding) jobs open") }
            guard o.size <= UInt64(maxBody) else { throw .outOfOrder("job \(j) is over \(maxBody) bytes") }
            guard o.notify.count == o.recipients.count, o.originalRecipients.count == o.recipients.count else { throw .outOfOrder("job \(j): recipients and their DSN parameters differ in number") }
            jobs[j] = Job(size: o.size, received: 0, recipients: o.recipients.count)
        case (.queue, .courier, .messageChunk(let j, let bytes)):
            guard var job = jobs[j], !job.complete else { throw .outOfOrder("a chunk for job \(j), which wants no more body") }
            guard job.received + UInt64(bytes.count) <= job.size else { throw .outOfOrder("job \(j) is over its size of \(job.size) bytes") }
            job.received += UInt64(bytes.count)
            jobs[j] = job
        case (.courier, .queue, .delivered(let j, let outcomes)):
            guard let job = jobs[j] else { throw .outOfOrder("outcomes of job \(j), which was not sent") }
            guard job.complete else { throw .outOfOrder("outcomes of job \(j) before its body was all sent") }
            guard outcomes.count == job.recipients else { throw .outOfOrder("\(outcomes.count) outcomes for job \(j), which has \(job.recipients) recipients") }
            jobs[j] = nil
        case (.courier, .queue, .tlsReached), (.courier, .queue, .mtaSTSPolicy), (.courier, .queue, .courierDraining), (.queue, .courier, .mtaSTSPolicy):
            return
        default:
            throw .outOfOrder("\(m.tag) from \(peer) to \(local)")
        }
    }

    mutating func ask(_ r: UInt32, answer: IPCMessage.Tag) throws(IPCError) {
        guard requests[r] == nil else { throw .outOfOrder("request \(r) asked twice") }
        guard requests.count < maxOutstanding else { throw .outOfOrder("more than \(maxOutstanding) requests waiting") }
        requests[r] = answer
    }

    /// Notes a message this side sends (it must follow the same rules the other side checks:
    /// a bug of ours is a precondition failure, not a message the peer has to refuse).
    public mutating func sent(_ m: IPCMessage) {
        switch m {
        case .authCheck(let r, _, _, _): requests[r] = .authAnswer
        case .resolveRecipient(let r, _): requests[r] = .resolved
        case .senderCheck(let r, _, _): requests[r] = .senderAnswer
        case .mailCheck(let r, _, _, _): requests[r] = .mailAnswer
        case .authAnswer(let r, _, _), .resolved(let r, _), .senderAnswer(let r, _), .mailAnswer(let r, _): requests[r] = nil
        case .deliver(let j, let o): jobs[j] = Job(size: o.size, received: 0, recipients: o.recipients.count)
        case .messageChunk(let j, let bytes): if var job = jobs[j] { job.received += UInt64(bytes.count); jobs[j] = job }
        case .delivered(let j, _): jobs[j] = nil
        case .messageBegin(let t, _): transactions[t] = .open(bytes: 0)
        case .messageEnd(let t, _, _, _, _): transactions[t] = .ended
        case .messageAbort(let t), .messageStored(let t, _), .messageRefused(let t, _): transactions[t] = nil
        default: break
        }
    }
}
