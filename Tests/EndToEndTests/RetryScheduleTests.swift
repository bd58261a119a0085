import Daemon
import Testing

@Suite("Retry schedule")
struct RetryScheduleTests {
    @Test("exponential from the first interval, capped, each delay within ±10% jitter, and jittered")
    func schedule() {
        for attempt in UInt32(1)...12 {
            let base = min(Int64(60) << Int64(attempt - 1), 3600)
            let delays = (0..<200).map { _ in MailQueue.backoff(attempt, first: 60, limit: 3600) }
            #expect(delays.allSatisfy { $0 >= base - base / 10 && $0 <= base + base / 10 }, "attempt \(attempt): \(delays.min()!)…\(delays.max()!) around \(base)")
            #expect(Set(delays).count > 10, "attempt \(attempt) is jittered: \(Set(delays).sorted())")
        }
        // The cap holds however many attempts were made, and a delay is never zero.
        #expect(MailQueue.backoff(10_000, first: 60, limit: 3600) <= 3960)
        #expect(MailQueue.backoff(1, first: 1, limit: 1) == 1)
    }
}
