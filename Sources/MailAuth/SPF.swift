// SPF (RFC 7208): check_host() over the `Resolver` protocol. Every term, modifier and macro; the
// 10-lookup and 2-void-lookup limits; the MX and PTR per-mechanism limits; each of the seven
// results exactly as §2.6 and §4–§8 give them. Section numbers below refer to RFC 7208.

import DNS
import SMTP
import Glibc
import Reactor
import Synchronization

public enum SPFResult: String, Sendable, Equatable, CaseIterable {
    case none, neutral, pass, fail, softfail, temperror, permerror
}

/// The outcome of a check: the result, why, and for `fail` the explanation (§6.2).
public struct SPFOutcome: Sendable, Equatable {
    public var result: SPFResult
    /// The domain whose record decided (the `<domain>` of the top-level check_host()).
    public var domain: String
    let decision: SPFReason
    /// For `fail`: the `exp=` text, or the default explanation.
    public var explanation: String?

    /// The mechanism that matched (`example.com: matched -all`), or why there is no match.
    public var reason: String { decision.description }
}

/// What decided a result, described only when asked.
enum SPFReason: Sendable, Equatable, CustomStringConvertible {
    case matched(domain: DNSName, Qualifier, Mechanism)
    case text(String)

    var description: String {
        switch self {
        case .matched(let d, let q, let m): return "\(d.text): matched \(q.symbol)\(m)"
        case .text(let t): return t
        }
    }
}

/// An IP address as SPF sees it.
public struct SPFAddress: Sendable, Equatable {
    public let bytes: [UInt8]  // 4 or 16
    public var isIPv6: Bool { bytes.count == 16 }

    public init?(_ text: String) {
        if let b = IPAddress.v4(text) {
            bytes = b
        } else if let b = IPAddress.v6(text) {
            // An IPv4-mapped IPv6 address is checked as IPv4 (§5).
            bytes = b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xFF && b[11] == 0xFF ? Array(b[12...]) : b
        } else {
            return nil
        }
    }

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public var text: String { IPAddress.text(bytes) }

    /// The `%{i}` form (§7.3): the dotted quad, or for IPv6 the 32 nibbles separated by dots.
    var dotted: String {
        isIPv6 ? bytes.flatMap { [String($0 >> 4, radix: 16), String($0 & 0xF, radix: 16)] }.joined(separator: ".") : text
    }

    /// The name its PTR records live at: `%{ir}.%{v}.arpa`.
    var reverseName: String {
        dotted.split(separator: ".").reversed().joined(separator: ".") + (isIPv6 ? ".ip6.arpa" : ".in-addr.arpa")
    }

    func matches(_ other: [UInt8], prefix: Int) -> Bool {
        guard other.count == bytes.count else { return false }
        var bits = prefix
        for i in 0..<bytes.count {
            if bits <= 0 { return true }
            let mask: UInt8 = bits >= 8 ? 0xFF : UInt8(0xFF << (8 - bits) & 0xFF)
            if bytes[i] & mask != other[i] & mask { return false }
            bits -= 8
        }
        return true
    }
}

public struct SPFChecker: Sendable {
    public let resolver: any Resolver
    /// Parsed records by text: the same few records are checked over and over.
    let parsed = ParsedRecords()
    /// The host name in `%{r}` (exp macros).
    public let receivingHost: String
    public let now: @Sendable () -> Int

    public init(resolver: any Resolver, receivingHost: String = "unknown", now: @escaping @Sendable () -> Int = { Int(time(nil)) }) {
        self.resolver = resolver
        self.receivingHost = receivingHost
        self.now = now
    }

    /// Checks MAIL FROM (or, for the null sender, the HELO identity as `postmaster@HELO`, §2.4).
    public func check(ip: SPFAddress, helo: String, mailFrom: String) async -> SPFOutcome {
        let sender = mailFrom.isEmpty ? "postmaster@\(helo)" : mailFrom
        return await checkHost(ip: ip, sender: sender, helo: helo)
    }

    /// check_host() for `sender`'s domain.
    public func checkHost(ip: SPFAddress, sender rawSender: String, helo: String) async -> SPFOutcome {
        var sender = rawSender
        var domain = rawSender
        if let at = rawSender.utf8.lastIndex(of: UInt8(ascii: "@")) {
            if at == rawSender.utf8.startIndex { sender = "postmaster" + rawSender }  // §4.3: empty local part
            domain = String(rawSender[rawSender.utf8.index(after: at)...])
        }
        // An internationalised domain (SMTPUTF8) is looked up by its A-labels: its SPF record
        // lives there, and the U-label name has none (a forger's `none`).
        if !domain.utf8.allSatisfy({ $0 < 0x80 }), let d = try? Domain(domain) { domain = d.ascii }
        var state = Evaluation(ip: ip, sender: sender, helo: helo)
        let result: (SPFResult, SPFReason)
        if let name = Self.validDomain(domain) {
            result = await evaluate(name, state: &state, depth: 0)
        } else {
            result = (.none, .text("no valid domain '\(domain)'"))
        }
        var outcome = SPFOutcome(result: result.0, domain: domain, decision: result.1, explanation: nil)
        if result.0 == .fail {
            outcome.explanation = state.explanation ?? "\(domain): Sender is not authorized by default to use '\(rawSender.isEmpty ? helo : rawSender)' in 'mfrom' identity"
        }
        return outcome
    }

