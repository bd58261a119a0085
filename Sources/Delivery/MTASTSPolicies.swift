// MTA-STS policies for the courier (RFC 8461 §5): discovery through `_mta-sts.DOMAIN`, the
// policy fetched over HTTPS with our TLS client, cached (in memory and under
// SPOOL/mta-sts/DOMAIN, so a restart keeps them) for max_age, refreshed in the background once
// half of it has passed, and kept when a refresh or the TXT lookup fails while it is valid.

import DNS
import Glibc
import MailAuth
import Reactor
import Synchronization

final class MTASTSPolicies: Sendable {
    struct Cached: Sendable, Equatable {
        var id: String
        var policy: MTASTSPolicy
        /// Seconds since the epoch.
        var fetched: Int64
        func valid(at now: Int64) -> Bool { now < fetched + Int64(policy.maxAge) }
    }

    /// Where policies are kept; nil: in memory, each fetched one handed to `stored`.
    let directory: String?
    /// The HTTPS port (443; another for tests).
    let port: Int
    let context: TLSContext
    let stored: (@Sendable (String, String, Int64, [UInt8]) -> Void)?
    let log: @Sendable (String) -> Void
    let cache = Mutex<[String: Cached]>([:])
    /// Domains whose policy is being fetched in the background.
    let refreshing = Mutex<Set<String>>([])

    init(directory: String?, port: Int, context: TLSContext, stored: (@Sendable (String, String, Int64, [UInt8]) -> Void)? = nil, log: @escaping @Sendable (String) -> Void) {
        self.directory = directory
        self.port = port
        self.context = context
        self.stored = stored
        self.log = log
    }

    /// A policy fetched before (by an earlier courier process): kept in memory, unless the one
    /// held is newer. False when the text is not a policy.
    func seed(_ domain: String, id: String, fetched: Int64, text: [UInt8]) -> Bool {
        guard let policy = try? MTASTSPolicy.parse(String(decoding: text, as: UTF8.self)) else { return false }
        let c = Cached(id: id, policy: policy, fetched: fetched)
        cache.withLock { if ($0[domain]?.fetched ?? .min) <= fetched { $0[domain] = c } }
        return true
    }

    static func now() -> Int64 { Int64(time(nil)) }

    /// The policy that applies to `domain` (ASCII) now, or nil.
    func policy(for domain: String, resolver: any Resolver, loop: EventLoop) async -> MTASTSPolicy? {
        let now = Self.now()
        let cached = load(domain).flatMap { $0.valid(at: now) ? $0 : nil }
        guard let name = try? DNSName("_mta-sts.\(domain)") else { return cached?.policy }
        let answer = await resolver.immediateOrResolve(name, .txt)
        guard let record = MTASTSRecord.find(in: answer.txt) else {
            // No record (or DNS trouble): a cached policy still holds until it expires (§5.1).
            return cached?.policy
        }
        if let cached, cached.id == record.id {
            if now - cached.fetched > Int64(cached.policy.maxAge / 2) { refreshInBackground(domain, id: record.id, resolver: resolver, loop: loop) }
            return cached.policy
        }
        switch await fetch(domain, id: record.id, resolver: resolver, loop: loop) {
        case .success(let fresh): return fresh.policy
        case .failure(let why):
            log("mta-sts: \(domain): policy \(record.id) could not be fetched (\(why))\(cached == nil ? "" : "; keeping the cached one")")
            return cached?.policy
        }
    }

    func refreshInBackground(_ domain: String, id: String, resolver: any Resolver, loop: EventLoop) {
        guard refreshing.withLock({ $0.insert(domain).inserted }) else { return }
        Task(executorPreference: loop) {
            if case .failure(let why) = await self.fetch(domain, id: id, resolver: resolver, loop: loop) {
                self.log("mta-sts: \(domain): background refresh failed (\(why)); keeping the cached policy")
            }
            _ = self.refreshing.withLock { $0.remove(domain) }
        }
    }

