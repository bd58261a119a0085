// DKIM (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463), SHA-1 and short RSA keys refused
// (RFC 8301). The verifier takes the message as it streams in: the header section is kept, the
// body goes through one hasher per (canonicalisation, l=) the signatures need, so no second pass;
// the key lookups run at the end through the configured `Resolver`.

import DNS
import SMTP
import Glibc
import Synchronization

/// The result of one signature, with the words RFC 8601 uses.
public enum DKIMResult: String, Sendable, Equatable {
    case none, pass, fail, neutral, policy, temperror, permerror
}

/// What became of one DKIM-Signature.
public struct DKIMVerification: Sendable, Equatable {
    public var result: DKIMResult
    /// `d=`, `s=`, `i=`, `a=` as far as they could be read ("" otherwise).
    public var domain: String
    public var selector: String
    public var identity: String
    public var algorithm: String
    /// Why, in a few words ("" for a pass).
    public var reason: String
    /// The first characters of `b=`, to tell signatures apart (RFC 6008 `header.b`).
    public var signaturePrefix: String
    /// The key record says `t=y`.
    public var testing: Bool

    /// The line `ternctl dkim verify` prints.
    public var line: String {
        if result == .none { return "none" }
        var s = "\(result.rawValue) d=\(domain.isEmpty ? "?" : domain) s=\(selector.isEmpty ? "?" : selector)"
        if !algorithm.isEmpty { s += " a=\(algorithm)" }
        if !reason.isEmpty { s += " (\(reason))" }
        return s
    }
}

/// Verifies the DKIM signatures of one message, fed in pieces.
public final class DKIMVerifier {
    public static let maxSignatures = 5

    struct Pending {
        var signature: DKIMSignature
        var field: HeaderField
        var hasher: Int
        /// Its place among the message's signatures.
        var index: Int
    }

    let splitter = HeaderSplitter()
    public private(set) var header = MessageHeader(fields: [])
    var pending: [Pending] = []
    var decided: [(Int, DKIMVerification)] = []
    var hashers: [BodyHasher] = []
    var bodyHashes: [[UInt8]]? = nil
    let now: Int
    let hashForSigning: Bool
    var signingHasher: Int? = nil
    /// With `hashForSigning`: the relaxed hash of the whole body, for a signature of our own.
    public private(set) var signingBodyHash: [UInt8]? = nil

    /// `now`: seconds since 1970, for `x=`. `hashForSigning`: also hash the body as our signer
    /// does (shared with a signature that needs the same), so that signing takes no second pass.
    public init(now: Int, hashForSigning: Bool = false) {
        self.now = now
        self.hashForSigning = hashForSigning
    }

