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
    // MARK: Guarded by `lock`
    var queues: [UInt64: [Job]] = [:]
    /// The parties with work, in the order they are served (round robin).
    var turn: [UInt64] = []
    var started = 0

    /// - Parameter threads: at most this many jobs at once (default: one per core).
    init(threads: Int = 0, maxQueuedPerParty: Int = 1024) {
        self.threads = threads > 0 ? threads : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        self.maxQueuedPerParty = maxQueuedPerParty
    }

    /// Queues `job` for `party`; false when that party already has `maxQueuedPerParty` waiting.
    /// A job whose `cancel` token is set by the time its turn comes is skipped (its asker left).
    @discardableResult
    func submit(party: UInt64, cancel: CancelToken? = nil, _ job: @escaping Job) -> Bool {
        var run = job
        if let cancel {
            run = {
                if !cancel.isCancelled { job() }
            }
        }
        let job = run
        return lock.locked {
            if queues[party]?.count ?? 0 >= maxQueuedPerParty { return false }
            if queues[party] == nil {
                queues[party] = []
                turn.append(party)
            }
            queues[party]!.append(job)
            if started < threads { startThread() }
            lock.signal()
            return true
        }
    }

    /// Drops what `party` still has waiting (a job already running finishes); returns how many.
    @discardableResult
    func cancel(party: UInt64) -> Int {
        lock.locked {
            guard let dropped = queues.removeValue(forKey: party) else { return 0 }
            turn.removeAll { $0 == party }
            return dropped.count
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
            // The next party in turn gives one job and goes to the back of the line.
            let party = turn.removeFirst()
            let job = queues[party]!.removeFirst()
            if queues[party]!.isEmpty { queues[party] = nil } else { turn.append(party) }
            lock.unlock()
            job()
        }
    }
}
