// DMARC (RFC 7489): the policy record at _dmarc.DOMAIN (falling back to the organisational
// domain), identifier alignment of SPF and DKIM with the From domain, p/sp/pct. Reports (rua/ruf)
// are parsed and kept, not sent.

import DNS
import SMTP

public enum DMARCPolicy: String, Sendable, Equatable {
    case none, quarantine, reject
}

/// A parsed DMARC record.
public struct DMARCRecord: Sendable, Equatable {
    public var policy: DMARCPolicy
    public var subdomainPolicy: DMARCPolicy?
    public var strictDKIM: Bool
    public var strictSPF: Bool
    public var percent: Int
    public var reportURIs: [String]

    /// nil when the text is not a DMARC record (RFC 7489 §6.6.3: then there is no policy).
    public static func parse(_ text: String) -> DMARCRecord? {
        guard let tags = TagList.parse(Array(text.utf8)), let first = tags.first, first.0 == "v", TagList.text(first.1) == "DMARC1" else { return nil }
        var t: [String: String] = [:]
        for (k, v) in tags { t[k.lowercased()] = TagList.text(v) }
        func policy(_ s: String?) -> DMARCPolicy?? {
            guard let s else { return .some(nil) }
            guard let p = DMARCPolicy(rawValue: s.lowercased()) else { return nil }
            return .some(p)
        }
        // p= is required; a record without a valid one but with rua= counts as p=none (§6.6.3).
        var p: DMARCPolicy
        if let given = t["p"] {
            guard let valid = DMARCPolicy(rawValue: given.lowercased()) else {
                guard t["rua"] != nil else { return nil }
                return DMARCRecord(policy: .none, subdomainPolicy: nil, strictDKIM: false, strictSPF: false, percent: 100, reportURIs: [])
            }
            p = valid
        } else {
            guard t["rua"] != nil else { return nil }
            p = .none
        }
        guard let sp = policy(t["sp"]) else { return nil }
        func alignment(_ k: String) -> Bool? {
            switch t[k]?.lowercased() {
            case nil, "r": false
            case "s": true
            default: nil
            }
        }
        guard let adkim = alignment("adkim"), let aspf = alignment("aspf") else { return nil }
        var pct = 100
        if let s = t["pct"] {
            guard let n = Int(s), n >= 0, n <= 100 else { return nil }
            pct = n
        }
        let rua = (t["rua"] ?? "").split(separator: ",").map { String($0).trimmingWhitespace }
        return DMARCRecord(policy: p, subdomainPolicy: sp, strictDKIM: adkim, strictSPF: aspf, percent: pct, reportURIs: rua)
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

public enum DMARCResult: String, Sendable, Equatable {
    case none, pass, fail, temperror, permerror
}

/// The outcome for one message.
public struct DMARCOutcome: Sendable, Equatable {
    public var result: DMARCResult
    /// The From domain (ASCII), "" when there is not exactly one.
    public var fromDomain: String
    /// The record's p= (or sp= for a subdomain), when a record was found.
    public var publishedPolicy: DMARCPolicy?
    /// What to do with the message: the policy, after pct= sampling; `.none` on pass.
    public var disposition: DMARCPolicy
    public var spfAligned: Bool
    public var dkimAligned: Bool
    /// Which of the DKIM results passed aligned (indices into `DMARCInputs.dkim`).
    public var alignedSignatures: [Int] = []
    public var reason: String
}

/// What DMARC needs from the other checks.
public struct DMARCInputs: Sendable {
    public var spf: SPFResult
    /// The domain SPF checked: of MAIL FROM, or the HELO name for the null sender.
    public var spfDomain: String
    public var dkim: [DKIMVerification]

    public init(spf: SPFResult, spfDomain: String, dkim: [DKIMVerification]) {
        self.spf = spf
        self.spfDomain = spfDomain
        self.dkim = dkim
    }
}

public struct DMARCChecker: Sendable {
    let resolver: any Resolver
    let suffixes: PublicSuffixList
    /// 0..<100, for pct= (a random number by default).
    let sample: @Sendable () -> Int

    public init(resolver: any Resolver, suffixes: PublicSuffixList, sample: @escaping @Sendable () -> Int = { Int.random(in: 0..<100) }) {
        self.resolver = resolver
        self.suffixes = suffixes
        self.sample = sample
    }

    /// Evaluates the message whose header is `header`.
    ///
    /// A message without exactly one author domain (RFC 7489 §6.6.1: two From fields, two
    /// addresses or a group in one, bytes that are no address) would otherwise pass as permerror
    /// whatever the domains publish: each domain found in its From fields is evaluated, and the
    /// strictest outcome applies (a `p=reject` among them rejects). Only a From without any
    /// domain is permerror.
    public func check(header: MessageHeader, inputs: DMARCInputs) async -> DMARCOutcome {
        let froms = header.all("from")
        if froms.count == 1, let from = FromAddress.singleDomain(froms[0].unfoldedValue) {
            return await check(from: from, inputs: inputs)
        }
        var domains: [String] = []
        for f in froms { for d in FromAddress.anyDomains(f.unfoldedValue) where !domains.contains(d) { domains.append(d) } }
        let why = froms.count == 1 ? "From has no single address with a domain" : "\(froms.count) From fields"
        guard !domains.isEmpty else {
            return DMARCOutcome(
                result: .permerror, fromDomain: "", publishedPolicy: nil, disposition: .none, spfAligned: false, dkimAligned: false, alignedSignatures: [], reason: why)
        }
        var worst: DMARCOutcome? = nil
        for d in domains {
            let o = await check(from: d, inputs: inputs)
            if worst == nil || o.severity > worst!.severity { worst = o }
        }
        var o = worst!
        o.reason = "\(why) (\(domains.joined(separator: ", "))): the strictest applies: \(o.reason)"
        return o
    }

    /// Evaluates one author domain.
    func check(from: String, inputs: DMARCInputs) async -> DMARCOutcome {
        var outcome = DMARCOutcome(result: .none, fromDomain: "", publishedPolicy: nil, disposition: .none, spfAligned: false, dkimAligned: false, alignedSignatures: [], reason: "")
        outcome.fromDomain = from
        // Policy discovery (§6.6.3): the From domain, then its organisational domain.
        let org = suffixes.organizationalDomain(from) ?? from
        var record: DMARCRecord? = nil
        var atOrg = false
        switch await lookup(from) {
        case .temporary:
            outcome.result = .temperror
            outcome.reason = "DNS failure looking up _dmarc.\(from)"
            return outcome
        case .found(let r): record = r
        case .absent:
            if org != from {
                switch await lookup(org) {
                case .temporary:
                    outcome.result = .temperror
                    outcome.reason = "DNS failure looking up _dmarc.\(org)"
                    return outcome
                case .found(let r):
                    record = r
                    atOrg = true
                case .absent: break
                }
            }
        }
        guard let record else {
            outcome.reason = "no DMARC record for \(from)"
            return outcome
        }
        let policy = atOrg ? (record.subdomainPolicy ?? record.policy) : record.policy
        outcome.publishedPolicy = policy
        func aligned(_ domain: String, strict: Bool) -> Bool {
            guard let a = try? Domain(domain).ascii else { return false }
            if a == from { return true }
            return !strict && suffixes.organizationalDomain(a) == org
        }
        outcome.spfAligned = inputs.spf == .pass && aligned(inputs.spfDomain, strict: record.strictSPF)
        outcome.alignedSignatures = inputs.dkim.indices.filter { inputs.dkim[$0].result == .pass && aligned(inputs.dkim[$0].domain, strict: record.strictDKIM) }
        outcome.dkimAligned = !outcome.alignedSignatures.isEmpty
        if outcome.spfAligned || outcome.dkimAligned {
            outcome.result = .pass
            outcome.reason = outcome.dkimAligned ? "aligned DKIM pass" : "aligned SPF pass"
            return outcome
        }
        outcome.result = .fail
        outcome.reason = "neither SPF nor DKIM passed aligned with \(from)"
        // pct= (§6.6.4): outside the sample, the next weaker policy applies.
        if record.percent < 100, sample() >= record.percent {
            outcome.disposition = policy == .reject ? .quarantine : .none
        } else {
            outcome.disposition = policy
        }
        return outcome
    }

    enum Lookup {
        case found(DMARCRecord)
        case absent
        case temporary
    }

    func lookup(_ domain: String) async -> Lookup {
        guard let name = try? DNSName("_dmarc." + domain) else { return .absent }
        let answer = await resolver.immediateOrResolve(name, .txt)
        if answer.status.isTemporary { return .temporary }
        guard answer.status == .noError else { return .absent }
        // Only records that start with v=DMARC1 count; more than one is none at all.
        let records = answer.txt.filter { $0.hasPrefix("v=DMARC1") }.compactMap(DMARCRecord.parse)
        return records.count == 1 ? .found(records[0]) : .absent
    }
}

extension DMARCOutcome {
    /// How strict the outcome is, for choosing among several author domains: a failure to be
    /// rejected first, then quarantined, then a DNS failure, a failure with p=none, no policy,
    /// a pass.
    var severity: Int {
        switch result {
        case .fail: return disposition == .reject ? 5 : disposition == .quarantine ? 4 : 2
        case .temperror: return 3
        case .permerror: return 1
        case .none: return 1
        case .pass: return 0
        }
    }
}

/// The domain of the From header field (RFC 5322 §3.6.2), for DMARC.
public enum FromAddress {
    /// Every domain after an `@` in a From field that may not be well formed (several addresses,
    /// a group, control bytes): what a mail reader might show as the author, to be evaluated
    /// strictly. ASCII lower case, in order, without repeats.
    public static func anyDomains(_ value: String) -> [String] {
        var out: [String] = []
        let scalars = Array(value.unicodeScalars)
        var i = 0
        while i < scalars.count {
            defer { i += 1 }
            guard scalars[i] == "@" else { continue }
            var j = i + 1
            var name = ""
            while j < scalars.count {
                let c = scalars[j]
                let v = c.value
                let ascii = (v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A) || (v >= 0x30 && v <= 0x39) || v == 0x2D || v == 0x2E || v == 0x5F
                guard ascii || (v >= 0x80 && (c.properties.isAlphabetic || c.properties.numericType != nil)) else { break }
                name.unicodeScalars.append(c)
                j += 1
            }
            while name.hasSuffix(".") { name.removeLast() }
            if !name.isEmpty, let d = try? Domain(name).ascii, !out.contains(d) { out.append(d) }
        }
        return out
    }

    /// The ASCII lower-case domain when the field holds exactly one mailbox; nil otherwise.
    public static func singleDomain(_ value: String) -> String? {
        var addresses: [String] = []
        var current: [Character] = []
        var angle: [Character]? = nil
        var lastAngle: String? = nil
        var inQuotes = false
        var depth = 0
        var escaped = false
        func endMailbox() {
            let text = lastAngle ?? String(current)
            addresses.append(text.trimmingWhitespace)
            current = []
            lastAngle = nil
        }
        for c in value {
            if escaped {
                escaped = false
                if angle != nil { angle!.append(c) } else { current.append(c) }
                continue
            }
            if c == "\\", inQuotes || depth > 0 {
                escaped = true
                continue
            }
            if depth > 0 {
                if c == "(" { depth += 1 } else if c == ")" { depth -= 1 }
                continue
            }
            if inQuotes {
                if c == "\"" { inQuotes = false }
                if angle != nil { angle!.append(c) }
                continue
            }
            switch c {
            case "(": depth = 1
            case "\"": inQuotes = true
            case "<": angle = []
            case ">":
                if let a = angle { lastAngle = String(a) }
                angle = nil
            case ",": if angle == nil { endMailbox() } else { angle!.append(c) }
            case ":", ";": if angle == nil { return nil } else { angle!.append(c) }  // groups
            default: if angle != nil { angle!.append(c) } else { current.append(c) }
            }
        }
        guard angle == nil, !inQuotes, depth == 0 else { return nil }
        endMailbox()
        let mailboxes = addresses.filter { !$0.isEmpty }
        guard mailboxes.count == 1, let at = mailboxes[0].lastIndex(of: "@") else { return nil }
        var domain = String(mailboxes[0][mailboxes[0].index(after: at)...]).trimmingWhitespace
        if domain.hasSuffix(".") { domain.removeLast() }
        guard !domain.isEmpty, !domain.hasPrefix("["), !domain.contains(" ") else { return nil }
        return try? Domain(domain).ascii
    }
}
