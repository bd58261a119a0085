import Delivery
import SMTP
import Testing

func capabilities(utf8: Bool = false, dsn: Bool = false, size: Int? = nil) -> ServerCapabilities {
    var c = ServerCapabilities()
    c.extended = true
    c.smtpUTF8 = utf8
    c.dsn = dsn
    c.size = size
    return c
}

@Suite("Outbound envelope: what goes on the wire for a peer")
struct OutboundEnvelopeTests {
    let body = Array("Subject: x\r\n\r\nhi\r\n".utf8)

    @Test("ASCII addresses go as they are; SMTPUTF8 only when the message needs it and the peer has it")
    func ascii() {
        let m = OutboundMessage(id: 1, sender: "s@a.example", recipients: ["r@b.example", "q@b.example"], body: body)
        let p = OutboundEnvelope.plan(m, capabilities: capabilities(utf8: true))
        #expect(p.transaction.sender == "s@a.example")
        #expect(p.transaction.recipients == ["r@b.example", "q@b.example"])
        #expect(p.sent == [0, 1])
        #expect(p.settled.isEmpty)
        #expect(!p.transaction.smtpUTF8)
        #expect(p.transaction.mailParameters.isEmpty && p.transaction.recipientParameters.isEmpty)
    }

    @Test("a BINARYMIME message goes only to a peer with BINARYMIME and CHUNKING, with BODY=BINARYMIME; otherwise 5.6.3, never converted")
    func binary() {
        var m = OutboundMessage(id: 1, sender: "s@a.example", recipients: ["r@b.example", "q@b.example"], body: Array("x\ry\nz".utf8), eightBit: true)
        m.binary = true
        for (binaryMIME, chunking) in [(false, false), (true, false), (false, true)] {
            var c = capabilities()
            c.binaryMIME = binaryMIME
            c.chunking = chunking
            let p = OutboundEnvelope.plan(m, capabilities: c)
            #expect(p.sent.isEmpty && p.transaction.recipients.isEmpty)
            #expect(p.settled[0]?.status == "5.6.3" && p.settled[1]?.kind == .permanent, "\(p.settled)")
        }
        var c = capabilities()
        c.binaryMIME = true
        c.chunking = true
        let p = OutboundEnvelope.plan(m, capabilities: c)
        #expect(p.sent == [0, 1] && p.settled.isEmpty)
        #expect(p.transaction.body == .binaryMIME)
    }

    @Test("503 to MAIL (out of sequence) is a temporary failure for every recipient; refusals and final replies keep their codes")
    func sequenceError() {
        var r = TransactionResult(code: 503, status: EnhancedStatus(5, 5, 1), text: "nested MAIL command", recipientCodes: [503, 503])
        r.senderRefused = true
        for k in 0..<2 {
            let o = OutboundEnvelope.outcome(of: r, recipient: k, host: "mx.b.example[127.0.0.1]")
            #expect(o.kind == .temporary && o.status == "4.5.0", "\(o)")
            #expect(o.text.contains("said: 503 5.5.1 nested MAIL command"), "\(o.text)")
        }
        r.code = 550
        r.status = EnhancedStatus(5, 7, 1)
        #expect(OutboundEnvelope.outcome(of: r, recipient: 0, host: "h").kind == .permanent)
        var d = TransactionResult(code: 250, status: nil, text: "", recipientCodes: [250, 550])
        d.recipientTexts = ["", "5.1.1 no such user"]
        #expect(OutboundEnvelope.outcome(of: d, recipient: 0, host: "h").kind == .delivered)
        let refused = OutboundEnvelope.outcome(of: d, recipient: 1, host: "h")
        #expect(refused.kind == .permanent && refused.status == "5.1.1")
    }

    @Test("a peer with SMTPUTF8 gets the addresses in UTF-8")
    func utf8Peer() {
        let m = OutboundMessage(id: 1, sender: "jörg@bücher.example", recipients: ["ñandú@bücher.example"], body: body, smtpUTF8: true)
        let p = OutboundEnvelope.plan(m, capabilities: capabilities(utf8: true))
        #expect(p.transaction.smtpUTF8)
        #expect(p.transaction.sender == "jörg@bücher.example")
        #expect(p.transaction.recipients == ["ñandú@bücher.example"])
    }

