import Queue
import Spool
import Testing

@Suite("Bounce messages")
struct BounceTests {
    let original = SpoolMessage(
        id: 0xABC, arrival: 1_795_000_000, sender: "bob@example.test",
        body: Array("Subject: hi\r\nX-A: b\r\n\r\nbody line\r\n".utf8),
        deliveries: [SpoolDelivery(kind: .mailbox, recipient: "x@example.test", destination: "x@example.test")], ret: 2)

    @Test("a forwarded address is reported as itself, expanded from the sender's; a receiver's reply is an smtp diagnostic with its Remote-MTA")
    func forwarded() {
        let m = SpoolMessage(
            id: 0xABD, arrival: 1_795_000_000, sender: "bob@example.test", body: Array("Subject: hi\r\n\r\nbody\r\n".utf8),
            deliveries: [
                SpoolDelivery(kind: .remote, recipient: "team@example.test", destination: "ann@far.example"),
                SpoolDelivery(kind: .remote, recipient: "cy@far.example", destination: "cy@far.example", originalRecipient: "rfc822;cy@old.example"),
                SpoolDelivery(kind: .mailbox, recipient: "team@example.test", destination: "dee@example.test"),
            ], ret: 2)
        let failed = [
            FailedDelivery(delivery: m.deliveries[0], status: "5.1.1", diagnostic: "mx1.far.example[2001:db8::25] said: 550 5.1.1 <ann@far.example>: no such user"),
            FailedDelivery(delivery: m.deliveries[1], status: "4.4.7", diagnostic: "delivery time expired: mx1.far.example[192.0.2.25] said: 452 4.2.2 over quota"),
            FailedDelivery(delivery: m.deliveries[2], status: "5.2.1", diagnostic: "mailbox disabled"),
        ]
        let text = String(decoding: Bounce.message(original: m, failed: failed, hostname: "mx.example.test", now: 1_795_000_100), as: UTF8.self)
        #expect(text.contains("<ann@far.example> (expanded from <team@example.test>): mx1.far.example[2001:db8::25] said: 550 5.1.1 <ann@far.example>: no such user\r\n"), "\(text)")
        #expect(text.contains("<cy@far.example>: delivery time expired: "), "not forwarded: no expansion named")
        #expect(text.contains("<team@example.test>: mailbox disabled\r\n"), "a local mailbox is reported as the address the sender used")
        #expect(text.contains("""
            Final-Recipient: rfc822; ann@far.example\r
            Original-Recipient: rfc822;team@example.test\r
            Action: failed\r
            Status: 5.1.1\r
            Remote-MTA: dns; mx1.far.example\r
            Diagnostic-Code: smtp; 550 5.1.1 <ann@far.example>: no such user\r

            """), "\(text)")
        #expect(text.contains("""
            Final-Recipient: rfc822; cy@far.example\r
            Original-Recipient: rfc822;cy@old.example\r
            Action: failed\r
            Status: 4.4.7\r
            Remote-MTA: dns; mx1.far.example\r
            Diagnostic-Code: smtp; 452 4.2.2 over quota\r

            """), "the sender's ORCPT wins: \(text)")
        #expect(text.contains("Final-Recipient: rfc822; team@example.test\r\nAction: failed\r\nStatus: 5.2.1\r\nDiagnostic-Code: x-tern; mailbox disabled\r\n"), "\(text)")
    }

    @Test("RET=FULL returns the whole message as message/rfc822")
    func full() {
        let f = FailedDelivery(delivery: original.deliveries[0], status: "4.4.7", diagnostic: "delivery time expired: disk full")
        let text = String(decoding: Bounce.message(original: original, failed: [f], hostname: "mx.test", now: 1_795_000_100), as: UTF8.self)
        #expect(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\nX-A: b\r\n\r\nbody line\r\n"))
        #expect(text.contains("Status: 4.4.7\r\nDiagnostic-Code: x-tern; delivery time expired: disk full\r\n"))
        #expect(text.contains("<x@example.test>: delivery time expired: disk full\r\n"))
        #expect(text.hasSuffix("\r\n--abc/mx.test--\r\n"))
        #expect(text.contains("To: <bob@example.test>\r\n"))
        #expect(text.contains("Auto-Submitted: auto-replied\r\n"))
    }

    @Test("an internationalised message gets an RFC 6533 report: message/global-delivery-status, utf-8 recipients, global headers")
    func global() {
        var m = original
        m.ret = 0
        m.bodyFlags = 0x80
        m.deliveries = [SpoolDelivery(kind: .remote, recipient: "ñandú@bücher.example", destination: "ñandú@bücher.example")]
        let f = FailedDelivery(delivery: m.deliveries[0], status: "5.6.7", diagnostic: "needs SMTPUTF8")
        #expect(Bounce.isGlobal(original: m, failed: [f]))
        let text = String(decoding: Bounce.message(original: m, failed: [f], hostname: "mx.test", now: 1_795_000_100), as: UTF8.self)
        #expect(text.contains("Content-Type: message/global-delivery-status\r\n"))
        #expect(text.contains("Final-Recipient: utf-8; ñandú@bücher.example\r\n"))
        #expect(text.contains("Content-Type: message/global-headers\r\n\r\nSubject: hi\r\n"))
        // Plain ASCII stays RFC 3464.
        let plain = String(decoding: Bounce.message(original: original, failed: [FailedDelivery(delivery: original.deliveries[0], status: "5.0.0", diagnostic: "x")], hostname: "mx.test"), as: UTF8.self)
        #expect(plain.contains("Content-Type: message/delivery-status\r\n") && plain.contains("Final-Recipient: rfc822; x@example.test\r\n"))
        #expect(!Bounce.isGlobal(original: original, failed: []))
    }

    @Test("NOTIFY decides who is reported", arguments: [(UInt8(0), true), (UInt8(1), false), (UInt8(4), true), (UInt8(2), false), (UInt8(6), true), (UInt8(8), false)])
    func notify(_ flags: UInt8, _ wanted: Bool) {
        var d = original.deliveries[0]
        d.notify = flags
        #expect(Bounce.wanted(d) == wanted)
    }
}
