import DNS
import SMTP
import Foundation
import Testing

@testable import MailAuth

let dkimData = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Data").path

func dataFile(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: "\(dkimData)/\(name)"))) }

func crlf(_ s: String) -> [UInt8] { Array(s.replacingOccurrences(of: "\n", with: "\r\n").utf8) }

/// Verifies `message`, fed in pieces of `chunk` bytes, against the records in `zone`.
func verify(_ message: [UInt8], zone: String, chunk: Int = 1 << 30, now: Int = 1_800_000_000) async throws -> [DKIMVerification] {
    let v = DKIMVerifier(now: now)
    var i = 0
    while i < message.count {
        v.update(Array(message[i..<min(i + chunk, message.count)]))
        i += chunk
    }
    return await v.finish(resolver: try ZoneResolver.parse(zone, file: "dkim.zone"), keys: DKIMKeyCache())
}

/// A zone publishing `key` at SELECTOR._domainkey.example.test, with extra tags.
func keyZone(_ keys: [(String, CryptoKey)], tags: String = "") throws -> String {
    var z = "$ORIGIN example.test.\n"
    for (selector, key) in keys {
        let p = Base64.encode(try key.publicKeyBytes())
        let text = "v=DKIM1; k=\(key.type.rawValue); \(tags)p=\(p)"
        let strings = stride(from: 0, to: text.count, by: 200).map { "\"" + String(Array(text)[$0..<min($0 + 200, text.count)]) + "\"" }
        z += "\(selector)._domainkey TXT \(strings.joined(separator: " "))\n"
    }
    return z
}

let sampleMessage = crlf("""
    From: Alice <alice@example.test>
    To: bob@example.org
    Subject: Lunch?
    Date: Sun, 22 Nov 2026 10:00:00 +0000
    Message-ID: <1@example.test>

    Are we  still on for lunch?\t
    \tSee you there.


    """)

/// Keys are slow to make: once for the suite.
let rsaKey = try! CryptoKey.generate(.rsa, bits: 2048)
let edKey = try! CryptoKey.generate(.ed25519)

@Suite("DKIM")
struct DKIMTests {
    @Test("relaxed and simple canonicalisation: RFC 6376 §3.4.6's example, byte for byte")
    func canonicalisation() {
        let (header, start) = MessageHeader.parse(crlf("A: X\nB : Y\t\n\tZ  \n\n C \nD \t E\n\n\n"))
        #expect(header.fields.map { $0.relaxed() } == [Array("a:X\r\n".utf8), Array("b:Y Z\r\n".utf8)])
        #expect(header.fields.map { $0.simple() } == [Array("A: X\r\n".utf8), Array("B : Y\t\r\n\tZ  \r\n".utf8)])
        let body = Array(crlf("A: X\nB : Y\t\n\tZ  \n\n C \nD \t E\n\n\n")[start...])
        #expect(Self.hash(.relaxed, body) == SHA256Stream.digest(Array(" C\r\nD E\r\n".utf8)))
        #expect(Self.hash(.simple, body) == SHA256Stream.digest(Array(" C \r\nD \t E\r\n".utf8)))
        // Empty bodies: simple is one CRLF, relaxed is nothing (RFC 6376 §3.4.3, §3.4.4).
        #expect(Base64.encode(Self.hash(.simple, [])) == "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=")
        #expect(Base64.encode(Self.hash(.relaxed, [])) == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        #expect(Self.hash(.relaxed, Array("  \r\n\r\n".utf8)) == SHA256Stream.digest([]), "whitespace-only lines are empty lines")
        // No final line end: one is added; a lone CR stays a byte.
        #expect(Self.hash(.simple, Array("x".utf8)) == SHA256Stream.digest(Array("x\r\n".utf8)))
        #expect(Self.hash(.relaxed, Array("a\rb \r\n".utf8)) == SHA256Stream.digest(Array("a\rb\r\n".utf8)))
        // l= counts canonical bytes: only the first ones are hashed, all are counted.
        let limited = BodyHasher(.relaxed, limit: 3)
        limited.update(Array("abcdef\r\n".utf8))
        #expect(limited.finish() == SHA256Stream.digest(Array("abc".utf8)))
        #expect(limited.length == 8)
    }

