// dkimload: DKIM signing and verifying throughput on one thread (perf/compare-dkim.sh).
//
//   dkimload [--size BYTES] [--seconds S] [--text plain|dense] [--only CASE]
//
// Prints one line per case: `CASE N messages/s`. The message is SIZE bytes of 76-column text with
// the usual header fields; keys are made at start and cached (a verifier's key comes from a static
// zone through the key cache, as a busy sender's would after the first message).
import ArgumentParser
import CTernSystem
import DNS
import Glibc
import MailAuth
import SMTP

/// The options (swift-argument-parser, as the other tools: an unknown option is an error).
struct Options: ParsableArguments {
    @Option(help: "Message size in bytes.") var size = 10240
    @Option(help: "Seconds per case.") var seconds = 3.0
    @Option(help: "plain (single spaces) or dense (a double space on every line).") var text = "plain"
    @Option(help: "Only this case (for profiling); all by default.") var only = ""

    func validate() throws {
        guard size > 0, seconds > 0 else { throw ValidationError("--size and --seconds must be positive") }
        guard text == "plain" || text == "dense" else { throw ValidationError("--text is plain or dense") }
    }
}
let options = Options.parseOrExit()
let size = options.size
let only = options.only
func wanted(_ name: String) -> Bool { only.isEmpty || only == name }
let seconds = options.seconds

func now() -> Double { Double(tern_monotonic_ns()) / 1e9 }

var text = "From: Alice <alice@example.test>\r\nTo: bob@example.org\r\nSubject: load\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <load@example.test>\r\n\r\n"
/// `plain`: text with single spaces, as most mail is; `dense`: a double space and so a rewrite on
/// every line, relaxed canonicalisation's worst ordinary case.
let style = options.text
let line = style == "dense"
    ? "The quick brown fox jumps over the lazy dog, again and again, all day  long.\r\n"
    : "The quick brown fox jumps over the lazy dog, again and again, all day long.\r\n"
while text.utf8.count < size { text += line }
let message = Array(text.utf8.prefix(size))

let rsa = try CryptoKey.generate(.rsa, bits: 2048)
let ed = try CryptoKey.generate(.ed25519)
func record(_ k: CryptoKey) throws -> ResourceRecord {
    let t = Array("v=DKIM1; k=\(k.type.rawValue); p=\(Base64.encode(try k.publicKeyBytes()))".utf8)
    let strings = stride(from: 0, to: t.count, by: 200).map { Array(t[$0..<min($0 + 200, t.count)]) }
    return ResourceRecord(name: try DNSName(k.type == .rsa ? "r._domainkey.example.test" : "e._domainkey.example.test"), type: .txt, ttl: 86_400, data: .txt(strings))
}
let zone = ZoneResolver(records: [try record(rsa), try record(ed)])
let rsaKey = DKIMSigningKey(domain: "example.test", selector: "r", key: rsa)
let edKey = DKIMSigningKey(domain: "example.test", selector: "e", key: ed)

/// Runs `body` for `seconds`; messages per second.
func rate(_ body: () throws -> Void) rethrows -> Double {
    var n = 0
    let start = now()
    var t = start
    while t - start < seconds {
        for _ in 0..<16 { try body() }
        n += 16
        t = now()
    }
    return Double(n) / (t - start)
}

func rateAsync(_ body: () async throws -> Void) async rethrows -> Double {
    var n = 0
    let start = now()
    var t = start
    while t - start < seconds {
        for _ in 0..<16 { try await body() }
        n += 16
        t = now()
    }
    return Double(n) / (t - start)
}

let stamp = Int(time(nil))
if wanted("sign-rsa2048") { print("sign-rsa2048 \(Int(try rate { _ = try DKIMSigner.sign(message, keys: [rsaKey], time: stamp) })) messages/s") }
if wanted("sign-ed25519") { print("sign-ed25519 \(Int(try rate { _ = try DKIMSigner.sign(message, keys: [edKey], time: stamp) })) messages/s") }

let signedRSA = try DKIMSigner.sign(message, keys: [rsaKey], time: stamp)
let signedEd = try DKIMSigner.sign(message, keys: [edKey], time: stamp)
// Off the main actor: each verification is plain calls on this thread (the zone answers at once).
await Task.detached { () async -> Void in
    func check(_ m: [UInt8]) async -> Bool {
        let v = DKIMVerifier(now: stamp)
        v.update(m)
        return await v.finish(resolver: zone)[0].result == .pass
    }
    let ok1 = await check(signedRSA)
    let ok2 = await check(signedEd)
    precondition(ok1 && ok2, "signatures must verify")
    if wanted("verify-rsa2048") { print("verify-rsa2048 \(Int(await rateAsync { _ = await check(signedRSA) })) messages/s") }
    if wanted("verify-ed25519") { print("verify-ed25519 \(Int(await rateAsync { _ = await check(signedEd) })) messages/s") }
    // The part that is not the public-key operation: canonicalising and hashing the body.
    if wanted("body-hash-relaxed") { print("body-hash-relaxed \(Int(rate { let h = BodyHasher(.relaxed); h.update(message); _ = h.finish() })) messages/s") }
    // The public-key operations alone, over 300 bytes of header data (key already loaded).
    let data = [UInt8](repeating: 65, count: 300)
    let rsaSig = try! rsa.sign(data), edSig = try! ed.sign(SHA256Stream.digest(data))
    if wanted("rsa2048-verify-only") { print("rsa2048-verify-only \(Int(rate { precondition(rsa.verify(data, signature: rsaSig)) })) per second") }
    let digest = SHA256Stream.digest(data)
    if wanted("ed25519-sign-only") { print("ed25519-sign-only \(Int(try! rate { _ = try ed.sign(digest) })) per second") }
    if wanted("ed25519-verify-only") { print("ed25519-verify-only \(Int(rate { precondition(ed.verify(SHA256Stream.digest(data), signature: edSig)) })) per second") }
    // Pieces of a verification, for profiling.
    let (header, _) = MessageHeader.parse(signedRSA)
    let sigField = header.all("dkim-signature")[0]
    if wanted("parse-header") { print("parse-header \(Int(rate { _ = MessageHeader.parse(signedRSA) })) per second") }
    if wanted("parse-signature") { print("parse-signature \(Int(rate { _ = try! DKIMSignature.parse(sigField.value) })) per second") }
    if wanted("verifier-no-lookup") {
        print("verifier-no-lookup \(Int(rate { let v = DKIMVerifier(now: stamp); v.update(signedRSA); _ = v.finishWithoutLookups() })) per second")
    }
    if wanted("body-sha256") { print("body-sha256 \(Int(rate { _ = SHA256Stream.digest(message) })) messages/s") }
}.value
