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

    public init(local: IPCRole, peer: IPCRole, maxBody: Int = 64 * 1024 * 1024, maxOutstanding: Int = 4096) {
        self.local = local
        self.peer = peer
        self.maxBody = maxBody
        self.maxOutstanding = maxOutstanding
    }

    /// Open transactions and unanswered requests (for tests and the status output).
    public var outstanding: (requests: Int, transactions: Int) { (requests.count, transactions.count) }

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
        case .messageBegin(let t, _): transactions[t] = .open(bytes: 0)
        case .messageEnd(let t, _, _, _, _): transactions[t] = .ended
        case .messageAbort(let t), .messageStored(let t, _), .messageRefused(let t, _): transactions[t] = nil
        default: break
        }
    }
}