    @Test("without SMTPUTF8: domains become A-labels, a non-ASCII local part fails with 5.6.7")
    func downgrade() {
        let m = OutboundMessage(id: 1, sender: "s@bücher.example", recipients: ["a@bücher.example", "ñandú@b.example", "c@b.example"], body: body, smtpUTF8: true)
        let p = OutboundEnvelope.plan(m, capabilities: capabilities(utf8: false))
        #expect(!p.transaction.smtpUTF8)
        #expect(p.transaction.sender == "s@xn--bcher-kva.example")
        #expect(p.transaction.recipients == ["a@xn--bcher-kva.example", "c@b.example"])
        #expect(p.sent == [0, 2])
        #expect(p.settled[1]?.kind == .permanent)
        #expect(p.settled[1]?.status == "5.6.7")
        let sender = OutboundMessage(id: 1, sender: "jörg@a.example", recipients: ["a@b.example", "c@b.example"], body: body, smtpUTF8: true)
        let q = OutboundEnvelope.plan(sender, capabilities: capabilities(utf8: false))
        #expect(q.sent.isEmpty)
        #expect(q.settled.count == 2 && q.settled.values.allSatisfy { $0.status == "5.6.7" && $0.kind == .permanent })
    }

    @Test("a message over the peer's SIZE fails with 5.3.4 before MAIL")
    func size() {
        let m = OutboundMessage(id: 1, sender: "s@a.example", recipients: ["r@b.example"], body: body)
        #expect(OutboundEnvelope.plan(m, capabilities: capabilities(size: body.count - 1)).settled[0]?.status == "5.3.4")
        #expect(OutboundEnvelope.plan(m, capabilities: capabilities(size: body.count)).sent == [0])
        #expect(OutboundEnvelope.plan(m, capabilities: capabilities(size: 0)).sent == [0])  // SIZE without a limit
    }

    @Test("DSN parameters pass through to a peer that offers DSN, and only then")
    func dsn() {
        var m = OutboundMessage(id: 1, sender: "s@a.example", recipients: ["r@b.example", "q@b.example", "p@b.example"], body: body)
        m.envelopeID = "id+1=x"
        m.ret = 1
        m.notify = [4 | 8, 1, 0]
        m.originalRecipients = ["rfc822;R@b.example", "", ""]
        let p = OutboundEnvelope.plan(m, capabilities: capabilities(dsn: true))
        #expect(p.transaction.mailParameters == " RET=HDRS ENVID=id+2B1+3Dx")
        #expect(p.transaction.recipientParameters == [" NOTIFY=FAILURE,DELAY ORCPT=rfc822;R@b.example", " NOTIFY=NEVER", ""])
        let q = OutboundEnvelope.plan(m, capabilities: capabilities(dsn: false))
        #expect(q.transaction.mailParameters.isEmpty && q.transaction.recipientParameters.isEmpty)
    }

    @Test("reply codes map to outcomes: 2xx delivered, 4xx temporary, 5xx permanent, with the enhanced status")
    func replies() {
        #expect(RecipientOutcome.reply(code: 250, text: "2.0.0 Ok: queued as X", host: "mx") == RecipientOutcome(.delivered, "2.0.0", "mx said: 250 2.0.0 Ok: queued as X"))
        #expect(RecipientOutcome.reply(code: 451, text: "4.3.0 try later", host: "mx") == .temporary("4.3.0", "mx said: 451 4.3.0 try later"))
        #expect(RecipientOutcome.reply(code: 550, text: "5.1.1 no such user", host: "mx") == .permanent("5.1.1", "mx said: 550 5.1.1 no such user"))
        #expect(RecipientOutcome.reply(code: 550, text: "no such user", host: "mx").status == "5.0.0")
        #expect(RecipientOutcome.reply(code: 421, text: "", host: "mx") == .temporary("4.0.0", "mx said: 421"))
        // A status of the wrong class is not taken for one.
        #expect(RecipientOutcome.reply(code: 452, text: "5.5.3 too many", host: "mx").status == "4.0.0")
        #expect(RecipientOutcome.reply(code: 452, text: "x.y.z too many", host: "mx").status == "4.0.0")
    }

    @Test("a reply told by `said` is read back for a bounce: the receiver's name and its reply, after a prefix of ours")
    func remoteReply() {
        let said = RecipientOutcome.reply(code: 550, text: "5.1.1 <a@b.example>: no such user", host: "mx.b.example[2001:db8::1]").text
        func read(_ text: String) -> String? { RecipientOutcome.remoteReply(in: text).map { "\($0.host) | \($0.reply)" } }
        #expect(read(said) == "mx.b.example | 550 5.1.1 <a@b.example>: no such user")
        #expect(read("delivery time expired: " + said) == "mx.b.example | 550 5.1.1 <a@b.example>: no such user")
        #expect(read("mx[192.0.2.1] said: 421") == "mx | 421")
        // Anything else is ours, not a receiver's.
        for text in ["mailbox disabled", "mx[192.0.2.1] closed the connection (421)", "mx said: 550 no brackets",
                     "mx[192.0.2.1] said: 55 short", "mx[192.0.2.1] said: five hundred", "[192.0.2.1] said: 550 x", "a b[1] said: 550 x"] {
            #expect(read(text) == nil, "\(text)")
        }
    }
}
