// Where mail for a domain goes (RFC 5321 §5.1, RFC 7505): the MX hosts by preference, equals in
// random order, at most five; the domain itself when it has no MX (the implicit MX); a null MX
// ("MX 0 .") refuses mail for good. Each host's IPv6 and IPv4 addresses, every address once per
// attempt. Groundwork of the courier (issue 8): it only asks DNS and decides; connecting is the
// courier's.

import DNS
import Reactor

/// One MX host and its addresses (IPv6 first, then IPv4, as DNS gave them).
public struct MXHost: Sendable, Equatable {
    public var name: DNSName
    public var preference: UInt16
    public var addresses: [String]
}

/// Why a domain cannot be routed now or ever; each knows its enhanced status code.
public enum RouteFailure: Error, Sendable, Equatable {
    /// The domain publishes a null MX (RFC 7505): permanent, `5.1.10`.
    case nullMX
    /// The domain does not exist, or has neither MX nor addresses: permanent, `5.1.2`.
    case noSuchDomain(String)
    /// No MX host has an address (every lookup said so for good): permanent, `5.4.4`.
    case noAddresses(String)
    /// DNS failed for now (SERVFAIL, timeout): temporary, `4.4.3`.
    case dnsFailure(String)

    public var isPermanent: Bool {
        if case .dnsFailure = self { return false }
        return true
    }

    /// The enhanced status code (RFC 3463, RFC 7505) for bounces and the queue's log.
    public var status: String {
        switch self {
        case .nullMX: return "5.1.10"
        case .noSuchDomain: return "5.1.2"
        case .noAddresses: return "5.4.4"
        case .dnsFailure: return "4.4.3"
        }
    }

    public var description: String {
        switch self {
        case .nullMX: return "the domain accepts no mail (null MX)"
        case .noSuchDomain(let why), .noAddresses(let why), .dnsFailure(let why): return why
        }
    }
}

public enum MXRoute {
    /// At most this many MX hosts are tried per attempt.
    public static let maxHosts = 5

    /// The hosts to try for `domain`, in order, or why there are none.
    /// - Parameter shuffle: orders hosts of equal preference (random by default; tests fix it).
    public static func hosts(
        for domain: DNSName, resolver: any Resolver,
        shuffle: ([MXHost]) -> [MXHost] = { $0.shuffled() }
    ) async -> Result<[MXHost], RouteFailure> {
        let answer = await resolver.immediateOrResolve(domain, .mx)
        var candidates: [MXHost]
        switch answer.status {
        case .noError:
            let mx = answer.mx
            // RFC 7505: a single "MX 0 ." says the domain takes no mail. A root exchange among
            // others is a misconfiguration: it is skipped.
            if mx.count == 1, mx[0].exchange.isRoot { return .failure(.nullMX) }
            candidates = mx.filter { !$0.exchange.isRoot }.map { MXHost(name: $0.exchange, preference: $0.preference, addresses: []) }
            if candidates.isEmpty { return .failure(.nullMX) }
        case .noData:
            // RFC 5321 §5.1: no MX, the domain itself is the host (preference 0).
            candidates = [MXHost(name: answer.canonicalName, preference: 0, addresses: [])]
        case .nxDomain:
            return .failure(.noSuchDomain("\(domain.text): no such domain (NXDOMAIN)"))
        case .servFail, .timeout, .formErr:
            return .failure(.dnsFailure("\(domain.text): MX lookup failed (\(answer.status.rawValue))"))
        }
        // Preference order, equals shuffled, the first five.
        var ordered: [MXHost] = []
        var i = 0
        while i < candidates.count {
            var j = i
            while j < candidates.count, candidates[j].preference == candidates[i].preference { j += 1 }
            ordered += shuffle(Array(candidates[i..<j]))
            i = j
        }
        ordered = Array(ordered.prefix(maxHosts))
        let (hosts, temporary) = await addresses(of: ordered, resolver: resolver)
        if !hosts.isEmpty { return .success(hosts) }
        if !temporary.isEmpty {
            return .failure(.dnsFailure("\(domain.text): address lookups failed (\(temporary.joined(separator: ", ")))"))
        }
        if answer.status == .noData {
            return .failure(.noSuchDomain("\(domain.text): no MX and no address"))
        }
        return .failure(.noAddresses("\(domain.text): no MX host has an address (\(ordered.map(\.name.text).joined(separator: ", ")))"))
    }

    /// Each host's IPv6 then IPv4 addresses, every address once; hosts without one are left out.
    /// - Returns: the hosts with addresses, and the lookups that failed for now.
    static func addresses(of ordered: [MXHost], resolver: any Resolver) async -> ([MXHost], [String]) {
        var seen = Set<String>()
        var temporary: [String] = []
        var hosts: [MXHost] = []
        for var host in ordered {
            for type in [RecordType.aaaa, .a] {
                let a = await resolver.immediateOrResolve(host.name, type)
                if a.status.isTemporary { temporary.append("\(host.name.text) \(type): \(a.status.rawValue)") }
                for address in a.addresses where seen.insert(address).inserted { host.addresses.append(address) }
            }
            if !host.addresses.isEmpty { hosts.append(host) }
        }
        return (hosts, temporary)
    }

    /// A relay host by name (its addresses, no MX lookup) or by address.
    /// An address literal's one host (RFC 5321 §4.1.3: `[192.0.2.1]`, `[IPv6:2001:db8::1]`): no
    /// DNS at all. Nil when `domain` is not a literal; a literal Tern cannot reach (a general
    /// address literal, or a malformed address) fails for good.
    public static func literal(_ domain: String) -> Result<[MXHost], RouteFailure>? {
        guard domain.hasPrefix("["), domain.hasSuffix("]"), domain.count > 2 else { return nil }
        let inner = String(domain.dropFirst().dropLast())
        var address: [UInt8]? = nil
        if inner.lowercased().hasPrefix("ipv6:") {
            address = IPAddress.v6(String(inner.dropFirst(5)))
        } else if !inner.contains(":") {
            address = IPAddress.v4(inner)
        }
        guard let address else { return .failure(.noSuchDomain("\(domain): not an IPv4 or IPv6 address literal")) }
        // The root name stands in for a host name, as for a relay host given by its address.
        return .success([MXHost(name: try! DNSName(labels: []), preference: 0, addresses: [IPAddress.text(address)])])
    }

    public static func relayHost(_ host: String, resolver: any Resolver) async -> Result<[MXHost], RouteFailure> {
        if host.contains(":") || host.split(separator: ".").allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) {
            // An address: no name to look up (the root name stands in for it).
            return .success([MXHost(name: try! DNSName(labels: []), preference: 0, addresses: [host])])
        }
        guard let name = try? DNSName(host) else { return .failure(.noSuchDomain("\(host): not a host name")) }
        let (hosts, temporary) = await addresses(of: [MXHost(name: name, preference: 0, addresses: [])], resolver: resolver)
        if !hosts.isEmpty { return .success(hosts) }
        if !temporary.isEmpty { return .failure(.dnsFailure("\(host): address lookups failed (\(temporary.joined(separator: ", ")))")) }
        return .failure(.noAddresses("relay host \(host) has no address"))
    }
}