    /// `v=spf1` (any case) alone or followed by a space (§4.5).
    static func isSPFRecord(_ b: [UInt8]) -> Bool {
        let tag: [UInt8] = Array("v=spf1".utf8)
        guard b.count >= 6 else { return false }
        for i in 0..<6 where (b[i] | (b[i] >= 0x41 && b[i] <= 0x5A ? 0x20 : 0)) != tag[i] { return false }
        return b.count == 6 || b[6] == 0x20
    }

    /// The state shared by a check and its includes and redirects.
    struct Evaluation {
        let ip: SPFAddress
        let sender: String
        let helo: String
        var lookups = 0
        var voids = 0
        var explanation: String?
        var validatedName: String?  // %{p}, computed once
    }

    enum Failure: Error { case temp(String), perm(String) }

    /// check_host() proper (§4): returns the result and the reason.
    /// §4.3: a malformed or single-label domain is not checked ("none").
    static func validDomain(_ text: String) -> DNSName? {
        guard let n = try? DNSName(text), n.labelCount >= 2 else { return nil }
        return n
    }

    func evaluate(_ domain: DNSName, state: inout Evaluation, depth: Int) async -> (SPFResult, SPFReason) {
        guard depth < 20 else { return (.permerror, .text("include/redirect nesting too deep")) }
        var domainText: String { domain.text }  // messages only
        guard domain.labelCount >= 2 else { return (.none, .text("no valid domain '\(domainText)'")) }
        // §4.4–4.5: the record.
        let answer = await resolver.immediateOrResolve(domain, .txt)
        switch answer.status {
        case .servFail, .timeout: return (.temperror, .text("DNS failure looking up the SPF record of \(domainText)"))
        case .formErr: return (.temperror, .text("malformed DNS answer for \(domainText)"))
        case .nxDomain, .noData: return (.none, .text("no SPF record at \(domainText)"))
        case .noError: break
        }
        // Select on the bytes, without building arrays for the other TXT records.
        var first: [UInt8]? = nil
        var count = 0
        for r in answer.records {
            guard case .txt(let strings) = r.data else { continue }
            let bytes = strings.count == 1 ? strings[0] : Array(strings.joined())
            if Self.isSPFRecord(bytes) {
                count += 1
                if first == nil { first = bytes }
            }
        }
        guard let first else { return (.none, .text("no SPF record at \(domainText)")) }
        guard count == 1 else { return (.permerror, .text("\(count) SPF records at \(domainText)")) }
        let terms: [Term]
        switch parsed.terms(for: first, at: domain) {
        case .success(let t): terms = t
        case .failure(let error): return (.permerror, .text("syntax error in the SPF record of \(domainText): \(error.message)"))
        }
        do {
            return try await run(terms, name: domain, state: &state, depth: depth)
        } catch {
            switch error {
            case .temp(let why): return (.temperror, .text(why))
            case .perm(let why): return (.permerror, .text(why))
            }
        }
    }

    /// Evaluates the directives left to right, then redirect (§4.6, §6.1), then the exp (§6.2).
    func run(_ terms: [Term], name: DNSName, state: inout Evaluation, depth: Int) async throws(Failure) -> (SPFResult, SPFReason) {
        var redirect: DomainSpec? = nil
        var exp: String? = nil
        for t in terms {
            if case .modifier(let modifier, let value) = t {
                if modifier == "redirect" {
                    if redirect != nil { throw .perm("redirect= given twice") }
                    redirect = DomainSpec(value)
                } else if modifier == "exp" {
                    if exp != nil { throw .perm("exp= given twice") }
                    exp = value
                }
            }
        }
        for t in terms {
            guard case .directive(let qualifier, let mechanism) = t else { continue }
            if try await matches(mechanism, name: name, state: &state, depth: depth) {
                let result = qualifier.result
                if result == .fail, let exp, state.explanation == nil || depth == 0 {
                    state.explanation = await explanation(exp, name: name, state: &state)
                }
                return (result, .matched(domain: name, qualifier, mechanism))
            }
        }
        if let redirect {
            // §6.1: no match and a redirect (an `all` would have matched first).
            try countLookup(&state)
            let target = try await self.target(redirect, name: name, state: &state)
            let (result, why) = await evaluate(target, state: &state, depth: depth + 1)
            if result == .none { return (.permerror, .text("redirect to \(target.text), which has no SPF record")) }
            return (result, why)
        }
        return (.neutral, .text("\(name.text): no mechanism matched"))
    }

