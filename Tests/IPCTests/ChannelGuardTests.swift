// The order rules of `ChannelGuard`, from the receiving side that holds what matters: each
// message a hostile smtp could send out of turn is refused, naming why, and the flows a good
// peer makes pass.

import Config
import IPC
import SMTP
import Testing

let envelope = IPCEnvelope(sender: "a@b.test", client: "127.0.0.2", recipients: [IPCRecipient(address: "bob@example.test", destinations: [.remote("bob@example.test")])])

func greeted(_ local: IPCRole, _ peer: IPCRole, maxBody: Int = 1000, maxOutstanding: Int = 8) throws -> ChannelGuard {
    var g = ChannelGuard(local: local, peer: peer, maxBody: maxBody, maxOutstanding: maxOutstanding)
    try g.received(.hello(version: IPCMessage.version, role: peer))
    return g
}

func refuses(_ g: inout ChannelGuard, _ m: IPCMessage, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(throws: IPCError.self, "\(m)", sourceLocation: sourceLocation) { try g.received(m) }
}

@Suite struct ChannelGuardTests {
    @Test func helloFirstOnceRightVersionRightRole() throws {
        var g = ChannelGuard(local: .queue, peer: .smtp)
        // The reason names the message, for the log line that closes the channel.
        #expect(throws: IPCError.outOfOrder("messageBegin before hello")) { try g.received(.messageBegin(transaction: 1, envelope)) }
        #expect(throws: IPCError.versionMismatch(peer: IPCMessage.version + 1, ours: IPCMessage.version)) { try g.received(.hello(version: IPCMessage.version + 1, role: .smtp)) }
        refuses(&g, .hello(version: IPCMessage.version, role: .courier))
        try g.received(.hello(version: IPCMessage.version, role: .smtp))
        refuses(&g, .hello(version: IPCMessage.version, role: .smtp))
    }

    @Test func lookupFromSmtp() throws {
        var g = try greeted(.lookup, .smtp, maxOutstanding: 3)
        try g.received(.authCheck(request: 1, user: "u", password: [1], client: "c"))
        // The same id again while its answer is owed.
        refuses(&g, .resolveRecipient(request: 1, recipient: "x@y"))
        try g.received(.resolveRecipient(request: 2, recipient: "x@y"))
        try g.received(.senderCheck(request: 3, user: "u", sender: "s"))
        // Over the limit of waiting requests.
        refuses(&g, .resolveRecipient(request: 4, recipient: "x@y"))
        g.sent(.authAnswer(request: 1, .accepted))
        try g.received(.resolveRecipient(request: 1, recipient: "again@y"))
        #expect(g.outstanding.requests == 3)
        // What smtp may never send to lookup.
        refuses(&g, .authAnswer(request: 2, .accepted))
        refuses(&g, .resolved(request: 2, .notLocal))
        refuses(&g, .shutdown(grace: 1))
        refuses(&g, .messageBegin(transaction: 1, envelope))
    }

    @Test func answersToSmtpOnlyForWhatWasAsked() throws {
        var g = try greeted(.smtp, .lookup)
        refuses(&g, .authAnswer(request: 1, .accepted))
        g.sent(.authCheck(request: 1, user: "u", password: [], client: "c"))
        g.sent(.resolveRecipient(request: 2, recipient: "r"))
        // The wrong kind of answer.
        refuses(&g, .resolved(request: 1, .unknownUser))
        try g.received(.authAnswer(request: 1, .refused))
        // Twice.
        refuses(&g, .authAnswer(request: 1, .accepted))
        try g.received(.resolved(request: 2, .deliver([.remote("r")])))
        #expect(g.outstanding.requests == 0)
    }

    @Test func queueFromSmtp() throws {
        var g = try greeted(.queue, .smtp, maxBody: 1000, maxOutstanding: 2)
        refuses(&g, .messageChunk(transaction: 1, bytes: [1]))
        refuses(&g, .messageEnd(transaction: 1, trace: [], received: [], sign: false))
        refuses(&g, .messageAbort(transaction: 1))
        try g.received(.messageBegin(transaction: 1, envelope))
        refuses(&g, .messageBegin(transaction: 1, envelope))
        try g.received(.messageChunk(transaction: 1, bytes: Array(repeating: 0, count: 600)))
        // Over the body limit, with a chunk, then with the trace at the end.
        refuses(&g, .messageChunk(transaction: 1, bytes: Array(repeating: 0, count: 401)))
        try g.received(.messageChunk(transaction: 1, bytes: Array(repeating: 0, count: 300)))
        refuses(&g, .messageEnd(transaction: 1, trace: Array(repeating: 0, count: 101), received: [], sign: false))
        try g.received(.messageEnd(transaction: 1, trace: Array(repeating: 0, count: 100), received: [], sign: false))
        // Nothing after the end but an abort.
        refuses(&g, .messageChunk(transaction: 1, bytes: [1]))
        refuses(&g, .messageEnd(transaction: 1, trace: [], received: [], sign: false))
        try g.received(.messageBegin(transaction: 2, envelope))
        refuses(&g, .messageBegin(transaction: 3, envelope))
        try g.received(.messageAbort(transaction: 1))
        try g.received(.messageBegin(transaction: 3, envelope))
        g.sent(.messageRefused(transaction: 2, Reply(452, EnhancedStatus(4, 3, 1), "full")))
        refuses(&g, .messageChunk(transaction: 2, bytes: [1]))
        // What smtp may never send to the queue.
        refuses(&g, .messageStored(transaction: 3, queueID: 1))
        refuses(&g, .authCheck(request: 1, user: "u", password: [], client: "c"))
        refuses(&g, .reload(configuration: ""))
    }