    /// The next piece of the message (header section, then body), exactly as received.
    public func update(_ bytes: UnsafeRawBufferPointer) {
        if splitter.isDone { return feedBody(bytes) }
        guard let start = splitter.feed(bytes) else { return }
        startBody()
        feedBody(UnsafeRawBufferPointer(rebasing: bytes[start...]))
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    func feedBody(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        for h in hashers { h.update(bytes) }
    }

    /// The header is complete: read the signatures and set up the body hashers.
    func startBody() {
        header = MessageHeader.parse(splitter.header).0
        if hashForSigning { signingHasher = hasher(.relaxed, limit: nil) }
        let fields = header.all("dkim-signature")
        // The first `maxSignatures` are verified; the rest get one result saying so (a message
        // with thousands of signatures costs no more than one with five, and adds one line).
        if fields.count > Self.maxSignatures {
            let more = fields.count - Self.maxSignatures
            decided.append((Self.maxSignatures, DKIMVerification(
                result: .neutral, domain: "", selector: "", identity: "", algorithm: "",
                reason: "\(more) more signature(s) not evaluated (at most \(Self.maxSignatures) are)", signaturePrefix: "", testing: false)))
        }
        for (index, field) in fields.prefix(Self.maxSignatures).enumerated() {
            let sig: DKIMSignature
            do {
                sig = try DKIMSignature.parse(field.value)
            } catch {
                let tags = TagList.parse(Array(field.value)) ?? []
                func tag(_ k: String) -> String { tags.first { $0.0 == k }.map { TagList.text($0.1) } ?? "" }
                let result: DKIMResult = if case .syntax = error { .neutral } else { .permerror }
                decided.append((index, DKIMVerification(
                    result: result, domain: tag("d").lowercased(), selector: tag("s"), identity: tag("i"), algorithm: tag("a"),
                    reason: error.description, signaturePrefix: String(TagList.text(TagList.compact(Array(tag("b").utf8))).prefix(8)), testing: false)))
                continue
            }
            pending.append(Pending(signature: sig, field: field, hasher: hasher(sig.bodyCanonicalization, limit: sig.bodyLength), index: index))
        }
    }

    /// The hasher for these parameters, shared by every signature that needs them.
    func hasher(_ c: Canonicalization, limit: Int?) -> Int {
        if let i = hashers.firstIndex(where: { $0.canonicalization == c && $0.limit == limit }) { return i }
        hashers.append(BodyHasher(c, limit: limit))
        return hashers.count - 1
    }

    /// Ends the body: every hash is final afterwards.
    func endBody() -> [[UInt8]] {
        if let bodyHashes { return bodyHashes }
        if !splitter.isDone {
            splitter.finishWithoutBody()
            startBody()
        }
        let hashes = hashers.map { $0.finish() }
        bodyHashes = hashes
        if let signingHasher { signingBodyHash = hashes[signingHasher] }
        return hashes
    }

    /// The results when no key needs looking up (no signature, or none that got that far); nil
    /// otherwise, and then `finish(resolver:)` gives them.
    public func finishWithoutLookups() -> [DKIMVerification]? {
        _ = endBody()
        guard pending.isEmpty else { return nil }
        return Self.inHeaderOrder(decided)
    }

    /// The results by their signature's place; a single `none` for an unsigned message.
    static func inHeaderOrder(_ results: [(Int, DKIMVerification)]) -> [DKIMVerification] {
        if results.isEmpty {
            return [DKIMVerification(result: .none, domain: "", selector: "", identity: "", algorithm: "", reason: "", signaturePrefix: "", testing: false)]
        }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// Ends the message and checks each signature; one entry per DKIM-Signature in header order,
    /// or a single `none` when there is none.
    public func finish(resolver: any Resolver, keys: DKIMKeyCache = .shared) async -> [DKIMVerification] {
        let bodyHashes = endBody()
        var results = decided
        for p in pending {
            results.append((p.index, await verify(p, bodyHash: bodyHashes[p.hasher], length: hashers[p.hasher].length, resolver: resolver, keys: keys)))
        }
        return Self.inHeaderOrder(results)
    }

    func verify(_ p: Pending, bodyHash: [UInt8], length: Int, resolver: any Resolver, keys: DKIMKeyCache) async -> DKIMVerification {
        let sig = p.signature
        var v = DKIMVerification(
            result: .pass, domain: sig.domain, selector: sig.selector, identity: sig.identity, algorithm: sig.algorithm.rawValue,
            reason: "", signaturePrefix: Base64.encode(Array(sig.signature.prefix(6))), testing: false)
        func outcome(_ r: DKIMResult, _ why: String) -> DKIMVerification {
            v.result = r
            v.reason = why
            return v
        }
        if sig.algorithm == .rsaSHA1 { return outcome(.permerror, "rsa-sha1 is not accepted (RFC 8301)") }
        if let x = sig.expiration, x < now { return outcome(.permerror, "signature expired") }
        if let l = sig.bodyLength {
            if l > length { return outcome(.permerror, "l= is longer than the body") }
            if l < length { return outcome(.neutral, "l= covers only \(l) of \(length) body bytes") }
        }
        guard bodyHash == sig.bodyHash else { return outcome(.fail, "body hash did not verify") }
        guard let name = try? DNSName(sig.keyName) else { return outcome(.permerror, "bad key name \(sig.keyName)") }
        let answer = await resolver.immediateOrResolve(name, .txt)
        switch answer.status {
        case .noError: break
        case .noData, .nxDomain: return outcome(.permerror, "no key for signature")
        case .servFail, .timeout: return outcome(.temperror, "key lookup: \(answer.status)")
        case .formErr: return outcome(.permerror, "key lookup: \(answer.status)")
        }
        let key: CryptoKey
        let record: DKIMKeyRecord
        switch keys.key(name: sig.keyName, answer: answer) {
        case .failure(let e): return outcome(.permerror, e.description)
        case .success(let (r, k)):
            record = r
            guard let k else { return outcome(.permerror, "key revoked") }
            key = k
        }
        v.testing = record.testing
        guard record.keyType == sig.algorithm.keyType else { return outcome(.permerror, "key type k=\(record.keyType.rawValue) does not match a=\(sig.algorithm.rawValue)") }
        if let h = record.hashes, !h.contains("sha256") { return outcome(.permerror, "key does not allow sha256 (h=)") }
        if record.strict, !sig.identity.lowercased().hasSuffix("@" + sig.domain) { return outcome(.permerror, "key requires i= in d= exactly (t=s)") }
        if key.type == .rsa, key.bits < 1024 { return outcome(.permerror, "RSA key shorter than 1024 bits (RFC 8301)") }
        let data = Self.signedData(header: header, signature: sig, field: p.field)
        let ok = sig.algorithm == .ed25519SHA256 ? key.verify(SHA256Stream.digest(data), signature: sig.signature) : key.verify(data, signature: sig.signature)
        return ok ? v : outcome(.fail, "signature did not verify")
    }

    /// The header data a signature covers: the selected fields, then its own field without `b=`'s
    /// value and without the final CRLF, all in its header canonicalisation.
    static func signedData(header: MessageHeader, signature sig: DKIMSignature, field: HeaderField) -> [UInt8] {
        var data: [UInt8] = []
        data.reserveCapacity(1024)
        for f in header.select(sig.signedHeaders) { f.appendCanonical(sig.headerCanonicalization, to: &data) }
        let own = HeaderField(name: field.name, raw: DKIMSignature.withoutSignatureValue(field.raw))
        own.appendCanonical(sig.headerCanonicalization, to: &data, withCRLF: false)
        return data
    }
}

/// Finds where the header section ends in a stream: after the first empty line.
final class HeaderSplitter {
    var header: [UInt8] = []
    private(set) var isDone = false
    /// How much of CR LF CR LF was just seen; starts as after a CRLF so that a leading empty line
    /// ends an empty header.
    var matched = 2

    /// Takes the next piece: nil while the header goes on; the offset in `bytes` where the body
    /// starts once the header ended in it.
    func feed(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        var i = 0
        // A match begun in the previous piece (or the message's start) is finished byte by byte.
        while matched != 0, i < bytes.count {
            step(bytes[i])
            i += 1
            if matched == 4 { return done(bytes, at: i) }
        }
        // Then CR LF CR LF is looked for CR by CR (memchr).
        var from = i
        while from + 4 <= bytes.count, let cr = memchr(base + from, 13, bytes.count - from - 3) {
            let at = UnsafeRawPointer(cr) - base
            if bytes[at + 1] == 10, bytes[at + 2] == 13, bytes[at + 3] == 10 { return done(bytes, at: at + 4) }
            from = at + 1
        }
        // No end here: remember how much of CR LF CR LF the piece ends with.
        for b in bytes[max(i, bytes.count - 3)...] { step(b) }
        header += bytes
        return nil
    }

    @inline(__always) func step(_ b: UInt8) {
        switch b {
        case 13: matched = matched == 2 ? 3 : 1
        case 10: matched = matched == 1 ? 2 : matched == 3 ? 4 : 0
        default: matched = 0
        }
    }

    func done(_ bytes: UnsafeRawBufferPointer, at end: Int) -> Int {
        header += bytes[..<end]
        isDone = true
        return end
    }

    func finishWithoutBody() { isDone = true }
}

/// Parsed key records and their OpenSSL keys, by name and record text: verifying the mail of a busy
/// sender does not parse its key each time. Bounded; entries go when the record changes.
public final class DKIMKeyCache: Sendable {
    public static let shared = DKIMKeyCache()
    struct Entry {
        let text: [UInt8]
        let record: DKIMKeyRecord
        let key: CryptoKey?
    }
    let entries = Mutex<[String: Entry]>([:])
    let capacity: Int

    public init(capacity: Int = 4096) { self.capacity = capacity }

    /// The first TXT record of `answer` that reads as a DKIM key, and its key (nil when revoked).
    func key(name: String, answer: DNSAnswer) -> Result<(DKIMKeyRecord, CryptoKey?), DKIMSignature.ParseError> {
        let strings = answer.txtStrings
        // A hit: the cached record is still published (compared piece by piece, not joined).
        if let e = entries.withLock({ $0[name] }), strings.contains(where: { Self.same(e.text, $0) }) { return .success((e.record, e.key)) }
        let records = strings.map { Array($0.joined()) }
        var firstError = DKIMSignature.ParseError.syntax("no key record")
        for text in records {
            switch DKIMKeyRecord.parse(text) {
            case .failure(let e):
                firstError = e
                continue
            case .success(let record):
                var key: CryptoKey? = nil
                if !record.publicKey.isEmpty {
                    do {
                        key = try CryptoKey.publicKey(record.keyType, der: record.publicKey)
                    } catch {
                        return .failure(.syntax("unusable key: \(error)"))
                    }
                }
                entries.withLock {
                    if $0.count >= capacity { $0.removeAll() }
                    $0[name] = Entry(text: text, record: record, key: key)
                }
                return .success((record, key))
            }
        }
        return .failure(firstError)
    }
}

extension DKIMKeyCache {
    /// Whether `pieces` joined make `text`.
    static func same(_ text: [UInt8], _ pieces: [[UInt8]]) -> Bool {
        var i = 0
        for p in pieces {
            guard i + p.count <= text.count, text[i..<(i + p.count)].elementsEqual(p) else { return false }
            i += p.count
        }
        return i == text.count
    }
}

/// A key to sign with: `d=`, `s=` and the private key.
public struct DKIMSigningKey: Sendable {
    public let domain: String
    public let selector: String
    public let key: CryptoKey

    public init(domain: String, selector: String, key: CryptoKey) {
        self.domain = domain.lowercased()
        self.selector = selector
        self.key = key
    }

    public var algorithm: DKIMAlgorithm { key.type == .ed25519 ? .ed25519SHA256 : .rsaSHA256 }
}

/// Signs with `c=relaxed/relaxed`, over-signing the fields that matter to readers.
public enum DKIMSigner {
    /// Each is listed once more than it occurs, so that none can be added afterwards.
    public static let oversigned = ["from", "subject", "date", "to", "cc", "message-id", "reply-to"]

    /// The DKIM-Signature fields (one per key, CRLF-terminated) for a message whose header is
    /// `header` and whose relaxed body hash is `bodyHash`.
    public static func signatures(header: MessageHeader, bodyHash: [UInt8], keys: [DKIMSigningKey], time: Int) throws(CryptoError) -> [UInt8] {
        var names: [String] = []
        for n in oversigned {
            let count = header.all(n).count
            names += Array(repeating: n, count: count + 1)
        }
        var out: [UInt8] = []
        for k in keys {
            let head = "DKIM-Signature: v=1; a=\(k.algorithm.rawValue); c=relaxed/relaxed; d=\(k.domain); s=\(k.selector);\r\n\tt=\(time); h=\(names.joined(separator: ":"));\r\n\tbh=\(Base64.encode(bodyHash));\r\n\tb="
            let field = HeaderField(name: "dkim-signature", raw: Array(head.utf8))
            var data: [UInt8] = []
            data.reserveCapacity(1024)
            for f in header.select(names) { f.appendRelaxed(to: &data) }
            field.appendRelaxed(to: &data, withCRLF: false)
            let sig = try k.key.sign(k.key.type == .ed25519 ? SHA256Stream.digest(data) : data)
            let b64 = Array(Base64.encode(sig).utf8)
            var folded = Array(head.utf8)
            var i = 0
            while i < b64.count {
                if i > 0 { folded += [13, 10, 9] }
                folded += b64[i..<min(i + 72, b64.count)]
                i += 72
            }
            out += folded + [13, 10]
        }
        return out
    }

    /// `message` with its signatures prepended.
    public static func sign(_ message: [UInt8], keys: [DKIMSigningKey], time: Int) throws(CryptoError) -> [UInt8] {
        let (header, bodyStart) = MessageHeader.parse(message)
        let body = BodyHasher(.relaxed)
        body.update(message[bodyStart...])
        return try signatures(header: header, bodyHash: body.finish(), keys: keys, time: time) + message
    }
}
