// Bodies streamed into the spool as they arrive (privilege separation: a session holds at most a
// chunk of a message, whatever its size; docs/spool.md "Streamed bodies").
//
// A body is appended to an unnamed file in the spool's folder (O_TMPFILE: a crash or a client
// that goes away leaves nothing behind, so recovery has nothing to clean) and checksummed as it
// comes. At the end of the data, `accept(_:bodyParts:staged:)` hands the writer a record whose
// envelope and trace fields are in memory and whose body is that file: the writer copies it into
// the segment in the kernel (copy_file_range), never through user space, and the group commit's
// fdatasync covers it like any record. On disk it is the same record an in-memory body makes.
import CTernSystem
import Glibc

/// A message body being received. One owner appends to it; once handed to `accept` it is the
/// spool's (appending after that is a programming error).
public final class StagedBody: @unchecked Sendable {
    let fs: any SpoolFileSystem
    let file: SpoolFile
    let directory: String
    /// Bytes appended so far.
    public private(set) var length = 0
    /// CRC-32C (seed 0) of the bytes appended: combined into the record's checksum.
    private(set) var checksum: UInt32 = 0
    var handedOver = false

    init(fs: any SpoolFileSystem, file: SpoolFile, directory: String) {
        self.fs = fs
        self.file = file
        self.directory = directory
    }

    deinit { fs.close(file) }

    /// Appends the next piece of the body. A failure (no space) leaves the body unusable: the
    /// message must be refused.
    public func append(_ bytes: UnsafeRawBufferPointer) throws(SpoolError) {
        precondition(!handedOver, "a staged body appended to after it was handed to the spool")
        guard bytes.count > 0 else { return }
        do throws(SpoolError) {
            try fs.write(file, bytes, at: length)
        } catch {
            // (The file has no name: the error names the spool folder it is in.)
            throw SpoolError(operation: error.operation, path: "\(directory)/(a body being received)", errno: error.errno)
        }
        checksum = CRC32C.checksum(bytes, seed: checksum)
        length += bytes.count
    }

