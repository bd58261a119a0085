// When a deferred delivery is tried again, when it expires, when the sender is warned: the retry
// policy as a pure function of the attempt's facts, with the clock's reading passed in and the
// random source injected (the jitter), so tests can replay any schedule.

/// The queue's times (`limits`: retry-interval, retry-max-interval, queue-lifetime,
/// delay-warning), and the decisions made from them.
public struct RetryPolicy: Sendable, Equatable {
    /// The wait before the second attempt; it doubles each time.
    public var first: Int64
    /// The longest wait between attempts.
    public var limit: Int64
    /// How long after arrival a delivery may still be deferred; past it, it fails (4.4.7).
    public var lifetime: Int64
    /// How long after arrival a delivery still deferred earns the sender one delay warning;
    /// 0: never.
    public var delayWarning: Int64

    public init(first: Int64 = 60, limit: Int64 = 3600, lifetime: Int64 = 5 * 24 * 3600, delayWarning: Int64 = 4 * 3600) {
        self.first = first
        self.limit = limit
        self.lifetime = lifetime
        self.delayWarning = delayWarning
    }

    /// The wait after attempt number `attempts` failed: `first`, twice that, four times, …
    /// capped at `limit`, with ±10% jitter so deliveries deferred together do not come back
    /// together. At least 1 s.
    public func backoff(after attempts: UInt32, using rng: inout some RandomNumberGenerator) -> Int64 {
        // (At most 2^20 times `first`: no overflow for any `first` up to the 365-day bound.)
        let base = min(first << Int64(min(max(Int(attempts), 1) - 1, 20)), limit)
        let jitter = Int64(UInt32.random(in: 0...200, using: &rng)) - 100  // per mille
        return max(1, base + base * jitter / 1000)
    }

    public enum Decision: Sendable, Equatable {
        /// Past the lifetime: fail it for good (and bounce).
        case expire
        /// Try again at this time; `warn`: the sender gets its delay warning now.
        case retry(at: Int64, warn: Bool)
    }

    /// A temporary failure of attempt number `attempts` of a message that arrived at `arrival`,
    /// at `now`; `warned`: the sender was already warned of this delivery's delay.
    public func afterTemporaryFailure(attempts: UInt32, arrival: Int64, now: Int64, warned: Bool, using rng: inout some RandomNumberGenerator) -> Decision {
        if now - arrival > lifetime { return .expire }
        let warn = !warned && delayWarning > 0 && now - arrival >= delayWarning
        return .retry(at: now + backoff(after: attempts, using: &rng), warn: warn)
    }
}