    func countLookup(_ state: inout Evaluation) throws(Failure) {
        state.lookups += 1
        if state.lookups > 10 { throw .perm("more than 10 DNS-querying terms (§4.6.4)") }
    }

    /// A lookup inside a mechanism: temperror on failure; NXDOMAIN and NODATA count as void (§4.6.4).
    func lookup(_ n: DNSName, _ type: RecordType, _ state: inout Evaluation) async throws(Failure) -> DNSAnswer {
        let a = await resolver.immediateOrResolve(n, type)
        switch a.status {
        case .servFail, .timeout, .formErr: throw .temp("DNS failure looking up \(type) \(n.text)")
        case .nxDomain, .noData:
            state.voids += 1
            if state.voids > 2 { throw .perm("more than 2 void DNS lookups (§4.6.4)") }
        case .noError: break
        }
        return a
    }

    /// The name a domain-spec stands for: parsed once with the record when it has no macros.
    func target(_ spec: DomainSpec?, name: DNSName, state: inout Evaluation) async throws(Failure) -> DNSName {
        guard let spec else { return name }
        if let n = spec.name { return n }
        let text = try await expand(spec.text, domain: name.text, state: &state, forExplanation: false)
        guard let n = try? DNSName(text) else { throw .perm("invalid domain name '\(text)'") }
        return n
    }

    func addresses(_ name: DNSName, _ state: inout Evaluation) async throws(Failure) -> [[UInt8]] {
        let a = try await lookup(name, state.ip.isIPv6 ? .aaaa : .a, &state)
        return a.records.compactMap { r -> [UInt8]? in
            switch r.data {
            case .a(let b), .aaaa(let b): return b
            default: return nil
            }
        }
    }

    func matches(_ m: Mechanism, name: DNSName, state: inout Evaluation, depth: Int) async throws(Failure) -> Bool {
        switch m {
        case .all:
            return true
        case .ip4(let net, let prefix):
            return !state.ip.isIPv6 && state.ip.matches(net, prefix: prefix)
        case .ip6(let net, let prefix):
            return state.ip.isIPv6 && state.ip.matches(net, prefix: prefix)
        case .include(let spec):
            try countLookup(&state)
            let target = try await target(spec, name: name, state: &state)
            let (result, why) = await evaluate(target, state: &state, depth: depth + 1)
            switch result {
            case .pass: return true
            case .fail, .softfail, .neutral: return false
            case .temperror: throw .temp(why.description)
            case .permerror: throw .perm(why.description)
            case .none: throw .perm("include:\(target.text) has no SPF record")
            }
        case .a(let spec, let v4, let v6):
            try countLookup(&state)
            let target = try await target(spec, name: name, state: &state)
            let prefix = state.ip.isIPv6 ? v6 : v4
            return try await addresses(target, &state).contains { state.ip.matches($0, prefix: prefix) }
        case .mx(let spec, let v4, let v6):
            try countLookup(&state)
            let target = try await target(spec, name: name, state: &state)
            let mx = try await lookup(target, .mx, &state).mx
            if mx.count > 10 { throw .perm("more than 10 MX records for \(target.text) (§4.6.4)") }
            let prefix = state.ip.isIPv6 ? v6 : v4
            for host in mx where !host.exchange.isRoot {
                if try await addresses(host.exchange, &state).contains(where: { state.ip.matches($0, prefix: prefix) }) { return true }
            }
            return false
        case .ptr(let spec):
            try countLookup(&state)
            let target = try await target(spec, name: name, state: &state)
            return await validatedNames(&state).contains { $0.isSubdomain(of: target) }
        case .exists(let spec):
            try countLookup(&state)
            let target = try await target(spec, name: name, state: &state)
            // Always an A lookup, whatever the client's address family (§5.7).
            return !(try await lookup(target, .a, &state).records.isEmpty)
        }
    }

