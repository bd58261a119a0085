// The security level reached with each domain, per direction, kept on disk (chasquid's
// "domain info"): once a domain has been reached over TLS, a later connection that would fall
// below that level is refused (a temporary failure), never silently downgraded to plaintext.
// Groundwork of the courier (issue 8), with `ternctl tls show|reset DOMAIN`.
//
// One small file per domain in the history directory (`SPOOL/tls-history/DOMAIN`, the domain in
// lower-case A-labels), two lines: `incoming LEVEL` and `outgoing LEVEL`. Replaced atomically.

import Glibc
import Reactor
import Synchronization

/// What a connection with a domain reached: plain < TLS without a verified certificate < TLS
/// with a verified certificate.
public enum SecurityLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case plain = 0
    case tlsUnverified = 1
    case tlsVerified = 2

    public static func < (a: SecurityLevel, b: SecurityLevel) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .plain: return "plain"
        case .tlsUnverified: return "tls-unverified"
        case .tlsVerified: return "tls-verified"
        }
    }

    public init?(name: String) {
        guard let l = SecurityLevel.allCases.first(where: { $0.description == name }) else { return nil }
        self = l
    }
}

/// Mail we receive from a domain, or mail we send to it.
public enum MailDirection: String, Sendable, CaseIterable {
    case incoming, outgoing
}

/// The levels recorded for one domain.
public struct DomainSecurity: Sendable, Equatable {
    public var incoming: SecurityLevel = .plain
    public var outgoing: SecurityLevel = .plain

    public init(incoming: SecurityLevel = .plain, outgoing: SecurityLevel = .plain) {
        self.incoming = incoming
        self.outgoing = outgoing
    }

    public subscript(_ d: MailDirection) -> SecurityLevel {
        get { d == .incoming ? incoming : outgoing }
        set { if d == .incoming { incoming = newValue } else { outgoing = newValue } }
    }
}

/// A domain name that is not safe as a file name (the history keys files by domain).
public struct TLSHistoryError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// The per-domain history. Thread-safe; reads are served from memory while the file is as it
/// was (one `stat` per look-up), so `ternctl tls reset` in another process takes effect at once.
public final class TLSHistory: Sendable {
    public let directory: String
    /// What was read, and the file's identity when it was read (nil: there was no file).
    struct Stamp: Equatable {
        var inode: UInt
        var size: Int
        var modified: Int
    }
    let cache = Mutex<[String: (security: DomainSecurity, stamp: Stamp?)]>([:])