    /// RFC 6376 §3.4.3/§3.4.4 written the plain way: lines (ended by CRLF), then the rules.
    static func reference(_ c: Canonicalization, _ body: [UInt8]) -> [UInt8] {
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        var i = 0
        while i < body.count {
            if body[i] == 13, i + 1 < body.count, body[i + 1] == 10 {
                lines.append(current)
                current = []
                i += 2
                continue
            }
            current.append(body[i])
            i += 1
        }
        if !current.isEmpty { lines.append(current) }
        if c == .relaxed {
            lines = lines.map { line in
                var out: [UInt8] = []
                var space = false
                for b in line {
                    if b == 32 || b == 9 { space = true; continue }
                    if space { out.append(32) }
                    space = false
                    out.append(b)
                }
                return out
            }
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        if lines.isEmpty { return c == .simple ? [13, 10] : [] }
        return lines.flatMap { $0 + [13, 10] }
    }

    @Test("the fast paths agree with the plain reading of the rules on random bodies, fed whole and in pieces")
    func canonicalisationFuzz() {
        var rng = SystemRandomNumberGenerator()
        let alphabet: [[UInt8]] = [Array("word".utf8), Array("x".utf8), [32], [32, 32], [9], [13, 10], [13], [10], [0xC3, 0xA9], Array("long-run-of-letters-without-blanks".utf8)]
        for round in 0..<2000 {
            var body: [UInt8] = []
            let parts = Int.random(in: 0..<(round % 10 == 0 ? 400 : 40), using: &rng)
            for _ in 0..<parts { body += alphabet.randomElement(using: &rng)! }
            for c in [Canonicalization.relaxed, .simple] {
                let expected = SHA256Stream.digest(Self.reference(c, body))
                let whole = BodyHasher(c)
                whole.update(body)
                #expect(whole.finish() == expected, "\(c) \(body)")
                let pieces = BodyHasher(c)
                var at = 0
                while at < body.count {
                    let n = Int.random(in: 1...40, using: &rng)
                    pieces.update(Array(body[at..<min(at + n, body.count)]))
                    at += n
                }
                #expect(pieces.finish() == expected, "\(c) in pieces: \(body)")
            }
        }
    }

    static func hash(_ c: Canonicalization, _ body: [UInt8]) -> [UInt8] {
        let h = BodyHasher(c)
        h.update(body)
        let whole = h.finish()
        // Byte by byte gives the same.
        let s = BodyHasher(c)
        for b in body { s.update([b]) }
        #expect(s.finish() == whole)
        return whole
    }

    @Test("base64 both ways, whitespace skipped, junk refused")
    func base64() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Array(Base64.encode(bytes).utf8)) == bytes)
        }
        #expect(Base64.decode(Array("aGVs\r\n\tbG8=".utf8)) == Array("hello".utf8))
        #expect(Base64.decode(Array("aGV*".utf8)) == nil)
        #expect(Base64.decode(Array("a".utf8)) == nil)
    }

    @Test("RFC 8463 Appendix A.3: both signatures verify, fed whole or in pieces; changed, they fail")
    func rfc8463() async throws {
        let message = try dataFile("rfc8463-a3.eml")
        let zone = String(decoding: try dataFile("rfc8463.zone"), as: UTF8.self)
        for chunk in [1, 7, 64, 100_000] {
            let results = try await verify(message, zone: zone, chunk: chunk)
            #expect(results.map(\.result) == [.pass, .pass], "chunk \(chunk): \(results)")
            #expect(results.map(\.selector) == ["brisbane", "test"])
            #expect(results.map(\.algorithm) == ["ed25519-sha256", "rsa-sha256"])
        }
        let text = String(decoding: message, as: UTF8.self)
        let body = try await verify(Array(text.replacingOccurrences(of: "hungry yet", with: "hungry now").utf8), zone: zone)
        #expect(body.map(\.result) == [.fail, .fail])
        #expect(body.allSatisfy { $0.reason == "body hash did not verify" })
        let subject = try await verify(Array(text.replacingOccurrences(of: "Subject: Is dinner ready?", with: "Subject: Is dinner ready!").utf8), zone: zone)
        #expect(subject.map(\.result) == [.fail, .fail])
        #expect(subject.allSatisfy { $0.reason == "signature did not verify" })
        // Relaxed header canonicalisation: case and whitespace changes in fields do not matter.
        let reflowed = try await verify(Array(text.replacingOccurrences(of: "Subject: Is dinner ready?", with: "SUBJECT:   Is dinner\r\n  ready?").utf8), zone: zone)
        #expect(reflowed.map(\.result) == [.pass, .pass])
    }

    @Test("what we sign verifies: RSA and Ed25519, one or both; additions to over-signed fields break it")
    func signAndVerify() async throws {
        let keys = [DKIMSigningKey(domain: "Example.Test", selector: "r", key: rsaKey), DKIMSigningKey(domain: "example.test", selector: "e", key: edKey)]
        let zone = try keyZone([("r", rsaKey), ("e", edKey)])
        let signed = try DKIMSigner.sign(sampleMessage, keys: keys, time: 1_795_000_000)
        let results = try await verify(signed, zone: zone, chunk: 13)
        #expect(results.map(\.result) == [.pass, .pass], "\(results)")
        #expect(results.map(\.domain) == ["example.test", "example.test"])
        let text = String(decoding: signed, as: UTF8.self)
        #expect(text.contains("c=relaxed/relaxed; d=example.test; s=r;"))
        #expect(text.contains("h=from:from:subject:subject:date:date:to:to:cc:message-id:message-id:reply-to;"))
        // A second From or Subject added on top breaks every signature.
        for added in ["From: mallory@evil.example\r\n", "Subject: Urgent\r\n", "Cc: x@evil.example\r\n"] {
            let forged = try await verify(Array(added.utf8) + signed, zone: zone)
            #expect(forged.map(\.result) == [.fail, .fail], "\(added)")
        }
        // A field not signed may be added.
        let relayed = try await verify(Array("Received: from a by b; Sun, 22 Nov 2026 10:00:01 +0000\r\n".utf8) + signed, zone: zone)
        #expect(relayed.map(\.result) == [.pass, .pass])
        // A body changed in whitespace only still verifies with relaxed/relaxed; changed words do not.
        let spaced = String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "Are we  still", with: "Are we still")
        #expect(try await verify(Array(spaced.utf8), zone: zone).map(\.result) == [.pass, .pass])
        let changed = String(decoding: signed, as: UTF8.self).replacingOccurrences(of: "lunch?", with: "dinner?")
        #expect(try await verify(Array(changed.utf8), zone: zone).map(\.result) == [.fail, .fail])
        #expect(try await verify(sampleMessage, zone: zone).map(\.result) == [.none], "unsigned")
    }

    @Test("5,000 DKIM-Signature fields: the first five are verified, the rest make one neutral result saying how many were skipped")
    func manySignatures() async throws {
        let zone = try keyZone([("r", rsaKey)])
        let signed = try DKIMSigner.sign(sampleMessage, keys: [DKIMSigningKey(domain: "example.test", selector: "r", key: rsaKey)], time: 1_795_000_000)
        let junk = String(repeating: "DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=r; h=from; bh=AAAA; b=AAAA\r\n", count: 4999)
        // Behind our signature, in the header: it is the first one, the others follow.
        var text = String(decoding: signed, as: UTF8.self)
        text.insert(contentsOf: junk, at: text.range(of: "From: Alice")!.lowerBound)
        let results = try await verify(Array(text.utf8), zone: zone)
        #expect(results.count == 6, "\(results.count) results")
        #expect(results.first?.result == .pass)
        #expect(results.last?.result == .neutral && results.last?.reason == "4995 more signature(s) not evaluated (at most 5 are)", "\(String(describing: results.last))")
        let line = AuthenticationResults.header(authservID: "mx.test", spf: nil, dkim: results)
        #expect(line.components(separatedBy: "dkim=").count - 1 == 6, "one line each for five, one for the rest")
    }

    /// `sampleMessage` signed by rsaKey, its signature's tags then changed by `edit`: the checks
    /// before the cryptography must catch it, with their own reason.
    func signedWith(tags edit: (String) -> String) throws -> [UInt8] {
        let signed = String(decoding: try DKIMSigner.sign(sampleMessage, keys: [DKIMSigningKey(domain: "example.test", selector: "r", key: rsaKey)], time: 1_795_000_000), as: UTF8.self)
        return Array(edit(signed).utf8)
    }

    @Test("RFC 8301 and RFC 6376 rules: rsa-sha1, short keys, expiry, l=, key record tags, DNS failures, limits")
    func policies() async throws {
        let zone = try keyZone([("r", rsaKey)])
        func first(_ m: [UInt8], zone z: String? = nil, now: Int = 1_800_000_000) async throws -> DKIMVerification {
            try await verify(m, zone: z ?? zone, now: now)[0]
        }
        let sha1 = try await first(try signedWith { $0.replacingOccurrences(of: "a=rsa-sha256", with: "a=rsa-sha1") })
        #expect(sha1.result == .permerror && sha1.reason.contains("rsa-sha1"))
        let expired = try await first(try signedWith { $0.replacingOccurrences(of: "t=1795000000;", with: "t=1795000000; x=1795000100;") })
        #expect(expired.result == .permerror && expired.reason == "signature expired")
        let badX = try await first(try signedWith { $0.replacingOccurrences(of: "t=1795000000;", with: "t=1795000000; x=1;") })
        #expect(badX.result == .neutral && badX.reason.contains("x= is before t="))
        let noFrom = try await first(try signedWith { $0.replacingOccurrences(of: "h=from:from:", with: "h=") })
        #expect(noFrom.result == .neutral && noFrom.reason.contains("From"), "\(noFrom)")
        let noBH = try await first(try signedWith { $0.replacingOccurrences(of: "bh=", with: "xh=") })
        #expect(noBH.result == .neutral && noBH.reason.contains("missing bh="))
        // i= outside d= is a syntax error; i= inside is fine unless the key says t=s.
        let foreignI = try await first(try signedWith { $0.replacingOccurrences(of: "s=r;", with: "s=r; i=a@evil.example;") })
        #expect(foreignI.result == .neutral && foreignI.reason.contains("i="))
        // Key problems.
        #expect(try await first(try signedWith { $0 }, zone: "$ORIGIN example.test.\nother TXT \"x\"\n").reason == "no key for signature")
        #expect(try await first(try signedWith { $0 }, zone: "$ORIGIN example.test.\nr._domainkey SERVFAIL\n").result == .temperror)
        #expect(try await first(try signedWith { $0 }, zone: "$ORIGIN example.test.\nr._domainkey TXT \"v=DKIM1; k=rsa; p=\"\n").reason == "key revoked")
        #expect(try await first(try signedWith { $0 }, zone: try keyZone([("r", rsaKey)], tags: "h=sha1; ")).reason.contains("h="))
        #expect(try await first(try signedWith { $0 }, zone: try keyZone([("r", rsaKey)], tags: "s=other; ")).result == .permerror)
        #expect(try await first(try signedWith { $0 }, zone: try keyZone([("r", edKey)])).reason.contains("does not match"))
        let testing = try await first(try signedWith { $0 }, zone: try keyZone([("r", rsaKey)], tags: "t=y; "))
        #expect(testing.result == .pass && testing.testing)
        // t=s: i= must be exactly d=; a subdomain passes otherwise (the signature covers i=, so re-sign).
        let subI = try DKIMSigner.sign(sampleMessage, keys: [DKIMSigningKey(domain: "example.test", selector: "r", key: rsaKey)], time: 1)
        #expect(try await first(subI, zone: try keyZone([("r", rsaKey)], tags: "t=s; ")).result == .pass)
        // A 512-bit RSA key is refused even when the signature is right.
        let weak = try CryptoKey.generate(.rsa, bits: 512)
        let weakSigned = try DKIMSigner.sign(sampleMessage, keys: [DKIMSigningKey(domain: "example.test", selector: "w", key: weak)], time: 1)
        let short = try await first(weakSigned, zone: try keyZone([("w", weak)]))
        #expect(short.result == .permerror && short.reason.contains("1024"), "\(short)")
    }

    @Test("l=: a signature covering part of the body is not a pass; more than 5 signatures are not all checked")
    func lengthAndCount() async throws {
        let zone = try keyZone([("r", rsaKey)])
        // l= of the whole canonical body verifies as pass; appended text makes it partial.
        let h = BodyHasher(.relaxed)
        h.update(Array(sampleMessage[MessageHeader.parse(sampleMessage).1...]))
        _ = h.finish()
        let (header, start) = MessageHeader.parse(sampleMessage)
        let withL = try Self.signWithTags(header: header, body: Array(sampleMessage[start...]), extra: "l=\(h.length); ", key: rsaKey)
        #expect(try await verify(withL + Array(sampleMessage), zone: zone).map(\.result) == [.pass])
        let appended = withL + Array(sampleMessage) + Array("Appended by someone else\r\n".utf8)
        let partial = try await verify(appended, zone: zone)[0]
        #expect(partial.result == .neutral && partial.reason.contains("covers only"), "\(partial)")
        let signed = try DKIMSigner.sign(sampleMessage, keys: [DKIMSigningKey(domain: "example.test", selector: "r", key: rsaKey)], time: 1)
        let sig = Array(signed[..<(signed.count - sampleMessage.count)])
        let six = try await verify(Array(repeating: sig, count: 6).joined() + sampleMessage, zone: zone)
        #expect(six.count == 6)
        #expect(six.prefix(5).allSatisfy { $0.result == .pass })
        #expect(six[5].result == .neutral && six[5].reason.contains("more signature(s) not evaluated (at most 5 are)"))
    }

    /// A signature with extra tags, made by hand the way the signer does.
    static func signWithTags(header: MessageHeader, body: [UInt8], extra: String, key: CryptoKey) throws -> [UInt8] {
        let bh = BodyHasher(.relaxed)
        bh.update(body)
        let head = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=r; \(extra)h=from:subject; bh=\(Base64.encode(bh.finish())); b="
        var data: [UInt8] = []
        for f in header.select(["from", "subject"]) { data += f.relaxed() }
        data += HeaderField(name: "dkim-signature", raw: Array(head.utf8)).relaxed(withCRLF: false)
        return Array((head + Base64.encode(try key.sign(data)) + "\r\n").utf8)
    }

    @Test("keys: PEM round trip, DKIM p= forms, junk refused")
    func keys() throws {
        for key in [rsaKey, edKey] {
            let again = try CryptoKey.privateKey(pem: try key.privatePEM())
            #expect(try again.publicKeyBytes() == key.publicKeyBytes())
            let pub = try CryptoKey.publicKey(key.type, der: try key.publicKeyBytes())
            let data = Array("data".utf8)
            #expect(pub.verify(data, signature: try key.sign(data)))
            #expect(!pub.verify(data + [0], signature: try key.sign(data)))
        }
        #expect(rsaKey.bits == 2048)
        #expect(throws: CryptoError.self) { try CryptoKey.privateKey(pem: Array("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".utf8)) }
        #expect(throws: CryptoError.self) { try CryptoKey.publicKey(.ed25519, der: [1, 2, 3]) }
        #expect(throws: CryptoError.self) { try CryptoKey.publicKey(.rsa, der: [0x30, 0x03, 1, 2, 3]) }
        #expect(throws: CryptoError.self) { try CryptoKey.publicKey(.rsa, der: try edKey.publicKeyBytes()) }
    }
}