    /// The client's names confirmed by a forward lookup (§5.5): at most 10 PTR names are tried;
    /// DNS errors here mean "no match", not temperror.
    func validatedNames(_ state: inout Evaluation) async -> [DNSName] {
        guard let reverse = try? DNSName(state.ip.reverseName) else { return [] }
        let ptr = await resolver.immediateOrResolve(reverse, .ptr)
        var out: [DNSName] = []
        for name in ptr.names.prefix(10) {
            let a = await resolver.immediateOrResolve(name, state.ip.isIPv6 ? .aaaa : .a)
            let matched = a.records.contains { r in
                switch r.data {
                case .a(let b), .aaaa(let b): return b == state.ip.bytes
                default: return false
                }
            }
            if matched { out.append(name) }
        }
        return out
    }


    /// The explanation of a fail (§6.2): errors of any kind mean "no explanation".
    func explanation(_ spec: String, name: DNSName, state: inout Evaluation) async -> String? {
        let domain = name.text
        guard let target = try? await expand(spec, domain: domain, state: &state, forExplanation: false),
            let name = try? DNSName(target)
        else { return nil }
        let a = await resolver.immediateOrResolve(name, .txt)
        guard a.status == .noError, a.txt.count == 1 else { return nil }
        guard let text = try? await expand(a.txt[0], domain: domain, state: &state, forExplanation: true, isDomainSpec: false) else { return nil }
        return text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F }) ? text : nil
    }
}

/// A bounded cache of parsed records (cleared when full).
final class ParsedRecords: Sendable {
    /// By the domain that published it (hashing a short name, not the record), with the record
    /// compared on a hit.
    let cache = Mutex<[DNSName: (record: [UInt8], terms: Result<[Term], Term.SyntaxError>)]>([:])

    func terms(for record: [UInt8], at domain: DNSName) -> Result<[Term], Term.SyntaxError> {
        if let hit = cache.withLock({ $0[domain] }), hit.record == record { return hit.terms }
        let r: Result<[Term], Term.SyntaxError>
        do {
            r = .success(try Term.parse(String(decoding: record, as: UTF8.self)))
        } catch {
            r = .failure(error)
        }
        cache.withLock { c in
            if c.count >= 4096 { c.removeAll(keepingCapacity: true) }
            c[domain] = (record, r)
        }
        return r
    }
}

extension SPFOutcome {
    /// The `Received-SPF:` header field (RFC 7208 §9.1), CRLF-terminated, for a check of
    /// `mailFrom` (or of the HELO identity when it is empty) from `ip`, made by `receiver`.
    public func receivedSPF(ip: SPFAddress, mailFrom: String, helo: String, receiver: String) -> String {
        // UTF-8 stays as it is (RFC 8616: an internationalised address is written, never altered);
        // control bytes go; in the comment and the quoted string the specials are escaped
        // (RFC 5322 quoted-pair) rather than dropped, so the address shown is the address.
        func clean(_ s: String, escaping specials: String) -> String {
            var out = ""
            for c in s.unicodeScalars where c.value >= 32 && c.value != 127 {
                if specials.unicodeScalars.contains(c) { out += "\\" }
                out.unicodeScalars.append(c)
            }
            return out
        }
        // The HELO name is a dot-atom there: specials are dropped (ternd refuses them anyway).
        let heloName = String(String.UnicodeScalarView(helo.unicodeScalars.filter { $0.value > 32 && $0.value != 127 && !"\"\\();".unicodeScalars.contains($0) }))
        let sender = clean(mailFrom.isEmpty ? "postmaster@\(helo)" : mailFrom, escaping: "()\\")
        let host = clean(receiver, escaping: "()\\")
        let comment: String
        switch result {
        case .pass: comment = "domain of \(sender) designates \(ip.text) as permitted sender"
        case .fail: comment = "domain of \(sender) does not designate \(ip.text) as permitted sender"
        case .softfail: comment = "transitioning domain of \(sender) does not designate \(ip.text) as permitted sender"
        case .neutral: comment = "\(ip.text) is neither permitted nor denied by domain of \(sender)"
        case .none: comment = "domain of \(sender) does not provide an SPF record"
        case .temperror: comment = "temporary error checking the SPF record of \(sender)"
        case .permerror: comment = "permanent error in the SPF record of \(sender)"
        }
        return "Received-SPF: \(result.rawValue) (\(host): \(comment))\r\n\tclient-ip=\(ip.text); envelope-from=\"\(clean(mailFrom, escaping: "\"\\"))\"; helo=\(heloName.isEmpty ? "unknown" : heloName);\r\n\treceiver=\(host); identity=\(mailFrom.isEmpty ? "helo" : "mailfrom")\r\n"
    }

    /// The text of a `550 5.7.23` refusal: the explanation, printable ASCII only, at most 200 bytes.
    public var refusalText: String {
        let text = String(decoding: (explanation ?? reason).utf8.filter { $0 >= 32 && $0 < 127 }.prefix(200), as: UTF8.self)
        return "SPF fail: \(text)"
    }
}