    /// The identity of a domain's file now.
    func stamp(_ path: String) -> Stamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Stamp(inode: UInt(st.st_ino), size: Int(st.st_size), modified: st.st_mtim.tv_sec * 1_000_000_000 + st.st_mtim.tv_nsec)
    }

    /// The history of a spool directory.
    public static func directory(spool: String) -> String { "\(spool)/tls-history" }

    public init(directory: String) {
        self.directory = directory
    }

    /// The file name for a domain: lower case, no trailing dot, letters, digits, '-', '.' and '_'.
    static func key(_ domain: String) throws(TLSHistoryError) -> String {
        var d = domain.lowercased()
        if d.hasSuffix(".") { d.removeLast() }
        guard !d.isEmpty, !d.hasPrefix("."), !d.contains(".."),
            d.unicodeScalars.allSatisfy({ ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "-" || $0 == "." || $0 == "_" })
        else { throw TLSHistoryError(description: "not a domain name in A-labels: \(domain)") }
        return d
    }

    /// What was recorded for `domain` (plain both ways when nothing was).
    public func security(of domain: String) throws(TLSHistoryError) -> DomainSecurity {
        let k = try Self.key(domain)
        let path = "\(directory)/\(k)"
        let now = stamp(path)
        if let c = cache.withLock({ $0[k] }), c.stamp == now { return c.security }
        var s = DomainSecurity()
        if now != nil, let text = ReactorSystem.readText(path) {
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ")
                guard f.count == 2, let d = MailDirection(rawValue: String(f[0])), let l = SecurityLevel(name: String(f[1])) else { continue }
                s[d] = l
            }
        }
        cache.withLock { $0[k] = (s, now) }
        return s
    }

    /// Whether a connection that reached `level` with `domain` is allowed: not below what was
    /// reached before in that direction.
    public func allows(_ level: SecurityLevel, with domain: String, _ direction: MailDirection) throws(TLSHistoryError) -> Bool {
        level >= (try security(of: domain))[direction]
    }

    /// Records that `level` was reached; the recorded level only goes up. Returns the level now
    /// recorded.
    @discardableResult
    public func record(_ level: SecurityLevel, with domain: String, _ direction: MailDirection) throws(TLSHistoryError) -> SecurityLevel {
        var s = try security(of: domain)
        guard level > s[direction] else { return s[direction] }
        s[direction] = level
        try store(s, for: domain)
        return level
    }

    /// Forgets a domain (`ternctl tls reset`): plain both ways again. Returns whether anything was
    /// recorded.
    @discardableResult
    public func reset(_ domain: String) throws(TLSHistoryError) -> Bool {
        let k = try Self.key(domain)
        cache.withLock { $0[k] = nil }
        if unlink("\(directory)/\(k)") == 0 { return true }
        guard errno == ENOENT else { throw TLSHistoryError(description: "cannot remove \(directory)/\(k): \(String(cString: strerror(errno)))") }
        return false
    }

    func store(_ s: DomainSecurity, for domain: String) throws(TLSHistoryError) {
        let k = try Self.key(domain)
        if mkdir(directory, 0o700) != 0, errno != EEXIST {
            throw TLSHistoryError(description: "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        let text = MailDirection.allCases.map { "\($0.rawValue) \(s[$0])\n" }.joined()
        do {
            try ReactorSystem.writeFileAtomically(Array(text.utf8), to: "\(directory)/\(k)", mode: 0o600)
        } catch {
            throw TLSHistoryError(description: "\(error)")
        }
        let now = stamp("\(directory)/\(k)")
        cache.withLock { $0[k] = (s, now) }
    }
}

/// The courier process's view of the outgoing TLS history (the files are the queue's): what the
/// queue said with each job (`learn`), and what this courier reached since (`raise`, which
/// also tells the queue, which records it). Only levels above plain are kept.
public final class RelayedTLSHistory: OutgoingTLSHistory {
    struct Entry {
        var level: SecurityLevel
        /// When this courier raised it (ns, ReactorSystem.now()); 0: the queue said it.
        var raisedAt: UInt64
    }
    let table = Mutex<[String: Entry]>([:])
    let tell: @Sendable (String, SecurityLevel) -> Void
    /// How long a level this courier raised wins over a lower one the queue says: the queue may
    /// have sent that job before our report reached it. After that the queue's word wins (an
    /// operator's `ternctl tls reset`).
    let settle: UInt64

    public init(settle: Double = 10, tell: @escaping @Sendable (String, SecurityLevel) -> Void) {
        self.settle = UInt64(settle * 1e9)
        self.tell = tell
    }

    public func outgoing(_ domain: String) throws(TLSHistoryError) -> SecurityLevel {
        let k = try TLSHistory.key(domain)
        return table.withLock { $0[k]?.level ?? .plain }
    }

    public func raise(_ level: SecurityLevel, with domain: String) throws(TLSHistoryError) {
        let k = try TLSHistory.key(domain)
        let now = ReactorSystem.now()
        let raised = table.withLock { t -> Bool in
            guard level > (t[k]?.level ?? .plain) else { return false }
            t[k] = Entry(level: level, raisedAt: now)
            return true
        }
        if raised { tell(k, level) }
    }

    /// What the queue's history holds for `domain`, as a job brought it.
    public func learn(_ level: SecurityLevel, for domain: String) {
        guard let k = try? TLSHistory.key(domain) else { return }
        let now = ReactorSystem.now()
        table.withLock { t in
            if let e = t[k], e.raisedAt != 0, e.level > level, now - e.raisedAt < settle { return }
            t[k] = level == .plain ? nil : Entry(level: level, raisedAt: 0)
        }
    }
}
