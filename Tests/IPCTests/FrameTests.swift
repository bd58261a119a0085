// The IPC frames byte by byte: every message round-trips whole and split at every byte; a
// truncated, oversized, mis-typed or padded frame, bad text and out-of-range values are refused
// with the error that names them; seeded random and bit-flipped frames never crash the decoder
// and never decode to something that does not encode back the same.

import Config
import IPC
import SMTP
import TernTestSupport
import Testing

/// One of each message, with the awkward values (empty strings, UTF-8, several lines, nil and
/// non-nil optionals).
let samples: [IPCMessage] = {
    let bob = Destination.mailbox(user: "bob", domain: try! Domain("example.test"))
    let idn = Destination.mailbox(user: "jösé", domain: try! Domain("bücher.example"))
    return [
        .hello(version: IPCMessage.version, role: .smtp),
        .hello(version: 7, role: .courier),
        .shutdown(grace: 10),
        .reload(configuration: "hostname mx.example.test\nspool /var/spool/tern\n"),
        .authCheck(request: 1, user: "alice@example.test", password: Array("s3cret\u{0}x".utf8), client: "192.0.2.1"),
        .authCheck(request: 0xffff_ffff, user: "", password: [], client: ""),
        .authAnswer(request: 1, .accepted),
        .authAnswer(request: 9, .accepted, token: Array(repeating: 0xA5, count: 40)),
        .authAnswer(request: 2, .refused),
        .authAnswer(request: 3, .tryLater),
        .resolveRecipient(request: 9, recipient: "postmaster@bücher.example"),
        .resolved(request: 9, .deliver([bob, idn, .remote("carol@elsewhere.test"), .pipe(["/usr/bin/procmail", "-d", "bob"])])),
        .resolved(request: 10, .unknownUser),
        .resolved(request: 11, .notLocal),
        .resolved(request: 12, .refused("source route")),
        .resolved(request: 13, .aliasLoop),
        .senderCheck(request: 4, user: "alice@example.test", sender: "alice+list@example.test"),
        .senderAnswer(request: 4, allowed: true),
        .senderAnswer(request: 5, allowed: false),
        .messageBegin(
            transaction: 77,
            IPCEnvelope(
                sender: "", body: .binaryMIME, smtpUTF8: true, envelopeID: "QQ+2B314", ret: 2, client: "[2001:db8::1]", user: "alice@example.test", userToken: [1, 2, 3, 0, 255],
                recipients: [
                    IPCRecipient(address: "bob@example.test", notify: 6, originalRecipient: "rfc822;bob@example.test", destinations: [bob]),
                    IPCRecipient(address: "jösé@bücher.example", destinations: [idn, .remote("x@y.test")]),
                ])),
        .mailCheck(request: 6, sender: "a@b.test", size: 0, tls: 0),
        .mailCheck(request: 7, sender: "", size: 1 << 40, tls: 2),
        .mailAnswer(request: 6, nil),
        .mailAnswer(request: 7, Reply(451, EnhancedStatus(4, 7, 3), "use STARTTLS")),
        .messageChunk(transaction: 77, bytes: Array(repeating: 0x41, count: 1000) + [13, 10, 0, 0xff]),
        .messageChunk(transaction: 77, bytes: []),
        .messageEnd(transaction: 77, trace: Array("Received: from x\r\n".utf8), received: [], sign: false),
        .messageEnd(transaction: 78, trace: [], received: Array("Received: from x ([127.0.0.2])\r\n\tby h (Tern) with ESMTP".utf8), sign: true, deadline: 0x0102_0304_0506_0708),
        .messageAbort(transaction: 79),
        .messageStored(transaction: 77, queueID: 0x0123_4567_89ab_cdef),
        .messageRefused(transaction: 80, Reply(452, EnhancedStatus(4, 3, 1), "Insufficient system storage")),
        .messageRefused(transaction: 81, Reply(554, nil, lines: ["one", "two", ""])),
        .spoolState(refusal: nil, room: 1 << 40),
        .spoolState(refusal: Reply(451, EnhancedStatus(4, 3, 0), "the spool did not answer"), reason: "the spool's disk has not answered for 3 s", room: 0),
        .deliver(
            job: 3,
            IPCOutbound(
                id: 0x0123_4567_89ab_cdef, domain: "xn--bcher-kva.example", sender: "", recipients: ["ñandú@bücher.example", "b@xn--bcher-kva.example"], notify: [6, 0],
                originalRecipients: ["rfc822;x@y.test", ""], envelopeID: "QQ+2B", ret: 1, body: .binaryMIME, smtpUTF8: true, size: 1 << 33, historyKey: "relay.example.net", tlsFloor: 2)),
        .deliver(job: 0xffff_ffff, IPCOutbound(id: 0, domain: "[192.0.2.1]", sender: "a@b.test", recipients: ["x@[192.0.2.1]"], notify: [0], originalRecipients: [""], size: 0)),
        .delivered(
            job: 3,
            outcomes: [
                IPCOutcome(.delivered, status: "2.0.0", text: "mx.example.net[192.0.2.1] said: 250 2.0.0 ok", withoutDSN: true), IPCOutcome(.notAttempted),
                IPCOutcome(.temporary, status: "4.4.1", text: "connect: refused"), IPCOutcome(.permanent, status: "5.1.10", text: "null MX"),
            ]),
        .tlsReached(domain: "remote.example", level: 2),
        .mtaSTSPolicy(domain: "remote.example", id: "20260101T0000", fetched: -1, text: Array("version: STSv1\r\nmode: enforce\r\n".utf8)),
        .courierDraining,
    ]
}()

