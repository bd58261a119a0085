// A few threads for CPU-heavy work (scrypt password checks), shared fairly between the parties
// that ask: each party (a client address, an smtp channel) has its own FIFO queue and the threads take
// from the parties in turn, so one that floods the pool with checks delays the others by at most
// one check each. A party that goes away (its channel closed) has what still waits dropped.
// The threads are plain pthreads, not Swift tasks: a 50 ms scrypt must not hold a thread of the
// cooperative pool the DNS and TLS work runs on.
import Glibc
import Spool
import Synchronization

/// Set once the one who asked is gone: its jobs still waiting are skipped.
final class CancelToken: Sendable {
    let flag = Atomic<Bool>(false)
    var isCancelled: Bool { flag.load(ordering: .relaxed) }
    func cancel() { flag.store(true, ordering: .relaxed) }
}

final class FairWorkPool: @unchecked Sendable {
    typealias Job = @Sendable () -> Void
    let threads: Int
    /// Jobs waiting beyond this, per party, are refused (the caller answers "try later").
    let maxQueuedPerParty: Int
    let lock = PThreadLock()
    /// A group's parties (an smtp channel's clients): their queues and whose turn is next.
    struct Group {
        var queues: [UInt64: [Job]] = [:]
        var turn: [UInt64] = []
    }
    // MARK: Guarded by `lock`
    var groups: [UInt64: Group] = [:]
    /// The groups with work, in the order they are served (round robin).
    var turn: [UInt64] = []
    var started = 0

    /// - Parameter threads: at most this many jobs at once (default: one per core).
    init(threads: Int = 0, maxQueuedPerParty: Int = 1024) {
        self.threads = threads > 0 ? threads : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        self.maxQueuedPerParty = maxQueuedPerParty
    }

    /// Queues `job` for `party` of `group`; false when that party already has
    /// `maxQueuedPerParty` waiting. Groups are served in turn, and within a group its parties in
    /// turn: one smtp channel flooding from many addresses delays another channel by one job per
    /// thread, and one address flooding a channel delays that channel's other clients the same.
    /// A job whose `cancel` token is set by the time its turn comes is skipped (its asker left).
    @discardableResult
    func submit(group: UInt64 = 0, party: UInt64, cancel: CancelToken? = nil, _ job: @escaping Job) -> Bool {
        var run = job
        if let cancel {
            run = {
                if !cancel.isCancelled { job() }
            }
        }
        let job = run
        return lock.locked {
            if groups[group]?.queues[party]?.count ?? 0 >= maxQueuedPerParty { return false }
            if groups[group] == nil {
                groups[group] = Group()
                turn.append(group)
            }
            if groups[group]!.queues[party] == nil {
                groups[group]!.queues[party] = []
                groups[group]!.turn.append(party)
            }
            groups[group]!.queues[party]!.append(job)
            if started < threads { startThread() }
            lock.signal()
            return true
        }
    }

    /// Drops what `group` still has waiting (a job already running finishes); returns how many.
    @discardableResult
    func cancel(group: UInt64) -> Int {
        lock.locked {
            guard let dropped = groups.removeValue(forKey: group) else { return 0 }
            turn.removeAll { $0 == group }
            return dropped.queues.values.reduce(0) { $0 + $1.count }
        }
    }

    /// (Under the lock.)
    func startThread() {
        started += 1
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            Unmanaged<FairWorkPool>.fromOpaque(arg!).takeRetainedValue().work()
            return nil
        }, box.toOpaque())
        // The pool lives as long as the process (each thread keeps it).
        pthread_detach(tid)
    }

    func work() {
        while true {
            lock.lock()
            while turn.isEmpty { lock.wait() }
            // The next group in turn gives one job of its next party; both go to the back of
            // their lines.
            let group = turn.removeFirst()
            let party = groups[group]!.turn.removeFirst()
            let job = groups[group]!.queues[party]!.removeFirst()
            if groups[group]!.queues[party]!.isEmpty { groups[group]!.queues[party] = nil } else { groups[group]!.turn.append(party) }
            if groups[group]!.turn.isEmpty { groups[group] = nil } else { turn.append(group) }
            lock.unlock()
            job()
        }
    }
}