    public func append(_ bytes: [UInt8]) throws(SpoolError) {
        var failure: SpoolError? = nil
        bytes.withUnsafeBytes { b in
            do throws(SpoolError) { try append(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// The bytes appended, read back (for tests and for checks that must see the body).
    public func read(at offset: Int, count: Int) throws(SpoolError) -> [UInt8] {
        try fs.read(file, count: min(count, max(0, length - offset)), at: offset)
    }
}

/// A record waiting for the writer: bytes in memory, or, for a streamed body, `head`, the staged
/// file's bytes, then `tail`.
struct PendingRecord {
    var head: [UInt8]
    var staged: StagedBody? = nil
    var tail: [UInt8] = []

    var count: Int { head.count + (staged?.length ?? 0) + tail.count }
}

extension Spool {
    /// A new body to stream a message into (an unnamed file in the spool's folder).
    public func stageBody() throws(SpoolError) -> StagedBody {
        StagedBody(fs: fs, file: try fs.createUnnamed(in: directory), directory: directory)
    }

    /// Stores a client's message whose body is `bodyParts` (the trace fields, in memory) followed
    /// by `staged`. As `accept(_:bodyParts:completion:)` otherwise; `message.body` is not used.
    public func accept(_ message: SpoolMessage, bodyParts: [[UInt8]], staged: StagedBody, completion: @escaping @Sendable (AcceptOutcome) -> Void) -> AcceptResult {
        precondition(!staged.handedOver, "a staged body handed to the spool twice")
        staged.handedOver = true
        let (head, tail) = SpoolRecord.encodeMessage(message, bodyParts: bodyParts, staged: (staged.length, staged.checksum), key: recordKey)
        return enqueueAccept(message, PendingRecord(head: head, staged: staged, tail: tail), completion: completion)
    }
}

/// A message body as it ended up: small ones stay in memory (the common case costs no file at
/// all), larger ones are a staged file.
public enum StreamedBody: Sendable {
    case inMemory([UInt8])
    case staged(StagedBody)

    public var count: Int {
        switch self {
        case .inMemory(let b): return b.count
        case .staged(let s): return s.length
        }
    }
}

/// A body streamed from an event loop. The first `inlineLimit` bytes are kept in memory; past
/// that everything goes to a staged file, and `write` only copies the bytes into a queue and
/// returns: the spool's stager thread creates the file and appends to it, so a slow or frozen disk
/// holds the stager, never a loop. `buffered` says how much is not on the file yet (the session
/// stops reading past a bound and `whenDrained` tells it to go on); `finish` hands over the body
/// once every byte written before it is on the file.
public final class BodyStream: @unchecked Sendable {
    let spool: Spool
    /// Always kept in memory up to this; up to `inlineLimit` while the spool's streams together
    /// hold less than `Spool.inlineBudget` (a few large messages cost no file, a flood of them
    /// goes to files at once).
    public let inlineLimit: Int
    public let inlineFloor: Int
    /// What this stream counts in the spool's `inlineHeld`.
    var counted = 0
    /// This stream's bytes not on its file yet, and who waits for them to drain.
    let owed = StagingBacklog()
    // MARK: The writer's thread only (the loop)
    var inline: [UInt8] = []
    var spilled = false
    // MARK: Stager thread only
    var body: StagedBody? = nil
    var failure: SpoolError? = nil

    public init(spool: Spool, inlineLimit: Int = 256 * 1024, inlineFloor: Int = 64 * 1024) {
        self.spool = spool
        self.inlineLimit = inlineLimit
        self.inlineFloor = min(inlineFloor, inlineLimit)
    }

    deinit { release() }

    /// Stops counting this stream's in-memory bytes against the spool's budget.
    func release() {
        if counted > 0 { spool.inlineHeld.subtract(counted, ordering: .relaxed) }
        counted = 0
    }

    /// Whether `n` more bytes may stay in memory (and counts them when they may).
    func keepInline(_ n: Int) -> Bool {
        let after = inline.count + n
        if after > inlineLimit { return false }
        let held = spool.inlineHeld.load(ordering: .relaxed)
        // Past the floor, within the budget; under it, within the budget and `floorAllowance`
        // more (a thousand streams at their floors would hold 64 MiB).
        if after > inlineFloor ? held + n > spool.inlineBudget : held + n > spool.inlineBudget + spool.floorAllowance { return false }
        spool.inlineHeld.add(n, ordering: .relaxed)
        counted += n
        return true
    }

    /// Bytes written past the inline part and not yet on the staged file.
    public var buffered: Int { owed.current }

    /// Queues the next piece of the body (copied; the caller may reuse its buffer).
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if !spilled {
            if keepInline(bytes.count) {
                inline.append(contentsOf: bytes)
                return
            }
            spilled = true
            release()
            var first = inline
            inline = []
            first.append(contentsOf: bytes)
            stage(first)
            return
        }
        stage([UInt8](bytes))
    }

    func stage(_ copy: [UInt8]) {
        owed.add(copy.count)
        spool.backlog.add(copy.count)
        spool.stager.run { [self] in
            if failure == nil {
                do throws(SpoolError) {
                    if body == nil { body = try spool.stageBody() }
                    try body!.append(copy)
                } catch {
                    failure = error
                }
            }
            owed.remove(copy.count)
            spool.backlog.remove(copy.count)
        }
    }

    /// Calls `f` (on the stager thread, or here when it is so already) once at most `bytes` are
    /// buffered. Every waiter is called: a second call does not replace the first (a replaced
    /// waiter is a channel that never reads again).
    public func whenDrained(below bytes: Int, _ f: @escaping @Sendable () -> Void) {
        owed.whenBelow(bytes, f)
    }

    /// Once everything written is on the staged file (or at once for a body kept in memory): the
    /// body, or the error that stopped it. `completion` runs on the stager thread, or here.
    public func finish(_ completion: @escaping @Sendable (Result<StreamedBody, SpoolError>) -> Void) {
        guard spilled else {
            let body = inline
            inline = []
            release()
            completion(.success(.inMemory(body)))
            return
        }
        spool.stager.run { [self] in
            if let failure {
                completion(.failure(failure))
            } else if let body {
                completion(.success(.staged(body)))
            } else {
                completion(.failure(SpoolError(operation: "stage", path: spool.directory, errno: EIO)))
            }
            body = nil
        }
    }
}

/// Bytes handed to the stager and not on their files yet, and who waits for them to fall: one
/// stream's (`BodyStream.buffered`), and the spool's over every stream (`Spool.backlog`: the
/// queue stops reading its channels past a bound, so a disk slower than the network holds TCP
/// back instead of memory).
public final class StagingBacklog: @unchecked Sendable {
    let lock = PThreadLock()
    var bytes = 0
    var waiters: [(below: Int, call: @Sendable () -> Void)] = []

    public var current: Int { lock.locked { bytes } }

    func add(_ n: Int) { lock.locked { bytes += n } }

    func remove(_ n: Int) {
        let due: [@Sendable () -> Void] = lock.locked {
            bytes -= n
            guard !waiters.isEmpty else { return [] }
            let calls = waiters.filter { bytes <= $0.below }.map(\.call)
            if !calls.isEmpty { waiters.removeAll { bytes <= $0.below } }
            return calls
        }
        for f in due { f() }
    }

    /// Calls `f` once at most `n` bytes are owed (at once when so already; else on the stager
    /// thread). Every waiter is called.
    public func whenBelow(_ n: Int, _ f: @escaping @Sendable () -> Void) {
        let now: Bool = lock.locked {
            if bytes <= n { return true }
            waiters.append((n, f))
            return false
        }
        if now { f() }
    }
}

/// The spool's stager thread: runs body appends in order, off the loops. Its time on one job
/// counts as the spool's (a frozen disk shows as `stalled`, and new mail is refused at MAIL).
final class Stager: @unchecked Sendable {
    let lock = PThreadLock()
    var jobs: [@Sendable () -> Void] = []
    var head = 0
    var started = false
    /// When the job running began (monotonic seconds), nil when idle.
    var busySince: Double? = nil

    func run(_ job: @escaping @Sendable () -> Void) {
        lock.locked {
            jobs.append(job)
            if !started {
                started = true
                let box = Unmanaged.passRetained(self)
                var tid = pthread_t()
                pthread_create(&tid, nil, { arg in
                    _ = tern_set_thread_name("tern-stager")
                    Unmanaged<Stager>.fromOpaque(arg!).takeRetainedValue().work()
                    return nil
                }, box.toOpaque())
                pthread_detach(tid)
            }
            lock.signal()
        }
    }

    var busySeconds: Double? { lock.locked { busySince.map { monotonicSeconds() - $0 } } }

    func work() {
        while true {
            lock.lock()
            while head == jobs.count { lock.wait() }
            let job = jobs[head]
            // (The slot lets go of the job at once: a done job's bytes must not wait in the array.)
            jobs[head] = {}
            head += 1
            if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            busySince = monotonicSeconds()
            lock.unlock()
            job()
            lock.locked { busySince = nil }
        }
    }
}
