// Who a recipient is: a local user (through aliases, suffixes and drop characters), somewhere to
// relay to, or a refusal. The relay guard lives here and has no switch: an address outside the
// local domains is never accepted from an unauthenticated session, and the classic tricks
// (percent hack, bang paths, a quoted '@', address literals) are refused outright.

import SMTP

public enum Destination: Sendable, Hashable {
    /// A local user's mailbox.
    case mailbox(user: String, domain: Domain)
    /// An address elsewhere (only reachable through an alias, or by an authenticated sender).
    case remote(String)
    /// A pipe alias.
    case pipe([String])
}

public enum Resolution: Sendable, Equatable {
    /// Deliver to these (at least one).
    case deliver([Destination])
    /// A local domain, but no such user: 550 5.1.1.
    case unknownUser
    /// Not one of our domains: relaying, which needs authentication (554 5.7.1 otherwise).
    case notLocal
    /// A routing trick or a malformed address: 554 5.7.1 / 501 5.1.3, never relayed.
    case refused(String)
    /// Aliases loop or nest deeper than the limit: 554 5.4.6.
    case aliasLoop

    /// The reply for an unauthenticated session, or nil when the recipient is accepted.
    public var reply: Reply? {
        switch self {
        case .deliver: return nil
        case .unknownUser: return Reply(550, EnhancedStatus(5, 1, 1), "No such user here")
        case .notLocal: return Reply(554, EnhancedStatus(5, 7, 1), "Relay access denied")
        case .refused(let why): return Reply(554, EnhancedStatus(5, 7, 1), "Relay access denied: \(why)")
        case .aliasLoop: return Reply(554, EnhancedStatus(5, 4, 6), "Alias loop or too deeply nested aliases")
        }
    }
}

public struct RecipientResolver: Sendable {
    public struct DomainTable: Sendable {
        public var config: Configuration.LocalDomain
        public var aliases: AliasFile
        public init(config: Configuration.LocalDomain, aliases: AliasFile = AliasFile()) {
            self.config = config
            self.aliases = aliases
        }
    }

    public let domains: [Domain: DomainTable]
    /// Where a bare `postmaster` goes: the first configured domain.
    public let primaryDomain: Domain?
    /// Whether a local user exists without an alias (its Maildir exists; later: its users file).
    public let userExists: @Sendable (_ user: String, _ domain: Domain) -> Bool
    public let maxDepth: Int
    /// Domains whose mail is accepted from anyone and relayed (`relay DOMAIN`).
    public let relayDomains: Set<Domain>

    public init(domains: [DomainTable], relayDomains: Set<Domain> = [], maxDepth: Int = 10, userExists: @escaping @Sendable (String, Domain) -> Bool) {
        var d: [Domain: DomainTable] = [:]
        for t in domains { d[t.config.name] = t }
        self.domains = d
        self.relayDomains = relayDomains
        primaryDomain = domains.first?.config.name
        self.maxDepth = maxDepth
        self.userExists = userExists
    }

    /// Resolves an envelope recipient as the SMTP engine hands it (`local@domain`, or `postmaster`).
    public func resolve(_ address: String) -> Resolution {
        if !address.contains("@") {
            // RFC 5321 §4.5.1: <postmaster> without a domain is ours.
            guard address.lowercased() == "postmaster", let first = primaryDomain else { return .refused("no domain") }
            return resolve("postmaster@\(first.ascii)")
        }
        var seen: Set<String> = []
        var out: [Destination] = []
        switch expand(address, depth: 0, seen: &seen, into: &out, top: true) {
        case .some(let failure): return failure
        case .none:
            return out.isEmpty ? .unknownUser : .deliver(uniqued(out))
        }
    }

    /// Expands one address into `out`; returns a failure that ends the resolution.
    func expand(_ address: String, depth: Int, seen: inout Set<String>, into out: inout [Destination], top: Bool) -> Resolution? {
        guard depth <= maxDepth else { return .aliasLoop }
        guard let at = address.lastIndex(of: "@") else { return .refused("no domain") }
        let rawLocal = String(address[..<at])
        let rawDomain = String(address[address.index(after: at)...])
        if rawDomain.hasPrefix("[") { return top ? .notLocal : appendRemote(address, &out) }
        guard let domain = try? Domain(rawDomain) else { return .refused("invalid domain") }
        // Routing tricks inside a local part are never routed.
        guard let table = domains[domain] else {
            guard relayDomains.contains(domain) else { return top ? .notLocal : appendRemote(address, &out) }
            if let trick = Self.trick(rawLocal) { return .refused(trick) }
            return appendRemote(address, &out)
        }
        if let trick = Self.trick(rawLocal) { return .refused(trick) }
        let c = table.config
        let exact = AliasFile.normalize(rawLocal, dropCharacters: c.dropCharacters)
        var user = exact
        if let cut = exact.firstIndex(where: { c.suffixSeparators.contains($0) }) { user = String(exact[..<cut]) }
        guard !user.isEmpty else { return top ? .unknownUser : nil }
        let key = "\(user)@\(domain.ascii)"
        if seen.contains(key) { return .aliasLoop }
        seen.insert(key)
        defer { seen.remove(key) }
        if let targets = table.aliases.entries[exact] ?? table.aliases.entries[user] {
            return expandTargets(targets, depth: depth, seen: &seen, into: &out)
        }
        if userExists(user, domain) {
            out.append(.mailbox(user: user, domain: domain))
            return nil
        }
        if let all = table.aliases.catchAll {
            return expandTargets(all, depth: depth, seen: &seen, into: &out)
        }
        return top ? .unknownUser : nil
    }

    func expandTargets(_ targets: [AliasFile.Target], depth: Int, seen: inout Set<String>, into out: inout [Destination]) -> Resolution? {
        for t in targets {
            switch t {
            case .pipe(let argv):
                out.append(.pipe(argv))
            case .address(let a):
                if let failure = expand(a, depth: depth + 1, seen: &seen, into: &out, top: false) {
                    if failure == .aliasLoop { return failure }
                }
            }
        }
        return nil
    }

    func appendRemote(_ address: String, _ out: inout [Destination]) -> Resolution? {
        out.append(.remote(address))
        return nil
    }

    /// A routing trick in a local part: percent hack, bang path, quoted '@' or '%'.
    static func trick(_ local: String) -> String? {
        if local.contains("%") { return "percent hack" }
        if local.contains("!") { return "bang path" }
        if local.contains("@") { return "quoted '@' in the local part" }
        if local.hasPrefix("\"") { return "quoted local part" }
        return nil
    }
}

/// Removes duplicates keeping the first occurrence.
func uniqued(_ items: [Destination]) -> [Destination] {
    var seen: Set<Destination> = []
    return items.filter { seen.insert($0).inserted }
}
