// A bounded cache in front of any resolver: positive answers for their TTL, NXDOMAIN and NODATA for
// their negative TTL (RFC 2308), failures not at all; concurrent questions for the same name and
// type share one upstream lookup. TTLs count down: a cached answer's `ttl` is what is left of it.

import Glibc
import Synchronization

public final class CachingResolver: Resolver {
    struct Key: Hashable, Sendable {
        let name: DNSName
        let type: UInt16
    }

    struct Entry: Sendable {
        var answer: DNSAnswer
        let expires: UInt64  // clock nanoseconds
    }

    struct State: ~Copyable {
        var entries: [Key: Entry] = [:]
        var waiting: [Key: [CheckedContinuation<DNSAnswer?, Never>]] = [:]
        var hits = 0, misses = 0, shared = 0
    }

    public let upstream: any Resolver
    public let capacity: Int
    /// The longest any answer is kept, whatever its TTL says (a day).
    public let maximumTTL: UInt32
    let clock: @Sendable () -> UInt64
    let state = Mutex(State())

    /// - Parameters:
    ///   - capacity: answers kept at most; when full, expired ones go first, then a tenth of the rest.
    ///   - clock: monotonic nanoseconds (tests pass their own).
    public init(upstream: any Resolver, capacity: Int = 10_000, maximumTTL: UInt32 = 86_400, clock: (@Sendable () -> UInt64)? = nil) {
        self.upstream = upstream
        self.capacity = max(capacity, 1)
        self.maximumTTL = maximumTTL
        self.clock = clock ?? monotonicNanoseconds
    }

    public var statistics: (hits: Int, misses: Int, shared: Int, entries: Int) {
        state.withLock { ($0.hits, $0.misses, $0.shared, $0.entries.count) }
    }

    /// A cached answer (counted as a hit), without asking upstream.
    public func immediateAnswer(_ name: DNSName, _ type: RecordType) -> DNSAnswer? {
        let now = clock()
        return state.withLock { s in
            let a = lookup(&s, Key(name: name, type: type.rawValue), now)
            if a != nil { s.hits += 1 }
            return a
        }
    }

    func lookup(_ s: inout State, _ key: Key, _ now: UInt64) -> DNSAnswer? {
        guard let e = s.entries[key] else { return nil }
        guard e.expires > now else {
            s.entries[key] = nil
            return nil
        }
        var a = e.answer
        // What is left of the TTL (the records keep theirs as received: rewriting them would copy
        // the array on every hit).
        a.ttl = UInt32(min((e.expires - now) / 1_000_000_000, UInt64(UInt32.max)))
        return a
    }

    enum Step { case hit(DNSAnswer), wait, ask }

    public func resolve(_ name: DNSName, _ type: RecordType) async -> DNSAnswer {
        let key = Key(name: name, type: type.rawValue)
        while true {
            let now = clock()
            let step: Step = state.withLock { s in
                if let a = lookup(&s, key, now) {
                    s.hits += 1
                    return .hit(a)
                }
                if s.waiting[key] != nil {
                    s.shared += 1
                    return .wait
                }
                s.misses += 1
                s.waiting[key] = []
                return .ask
            }
            switch step {
            case .hit(let a):
                return a
            case .wait:
                // Wait for the lookup in flight; if it finished in between, start over.
                let shared: DNSAnswer? = await withCheckedContinuation { (c: CheckedContinuation<DNSAnswer?, Never>) in
                    let registered = state.withLock { s in
                        guard s.waiting[key] != nil else { return false }
                        s.waiting[key]!.append(c)
                        return true
                    }
                    if !registered { c.resume(returning: nil) }
                }
                if let shared { return shared }
            case .ask:
                let answer = await upstream.resolve(name, type)
                let done = clock()
                let waiters = state.withLock { s in
                    let w = s.waiting.removeValue(forKey: key) ?? []
                    if answer.status == .noError || answer.status.isNegative, answer.ttl > 0 {
                        if s.entries.count >= capacity { evict(&s, done) }
                        let ttl = UInt64(min(answer.ttl, maximumTTL))
                        s.entries[key] = Entry(answer: answer, expires: done + ttl * 1_000_000_000)
                    }
                    return w
                }
                for c in waiters { c.resume(returning: answer) }
                return answer
            }
        }
    }

    func evict(_ s: inout State, _ now: UInt64) {
        let expired = s.entries.filter { $0.value.expires <= now }.map(\.key)
        for k in expired { s.entries[k] = nil }
        guard s.entries.count >= capacity else { return }
        let drop = max(capacity / 10, 1)
        for k in s.entries.keys.prefix(drop) { s.entries[k] = nil }
    }

    /// Forgets everything (SIGHUP, `ternctl dns --flush` later).
    public func flush() {
        state.withLock { $0.entries.removeAll() }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
@Sendable public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