    @Test func mailChecksBetweenSmtpAndQueue() throws {
        var q = try greeted(.queue, .smtp, maxOutstanding: 2)
        try q.received(.mailCheck(request: 1, sender: "a@b", size: 0, tls: 0))
        refuses(&q, .mailCheck(request: 1, sender: "a@b", size: 0, tls: 0))
        // smtp does not answer its own questions, and lookup does not take this one.
        refuses(&q, .mailAnswer(request: 1, nil))
        var l = try greeted(.lookup, .smtp)
        refuses(&l, .mailCheck(request: 1, sender: "a@b", size: 0, tls: 0))
        var s = try greeted(.smtp, .queue)
        refuses(&s, .mailAnswer(request: 1, nil))
        s.sent(.mailCheck(request: 1, sender: "a@b", size: 0, tls: 1))
        try s.received(.mailAnswer(request: 1, Reply(451, EnhancedStatus(4, 7, 3), "TLS")))
        refuses(&s, .mailAnswer(request: 1, nil))
        // From lookup, the answer is out of place.
        var fromLookup = try greeted(.smtp, .lookup)
        fromLookup.sent(.authCheck(request: 1, user: "u", password: [], client: "c"))
        refuses(&fromLookup, .mailAnswer(request: 1, nil))
        // The spool's state comes from the queue at any time, to smtp only.
        try s.received(.spoolState(refusal: Reply(452, EnhancedStatus(4, 3, 1), "full"), room: 0))
        try s.received(.spoolState(refusal: nil, room: 5))
        refuses(&fromLookup, .spoolState(refusal: nil, room: 5))
        refuses(&q, .spoolState(refusal: nil, room: 5))
    }

    @Test func answersFromQueue() throws {
        var g = try greeted(.smtp, .queue)
        refuses(&g, .messageStored(transaction: 1, queueID: 5))
        g.sent(.messageBegin(transaction: 1, envelope))
        // Stored before the body ended: a queue that says so is wrong.
        refuses(&g, .messageStored(transaction: 1, queueID: 5))
        g.sent(.messageEnd(transaction: 1, trace: [], received: [], sign: false))
        try g.received(.messageStored(transaction: 1, queueID: 5))
        refuses(&g, .messageStored(transaction: 1, queueID: 5))
        g.sent(.messageBegin(transaction: 2, envelope))
        try g.received(.messageRefused(transaction: 2, Reply(452, EnhancedStatus(4, 3, 1), "full")))
        #expect(g.outstanding.transactions == 0)
    }

    @Test func parentOnlyControls() throws {
        var g = try greeted(.smtp, .parent)
        try g.received(.shutdown(grace: 10))
        try g.received(.reload(configuration: "x"))
        refuses(&g, .authAnswer(request: 1, .accepted))
        refuses(&g, .messageStored(transaction: 1, queueID: 1))
        var q = try greeted(.queue, .courier)
        refuses(&q, .messageBegin(transaction: 1, envelope))
        refuses(&q, .shutdown(grace: 1))
    }

    @Test("queue → courier: a job, then its body up to its size exactly; courier → queue: outcomes for a job whose body was sent, one per recipient")
    func courierJobs() throws {
        let job = IPCOutbound(id: 1, domain: "remote.example", sender: "a@b.test", recipients: ["x@remote.example", "y@remote.example"], notify: [0, 0], originalRecipients: ["", ""], size: 10)
        // The courier's side of the queue's messages.
        var c = try greeted(.courier, .queue, maxBody: 100, maxOutstanding: 2)
        try c.received(.deliver(job: 1, job))
        refuses(&c, .deliver(job: 1, job))
        try c.received(.messageChunk(transaction: 1, bytes: Array(repeating: 1, count: 6)))
        refuses(&c, .messageChunk(transaction: 1, bytes: Array(repeating: 1, count: 5)))
        var big = job
        big.size = 101
        refuses(&c, .deliver(job: 2, big))
        var odd = job
        odd.notify = [0]
        refuses(&c, .deliver(job: 3, odd))
        try c.received(.deliver(job: 4, job))
        refuses(&c, .deliver(job: 5, job))
        refuses(&c, .messageChunk(transaction: 9, bytes: [1]))
        try c.received(.mtaSTSPolicy(domain: "remote.example", id: "1", fetched: 1, text: []))
        refuses(&c, .delivered(job: 1, outcomes: [IPCOutcome(.delivered, status: "2.0.0")]))
        refuses(&c, .messageBegin(transaction: 1, envelope))

        // The queue's side of the courier's messages.
        var q = try greeted(.queue, .courier, maxBody: 100)
        q.sent(.deliver(job: 7, job))
        let two = [IPCOutcome(.delivered, status: "2.0.0"), IPCOutcome(.notAttempted)]
        refuses(&q, .delivered(job: 7, outcomes: two))  // before its body was all sent
        q.sent(.messageChunk(transaction: 7, bytes: Array(repeating: 1, count: 10)))
        refuses(&q, .delivered(job: 7, outcomes: [two[0]]))  // one outcome for two recipients
        refuses(&q, .delivered(job: 8, outcomes: two))  // a job never sent
        try q.received(.tlsReached(domain: "remote.example", level: 1))
        try q.received(.delivered(job: 7, outcomes: two))
        refuses(&q, .delivered(job: 7, outcomes: two))  // answered twice
        refuses(&q, .deliver(job: 9, job))
        #expect(q.outstanding.transactions == 0)
    }
}