    /// Fetches, checks and stores the policy of `domain`.
    func fetch(_ domain: String, id: String, resolver: any Resolver, loop: EventLoop) async -> Result<Cached, HTTPFetchError> {
        let host = "mta-sts.\(domain)"
        let addresses: [String]
        switch await MXRoute.relayHost(host, resolver: resolver) {
        case .success(let hosts): addresses = hosts.flatMap(\.addresses)
        case .failure(let f): return .failure(HTTPFetchError("\(host): \(f.description)"))
        }
        var last = HTTPFetchError("\(host) has no address")
        for address in addresses {
            switch await HTTPSFetch.get(loop: loop, address: address, port: port, host: host, path: "/.well-known/mta-sts.txt", context: context) {
            case .failure(let e):
                last = e
                continue
            case .success(let r):
                guard r.status == 200 else { return .failure(HTTPFetchError("\(host) answered HTTP \(r.status) (redirects are not followed)")) }
                let type = r.headers["content-type"]?.split(separator: ";").first.map { $0.lowercased() } ?? ""
                guard type == "text/plain" else { return .failure(HTTPFetchError("\(host) served '\(type)', not text/plain")) }
                do {
                    let policy = try MTASTSPolicy.parse(String(decoding: r.body, as: UTF8.self))
                    let c = Cached(id: id, policy: policy, fetched: Self.now())
                    store(domain, c, text: r.body)
                    log("mta-sts: \(domain): policy \(id) fetched: mode \(policy.mode.rawValue), mx \(policy.mx.joined(separator: " ")), max_age \(policy.maxAge)")
                    return .success(c)
                } catch {
                    return .failure(HTTPFetchError("the policy of \(domain) is invalid: \(error)"))
                }
            }
        }
        return .failure(last)
    }

    /// The cached policy of `domain`, from memory or its file.
    func load(_ domain: String) -> Cached? {
        if let c = cache.withLock({ $0[domain] }) { return c }
        guard let directory, let text = ReactorSystem.readText("\(directory)/\(domain)"), let f = MTASTSPolicyFiles.parse(text),
            let policy = try? MTASTSPolicy.parse(String(decoding: f.policy, as: UTF8.self))
        else { return nil }
        let c = Cached(id: f.id, policy: policy, fetched: f.fetched)
        cache.withLock { $0[domain] = c }
        return c
    }

    func store(_ domain: String, _ c: Cached, text: [UInt8]) {
        cache.withLock { $0[domain] = c }
        guard let directory else {
            stored?(domain, c.id, c.fetched, text)
            return
        }
        MTASTSPolicyFiles.write(domain, id: c.id, fetched: c.fetched, text: text, in: directory)
    }
}

/// The cached policies on disk: one file per domain under SPOOL/mta-sts (the queue's, in
/// ternd; the courier process hands it what it fetches).
public enum MTASTSPolicyFiles {
    /// A policy file's text ("id ID\nfetched EPOCH\n\nPOLICY"), as `store` writes it.
    public static func contents(id: String, fetched: Int64, text: [UInt8]) -> [UInt8] { Array("id \(id)\nfetched \(fetched)\n\n".utf8) + text }

    /// Reads a policy file; nil when it is not one.
    public static func parse(_ text: String) -> (id: String, fetched: Int64, policy: [UInt8])? {
        let parts = text.split(separator: "\n", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].hasPrefix("id "), parts[1].hasPrefix("fetched "), let fetched = Int64(parts[1].dropFirst(8)) else { return nil }
        return (String(parts[0].dropFirst(3)), fetched, Array(parts[3].utf8))
    }

    /// Writes a policy file (atomically, 0600) under `directory`.
    public static func write(_ domain: String, id: String, fetched: Int64, text: [UInt8], in directory: String) {
        guard mkdir(directory, 0o700) == 0 || errno == EEXIST else { return }
        try? ReactorSystem.writeFileAtomically(contents(id: id, fetched: fetched, text: text), to: "\(directory)/\(domain)", mode: 0o600)
    }

    /// Every policy file of `directory` whose name is a domain name and whose text parses.
    public static func all(in directory: String) -> [(domain: String, id: String, fetched: Int64, policy: [UInt8])] {
        guard let d = opendir(directory) else { return [] }
        defer { closedir(d) }
        var out: [(String, String, Int64, [UInt8])] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard isDomainName(name), let text = ReactorSystem.readText("\(directory)/\(name)"), let f = parse(text) else { continue }
            out.append((name, f.id, f.fetched, f.policy))
        }
        return out
    }

    /// A name safe as a file name here: lower-case letters, digits, '-', '.', not starting with '.'.
    public static func isDomainName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 253 && !name.hasPrefix(".") && !name.contains("..")
            && name.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 46 }
    }
}
