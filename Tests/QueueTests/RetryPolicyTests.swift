// The retry policy with a seeded random source: the schedule doubles from the first interval,
// is capped, stays within ±10% jitter and is jittered; expiry and the delay warning happen at
// their boundaries, once.

import Queue
import TernTestSupport
import Testing

@Suite struct RetryPolicyTests {
    @Test("exponential from the first interval, capped, each delay within ±10% jitter, and jittered")
    func schedule() {
        var rng = SplitMix(seed: 7)
        let p = RetryPolicy(first: 60, limit: 3600)
        for attempt in UInt32(1)...12 {
            let base = min(Int64(60) << Int64(attempt - 1), 3600)
            let delays = (0..<200).map { _ in p.backoff(after: attempt, using: &rng) }
            #expect(delays.allSatisfy { $0 >= base - base / 10 && $0 <= base + base / 10 }, "attempt \(attempt): \(delays.min()!)…\(delays.max()!) around \(base)")
            #expect(Set(delays).count > 10, "attempt \(attempt) is jittered: \(Set(delays).sorted())")
        }
        // The cap holds however many attempts were made (no overflow), and a delay is never zero.
        for attempts: UInt32 in [10_000, .max] { #expect(p.backoff(after: attempts, using: &rng) <= 3960) }
        #expect(RetryPolicy(first: 1, limit: 1).backoff(after: 1, using: &rng) == 1)
        #expect(RetryPolicy(first: 365 * 86400, limit: 365 * 86400).backoff(after: .max, using: &rng) <= 365 * 86400 * 11 / 10)
        // Attempt 0 (a read that failed before any attempt) waits the first interval.
        #expect((54...66).contains(p.backoff(after: 0, using: &rng)))
    }

    @Test("the same seed, the same schedule")
    func replayable() {
        let p = RetryPolicy()
        var a = SplitMix(seed: 99)
        var b = SplitMix(seed: 99)
        #expect((1...30).map { p.backoff(after: $0, using: &a) } == (1...30).map { p.backoff(after: $0, using: &b) })
    }

    @Test("expiry after the lifetime, not at it; one delay warning, at its time")
    func boundaries() {
        var rng = SplitMix(seed: 1)
        let p = RetryPolicy(first: 60, limit: 3600, lifetime: 1000, delayWarning: 400)
        #expect(p.afterTemporaryFailure(attempts: 3, arrival: 0, now: 1001, warned: false, using: &rng) == .expire)
        guard case .retry(let at, let warn) = p.afterTemporaryFailure(attempts: 1, arrival: 0, now: 1000, warned: false, using: &rng) else {
            Issue.record("expired at the lifetime itself")
            return
        }
        #expect(warn && (1054...1066).contains(at))
        #expect(p.afterTemporaryFailure(attempts: 1, arrival: 0, now: 399, warned: false, using: &rng) != .expire)
        if case .retry(_, let w) = p.afterTemporaryFailure(attempts: 1, arrival: 0, now: 399, warned: false, using: &rng) { #expect(!w) }
        if case .retry(_, let w) = p.afterTemporaryFailure(attempts: 1, arrival: 0, now: 400, warned: false, using: &rng) { #expect(w) }
        // Warned already: never again.
        if case .retry(_, let w) = p.afterTemporaryFailure(attempts: 5, arrival: 0, now: 900, warned: true, using: &rng) { #expect(!w) }
        // delay-warning off.
        let off = RetryPolicy(lifetime: 1000, delayWarning: 0)
        if case .retry(_, let w) = off.afterTemporaryFailure(attempts: 5, arrival: 0, now: 900, warned: false, using: &rng) { #expect(!w) }
    }
}
