// AUTH for ternd: who may log in (the domains' users files), the password check off the loops,
// a fixed delay before every failure, and a per-client-address failure limit.
import CTernSystem
import Config
import Glibc
import Reactor
import SMTP
import Synchronization
import Users

final class Authenticator: Sendable {
    /// Users files by domain (ASCII); replaced on reload.
    let tables: Mutex<[String: UsersFile]>
    /// Failures per client address within the window.
    let failures = Mutex<[String: (count: Int, since: UInt64)]>([:])
    /// A failure is answered this long after the attempt began, whatever made it fail (no such
    /// user, wrong password): the two are indistinguishable from outside, and guessing is slow.
    let failureDelay: UInt64
    /// Failures from one address within `window` before its attempts are refused unchecked (454).
    /// Failures before a client is refused unchecked (`limits { auth-failures }`); SIGHUP replaces it.
    let maxFailuresValue: Atomic<Int>
    var maxFailures: Int { maxFailuresValue.load(ordering: .relaxed) }
    func setMaxFailures(_ n: Int) { maxFailuresValue.store(n, ordering: .relaxed) }
    let window: UInt64
    /// Checked for a user who does not exist, so that the work (and time) is the same.
    let decoy: PasswordHash
    /// Where the scrypt work runs: one thread per core, shared in turn between the parties that
    /// ask (sessions, smtp channels), so a flood of checks from one delays another by at most one
    /// check each (FairWorkPool.swift).
    let pool: FairWorkPool

    init(users: [String: UsersFile], failureDelay: UInt64 = 1_000_000_000, maxFailures: Int = 10, window: UInt64 = 900_000_000_000) {
        tables = Mutex(users)
        pool = FairWorkPool()
        self.failureDelay = failureDelay
        self.maxFailuresValue = Atomic(maxFailures)
        self.window = window
        // Random salt and key: checking against it costs what a real check costs and never matches.
        var random = [UInt8](repeating: 0, count: 48)
        _ = RAND_bytes(&random, 48)
        decoy = PasswordHash(logN: PasswordHash.defaultLogN, r: 8, p: 1, salt: Array(random[0..<16]), key: Array(random[16...]))
    }

    func replace(_ users: [String: UsersFile]) { tables.withLock { $0 = users } }

    var isEmpty: Bool { tables.withLock { $0.isEmpty } }

    /// The stored hash of `user` (`local@domain`, domain in either IDN form).
    func hash(for user: String) -> PasswordHash? {
        guard let at = user.lastIndex(of: "@"), let domain = try? Domain(String(user[user.index(after: at)...])) else { return nil }
        let local = String(user[..<at])
        return tables.withLock { $0[domain.ascii]?.hash(for: local) }
    }

    /// Whether `local` is a user of `domain` (for recipients).
    func exists(_ local: String, _ domain: Domain) -> Bool? {
        tables.withLock { t in t[domain.ascii].map { $0.contains(local) } }
    }

    func overLimit(_ client: String) -> Bool {
        let now = ReactorSystem.now()
        return failures.withLock { f in
            guard let e = f[client] else { return false }
            if now - e.since > window {
                f[client] = nil
                return false
            }
            return e.count >= maxFailures
        }
    }

    func recordFailure(_ client: String) {
        let now = ReactorSystem.now()
        failures.withLock { f in
            if let e = f[client], now - e.since <= window {
                f[client] = (e.count + 1, e.since)
            } else {
                f[client] = (1, now)
            }
            // Old entries go when the table grows (no timer needed).
            if f.count > 10_000 { f = f.filter { now - $0.value.since <= window } }
        }
    }

    /// Checks `user`'s password off the loop (scrypt takes tens of milliseconds) in `party`'s turn,
    /// then answers on `loop`: at once on success, `failureDelay` after the start on failure.
    /// No answer comes for a check dropped while waiting: by `cancel(party:)`, or because its
    /// `cancel` token was set (the asker is gone).
    func check(user: String, password: [UInt8], client: String, group: UInt64 = 0, party: UInt64, cancel: CancelToken? = nil, loop: EventLoop, answer: @escaping @Sendable (AuthOutcome) -> Void) {
        let started = ReactorSystem.now()
        let delay = failureDelay
        let respond: @Sendable (AuthOutcome, Bool) -> Void = { outcome, ok in
            loop.execute {
                let elapsed = ReactorSystem.now() - started
                if ok || elapsed >= delay {
                    answer(outcome)
                } else {
                    loop.schedule(after: delay - elapsed) { answer(outcome) }
                }
            }
        }
        // Over the limit: no check at all (no pool turn either), the same delay, a temporary refusal.
        if overLimit(client) {
            respond(.refused(Reply.authTooManyFromClient), false)
            return
        }
        let hash = hash(for: user)
        let decoy = self.decoy
        let queued = pool.submit(group: group, party: party, cancel: cancel) {
            let ok = (hash ?? decoy).matches(password) && hash != nil
            if !ok { self.recordFailure(client) }
            respond(ok ? .authenticated(user) : .refused(.authFailed), ok)
        }
        // A party with a thousand checks waiting is told to try later, not queued further.
        if !queued { respond(.refused(Reply.authTooManyWaiting), false) }
    }

    /// Drops the checks `group` still has waiting (its channel closed); returns how many.
    @discardableResult
    func cancel(group: UInt64) -> Int { pool.cancel(group: group) }
}

extension Reply {
    static let authTooManyWaiting = Reply(454, EnhancedStatus(4, 7, 0), "Too many authentication attempts waiting; try again later")
    static let authTooManyFromClient = Reply(454, EnhancedStatus(4, 7, 0), "Too many failed authentication attempts from your address; try again later")
}