func decodeAll(_ bytes: [UInt8]) throws(IPCError) -> [IPCMessage] {
    var d = FrameDecoder()
    d.feed(bytes)
    var out: [IPCMessage] = []
    while let m = try d.next() { out.append(m) }
    try d.finish()
    return out
}

/// A frame with `payload` under `type`, the length prefix right.
func frame(_ type: UInt8, _ payload: [UInt8]) -> [UInt8] {
    let n = UInt32(payload.count + 1)
    return [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff), type] + payload
}

@Suite struct FrameTests {
    @Test func roundTripWhole() throws {
        for m in samples {
            #expect(try decodeAll(m.encoded()) == [m], "\(m)")
        }
        let stream = samples.flatMap { $0.encoded() }
        #expect(try decodeAll(stream) == samples)
    }

    /// The stream split at every byte (and fed a byte at a time) gives the same messages.
    @Test func splitAtEveryByte() throws {
        let stream = samples.flatMap { $0.encoded() }
        for cut in stride(from: 0, through: stream.count, by: 1) {
            var d = FrameDecoder()
            var out: [IPCMessage] = []
            d.feed(Array(stream[..<cut]))
            while let m = try d.next() { out.append(m) }
            d.feed(Array(stream[cut...]))
            while let m = try d.next() { out.append(m) }
            try d.finish()
            #expect(out == samples, "cut at \(cut)")
        }
        var d = FrameDecoder()
        var out: [IPCMessage] = []
        for b in stream {
            d.feed([b])
            while let m = try d.next() { out.append(m) }
        }
        #expect(out == samples)
        #expect(d.pending == 0)
    }

    /// Every frame with its payload cut short (the length prefix telling the truth about the
    /// shorter frame) is refused as truncated, never read past its end.
    @Test func everyTruncationRefused() {
        for m in samples {
            let whole = m.encoded()
            let type = whole[4]
            let payload = Array(whole[5...])
            for n in 0..<payload.count {
                #expect(throws: IPCError.self, "\(m) cut to \(n)") { try decodeAll(frame(type, Array(payload[..<n]))) }
            }
            // And a stream that stops inside the frame.
            for n in 1..<whole.count {
                #expect(throws: IPCError.endedInFrame(n), "\(m) stream cut at \(n)") { try decodeAll(Array(whole[..<n])) }
            }
        }
    }

    @Test func lengthsOutOfRange() throws {
        for n: UInt32 in [0, UInt32(IPCLimits.frame) + 1, 0x7fff_ffff, 0xffff_ffff] {
            var d = FrameDecoder()
            d.feed([UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)])
            #expect(throws: IPCError.badLength(Int(n))) { try d.next() }
            // Failed for good: what comes next is not believed.
            d.feed(IPCMessage.shutdown(grace: 1).encoded())
            #expect(throws: IPCError.badLength(Int(n))) { try d.next() }
            #expect(d.pending == 0)
        }
        // The largest frame allowed is taken (a chunk of the largest size with its header).
        let big = IPCMessage.messageChunk(transaction: 1, bytes: Array(repeating: 7, count: IPCLimits.chunk))
        #expect(try decodeAll(big.encoded()) == [big])
    }

    @Test func fieldsOutOfRange() {
        func refuses(_ bytes: [UInt8], _ error: IPCError, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(throws: error, sourceLocation: sourceLocation) { try decodeAll(bytes) }
        }
        refuses(frame(99, []), .unknownType(99))
        refuses(frame(1, [0, 1, 9]), .badValue(field: "role", value: 9))
        // Trailing bytes after a whole message.
        refuses(frame(2, [0, 0, 0, 1, 0]), .trailingBytes(1))
        // A bool that is neither 0 nor 1.
        refuses(frame(15, [0, 0, 0, 4, 2]), .badValue(field: "allowed", value: 2))
        // A string longer than its limit is refused before it is read.
        refuses(frame(12, [0, 0, 0, 1] + [0, 0, 0x10, 0x01]), .tooLong(field: "recipient", length: 4097, limit: IPCLimits.name))
        // A string with NUL, and one that is not UTF-8.
        refuses(frame(12, [0, 0, 0, 1, 0, 0, 0, 3, 0x61, 0, 0x62]), .badText(field: "recipient"))
        refuses(frame(12, [0, 0, 0, 1, 0, 0, 0, 2, 0xc3, 0x28]), .badText(field: "recipient"))
        // A chunk over 64 KiB.
        var w = FrameWriter(type: 21)
        w.u32(1)
        w.data(Array(repeating: 0, count: IPCLimits.chunk + 1))
        refuses(w.finish(), .tooLong(field: "chunk", length: IPCLimits.chunk + 1, limit: IPCLimits.chunk))
        // A reply code out of range, a status of another class, a reply line with CR.
        refuses(frame(25, [0, 0, 0, 1, 0x03, 0x84, 0]), .badValue(field: "reply code", value: 900))
        refuses(frame(25, [0, 0, 0, 1, 0x01, 0xf4, 1, 4, 0, 1, 0, 1]), .badValue(field: "enhanced status", value: 4))
        refuses(frame(25, [0, 0, 0, 1, 0x01, 0xf4, 0, 0, 1, 0, 0, 0, 3, 0x61, 13, 0x62]), .badText(field: "reply line"))
        // A courier's outcome: a status of its own class, one line of text.
        func outcome(_ kind: UInt8, _ status: String, _ text: String) -> [UInt8] {
            [0, 0, 0, 1, 0, 1, kind, 0, 0, 0, UInt8(status.utf8.count)] + Array(status.utf8) + [0, 0, 0, UInt8(text.utf8.count)] + Array(text.utf8) + [0]
        }
        #expect((try? decodeAll(frame(31, outcome(1, "2.1.5", "ok")))) == [.delivered(job: 1, outcomes: [IPCOutcome(.delivered, status: "2.1.5", text: "ok")])])
        refuses(frame(31, outcome(1, "5.1.1", "ok")), .badText(field: "status"))
        refuses(frame(31, outcome(2, "4.4", "ok")), .badText(field: "status"))
        refuses(frame(31, outcome(3, "5.1.1000", "ok")), .badText(field: "status"))
        refuses(frame(31, outcome(2, "4.4.1", "a\r\nX-Injected: 1")), .badText(field: "outcome text"))
        refuses(frame(31, outcome(9, "", "")), .badValue(field: "outcome", value: 9))
        // A message with no recipients; a recipient with no destination.
        var b = FrameWriter(type: 20)
        b.u32(1)
        b.string("a@b.test")
        b.u8(0)
        b.bool(false)
        b.string("")
        b.u8(0)
        b.string("127.0.0.2")
        b.string("")
        b.data([])
        b.count(0)
        refuses(b.finish(), .badValue(field: "recipients", value: 0))
        // A mailbox whose domain is not a domain.
        var r = FrameWriter(type: 13)
        r.u32(1)
        r.u8(1)
        r.count(1)
        r.u8(1)
        r.string("bob")
        r.string("exa mple..test")
        refuses(r.finish(), .badValue(field: "mailbox", value: 0))
        // A mail check with a TLS level out of range.
        var e = FrameWriter(type: 26)
        e.u32(1)
        e.string("a@b.test")
        e.u64(0)
        e.u8(3)
        refuses(e.finish(), .badValue(field: "tls", value: 3))
    }

    /// Seeded random frames and bit-flipped real ones: the decoder never crashes, throws only
    /// `IPCError`, and whatever it accepts encodes back to a frame that decodes the same.
    @Test func randomAndFlippedFrames() throws {
        let seed = UInt64(Int.random(in: 1...Int.max))
        var rng = SplitMix(seed: seed)
        var accepted = 0
        for round in 0..<20000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                let type = UInt8.random(in: 0...30, using: &rng)
                let n = Int.random(in: 0...64, using: &rng)
                bytes = frame(type, (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) })
            } else {
                bytes = samples.randomElement(using: &rng)!.encoded()
                for _ in 0...Int.random(in: 0...3, using: &rng) {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
                }
            }
            do {
                for m in try decodeAll(bytes) {
                    accepted += 1
                    #expect(try decodeAll(m.encoded()) == [m], "seed \(seed) round \(round)")
                }
            } catch {
                // Refused, as it should be, with a typed error (the type is the signature's).
                _ = error.description
            }
        }
        // Some random frames are valid messages (a shutdown is any 4 bytes): the check above ran.
        #expect(accepted > 0, "seed \(seed)")
    }
}
