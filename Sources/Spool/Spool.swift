// The spool: an append-only log of records in segment files, made durable by group commit.
//
// Sessions append a message record (a write to the page cache, under a lock) and ask to be told
// when it is durable. One committer thread runs fdatasync for everything appended so far and then
// answers every waiter whose record it covered: all sessions finishing DATA while one fdatasync
// runs share the next one. See docs/spool.md for the format and the recovery rules.

import Glibc
import Synchronization

public struct SpoolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32

    public var description: String {
        "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }

    static func last(_ op: String, _ path: String) -> SpoolError { SpoolError(operation: op, path: path, errno: Glibc.errno) }
}

/// Where a record lies: its segment and byte range.
public struct RecordLocation: Sendable, Equatable, Hashable {
    public var segment: UInt64
    public var offset: Int
    public var length: Int

    public init(segment: UInt64, offset: Int, length: Int) {
        self.segment = segment
        self.offset = offset
        self.length = length
    }
}

/// What recovery found.
public struct RecoveryReport: Sendable, Equatable {
    public var segments = 0
    public var records = 0
    public var messages = 0
    public var pendingMessages = 0
    /// Bytes cut from the end of the last segment (a torn write).
    public var truncatedBytes = 0
    /// Damage found before the end of a segment (records after it in that segment are lost).
    public var corruptions: [String] = []
    public var seconds: Double = 0
}

public final class Spool: @unchecked Sendable {
    public let directory: String
    public let segmentSize: Int
    let lock = PThreadLock()
    // Guarded by `lock`:
    var fd: Int32 = -1
    var segment: UInt64 = 0
    var offset = 0
    /// Bytes appended since start (all segments); a waiter waits for `durable` to pass its position.
    var appended: UInt64 = 0
    var durable: UInt64 = 0
    var broken: SpoolError? = nil
    var waiters: [(position: UInt64, done: @Sendable (SpoolError?) -> Void)] = []
    var stopping = false
    var committer: pthread_t? = nil
    /// fdatasync calls made (for tests and the group-commit benchmark).
    public private(set) var syncCount = 0
    var nextID: UInt64 = 0

    /// Opens (creating) the spool folder. Call `recover(_:)` before appending.
    public init(directory: String, segmentSize: Int = 64 * 1024 * 1024) throws(SpoolError) {
        self.directory = directory
        self.segmentSize = segmentSize
        try Self.makeDirectories(directory)
    }

    deinit { close() }

    static func makeDirectories(_ path: String) throws(SpoolError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o750) != 0 && Glibc.errno != EEXIST { throw .last("mkdir", current) }
        }
    }

    func segmentPath(_ n: UInt64) -> String { Self.segmentPath(directory, n) }

    static func segmentPath(_ directory: String, _ n: UInt64) -> String {
        let hex = String(n, radix: 16)
        return "\(directory)/\(String(repeating: "0", count: max(0, 16 - hex.count)))\(hex).seg"
    }

    /// Segment numbers present, in order.
    public func segments() -> [UInt64] { Self.segments(in: directory) }

    static func segments(in directory: String) -> [UInt64] {
        guard let d = opendir(directory) else { return [] }
        defer { closedir(d) }
        var out: [UInt64] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            if name.hasSuffix(".seg"), let n = UInt64(name.dropLast(4), radix: 16) { out.append(n) }
        }
        return out.sorted()
    }

    /// Reads every segment, calling `visit` for each record in log order (message bodies are not
    /// loaded: read them back with `read(_:)`), cuts a torn tail, and opens a new segment for
    /// appending. Starts the committer.
    public func recover(_ visit: (SpoolRecord, RecordLocation) -> Void) throws(SpoolError) -> RecoveryReport {
        let start = monotonicSeconds()
        var report = RecoveryReport()
        let all = segments()
        report.segments = all.count
        var maxID: UInt64 = 0
        for (k, n) in all.enumerated() {
            let path = segmentPath(n)
            let bytes = try Self.readFile(path)
            let (pos, damage) = Self.decodeRecords(bytes, segment: n) { r, at in
                report.records += 1
                if case .message(let m) = r {
                    report.messages += 1
                    maxID = max(maxID, m.id)
                }
                visit(r, at)
            }
            if let damage {
                if k == all.count - 1 {
                    // A torn write at the end of the log: nothing after it was acknowledged.
                    report.truncatedBytes = bytes.count - pos
                    guard truncate(path, off_t(pos)) == 0 else { throw .last("truncate", path) }
                } else {
                    report.corruptions.append("\(path) at byte \(pos): \(damage); \(bytes.count - pos) bytes skipped")
                }
            }
        }
        nextID = maxID
        try openSegment((all.last ?? 0) + 1)
        startCommitter()
        report.seconds = monotonicSeconds() - start
        return report
    }

    /// Reads `count` bytes at `offset`; fewer only when the file ends first.
    static func pread(_ f: Int32, count: Int, at offset: Int, path: String) throws(SpoolError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { Glibc.pread(f, $0.baseAddress! + got, count - got, off_t(offset + got)) }
            if n < 0 && Glibc.errno == EINTR { continue }
            if n < 0 { throw .last("read", path) }
            if n == 0 { break }
            got += n
        }
        if got < count { out.removeLast(count - got) }
        return out
    }

    /// Why decoding stopped at a record cut short: a torn write, or one still being written.
    static let incompleteRecord = "incomplete record"

    /// Decodes a segment's records in order (message bodies skipped); where decoding stopped,
    /// and why when that is before the end.
    static func decodeRecords(_ bytes: [UInt8], segment n: UInt64, _ visit: (SpoolRecord, RecordLocation) -> Void) -> (end: Int, damage: String?) {
        var pos = 0
        var damage: String? = nil
        bytes.withUnsafeBytes { b in
            while pos < b.count {
                switch SpoolRecord.decode(UnsafeRawBufferPointer(rebasing: b[pos...]), skipBody: true) {
                case .record(let r, let length):
                    visit(r, RecordLocation(segment: n, offset: pos, length: length))
                    pos += length
                case .incomplete:
                    damage = incompleteRecord
                    return
                case .corrupt(let why):
                    damage = why
                    return
                }
            }
        }
        return (pos, damage)
    }

    /// Reads the spool in `directory` without changing anything, while ternd may be appending to
    /// it (`ternctl queue`): every record in log order, as `recover` would see them. A record
    /// being written at the end is not seen yet; a segment removed meanwhile held nothing owed.
    /// Returns what damage was found (a torn tail is not damage here: it may be a write in flight).
    public static func scan(directory: String, _ visit: (SpoolRecord, RecordLocation) -> Void) throws(SpoolError) -> [String] {
        var notes: [String] = []
        let all = segments(in: directory)
        for (k, n) in all.enumerated() {
            let path = segmentPath(directory, n)
            let bytes: [UInt8]
            do {
                bytes = try readFile(path)
            } catch {
                if error.errno == ENOENT { continue }
                throw error
            }
            let (pos, damage) = decodeRecords(bytes, segment: n, visit)
            if let damage, k < all.count - 1 || damage != incompleteRecord {
                notes.append("\(path) at byte \(pos): \(damage); \(bytes.count - pos) bytes not read")
            }
        }
        return notes
    }

    static func readFile(_ path: String) throws(SpoolError) -> [UInt8] {
        let f = open(path, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { throw .last("open", path) }
        defer { Glibc.close(f) }
        var st = stat()
        guard fstat(f, &st) == 0 else { throw .last("fstat", path) }
        return try Self.pread(f, count: Int(st.st_size), at: 0, path: path)
    }

    /// Read-only descriptors of segments, kept open for delivery reads (closed with the segment).
    let readers = Mutex<[UInt64: Int32]>([:])

    func reader(_ segment: UInt64) throws(SpoolError) -> Int32 {
        if let f = readers.withLock({ $0[segment] }) { return f }
        let path = segmentPath(segment)
        let f = open(path, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { throw .last("open", path) }
        let kept = readers.withLock { r -> Int32 in
            if let existing = r[segment] { return existing }
            r[segment] = f
            return f
        }
        if kept != f { Glibc.close(f) }
        return kept
    }

    /// Reads one record back (for delivery).
    public func read(_ at: RecordLocation) throws(SpoolError) -> SpoolRecord {
        let path = segmentPath(at.segment)
        let buf = try Self.pread(try reader(at.segment), count: at.length, at: at.offset, path: path)
        guard buf.count == at.length else { throw SpoolError(operation: "read", path: path, errno: EIO) }
        switch buf.withUnsafeBytes({ SpoolRecord.decode($0) }) {
        case .record(let r, _): return r
        default: throw SpoolError(operation: "decode", path: path, errno: EIO)
        }
    }

    /// Opens segment `n` for appending and makes its directory entry durable. Caller holds the lock
    /// (or runs before the committer starts).
    func openSegment(_ n: UInt64) throws(SpoolError) {
        let path = segmentPath(n)
        let f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o640)
        guard f >= 0 else { throw .last("create", path) }
        try syncDirectory()
        if fd >= 0 { Glibc.close(fd) }
        fd = f
        segment = n
        offset = 0
    }

    func syncDirectory() throws(SpoolError) {
        let d = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard d >= 0 else { throw .last("open", directory) }
        defer { Glibc.close(d) }
        guard fsync(d) == 0 else { throw .last("fsync", directory) }
    }

    /// A new message id: milliseconds since the epoch in the high bits, unique and increasing.
    public func newID() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let base = (UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000) << 16
        return lock.locked {
            nextID = max(nextID + 1, base)
            return nextID
        }
    }

    /// Appends an encoded record. The bytes are in the page cache when this returns, not yet durable:
    /// call `whenDurable` with the returned position.
    public func append(_ bytes: [UInt8]) throws(SpoolError) -> (RecordLocation, UInt64) {
        try lock.lockedThrowing { () throws(SpoolError) -> (RecordLocation, UInt64) in
            if let b = broken { throw b }
            if offset > 0, offset + bytes.count > segmentSize {
                // Rotate: make the old segment durable first, so positions stay monotonic.
                guard fdatasync(fd) == 0 else {
                    let e = SpoolError.last("fdatasync", segmentPath(segment))
                    broken = e
                    throw e
                }
                syncCount += 1
                durable = appended
                try openSegment(segment + 1)
            }
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
                if n < 0 && Glibc.errno == EINTR { continue }
                guard n > 0 else {
                    let e = SpoolError.last("write", segmentPath(segment))
                    // Cut the partial record so the log stays readable.
                    if ftruncate(fd, off_t(offset)) != 0 { broken = e }
                    throw e
                }
                written += n
            }
            let loc = RecordLocation(segment: segment, offset: offset, length: bytes.count)
            offset += bytes.count
            appended += UInt64(bytes.count)
            return (loc, appended)
        }
    }

    /// Calls `done` once everything up to `position` is on stable storage (nil), or with the error
    /// that prevented it. Called on the committer thread.
    public func whenDurable(_ position: UInt64, _ done: @escaping @Sendable (SpoolError?) -> Void) {
        let immediate: SpoolError?? = lock.locked {
            if let b = broken { return .some(b) }
            if durable >= position { return .some(nil) }
            waiters.append((position, done))
            lock.signal()
            return .none
        }
        if let r = immediate { done(r) }
    }

    func startCommitter() {
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            let spool = Unmanaged<Spool>.fromOpaque(arg!).takeRetainedValue()
            spool.commitLoop()
            return nil
        }, box.toOpaque())
        committer = tid
    }

    /// The group commit: wait for waiters, fdatasync once for all appended so far, answer them.
    func commitLoop() {
        while true {
            lock.lock()
            while waiters.isEmpty && !stopping { lock.wait() }
            if stopping && waiters.isEmpty {
                lock.unlock()
                return
            }
            let target = appended
            // A duplicate, so a rotation closing the segment meanwhile cannot pull the fd away.
            let f = dup(fd)
            let path = segmentPath(segment)
            lock.unlock()
            let ok = f >= 0 && fdatasync(f) == 0
            let err = ok ? nil : SpoolError.last("fdatasync", path)
            if f >= 0 { Glibc.close(f) }
            var ready: [@Sendable (SpoolError?) -> Void] = []
            lock.lock()
            syncCount += 1
            if ok {
                durable = max(durable, target)
            } else {
                broken = err
            }
            var keep: [(position: UInt64, done: @Sendable (SpoolError?) -> Void)] = []
            for w in waiters {
                if !ok || w.position <= durable { ready.append(w.done) } else { keep.append(w) }
            }
            waiters = keep
            lock.unlock()
            for r in ready { r(err) }
        }
    }

    /// Deletes a segment whose messages are all finished.
    public func removeSegment(_ n: UInt64) {
        let current = lock.locked { segment }
        guard n != current else { return }
        if let f = readers.withLock({ $0.removeValue(forKey: n) }) { Glibc.close(f) }
        unlink(segmentPath(n))
    }

    /// Current segment number.
    public var currentSegment: UInt64 { lock.locked { segment } }

    /// Stops the committer after answering every waiter, and closes the log.
    public func close() {
        let t: pthread_t? = lock.locked {
            stopping = true
            lock.signal()
            let t = committer
            committer = nil
            return t
        }
        if let t { pthread_join(t, nil) }
        for f in readers.withLock({ r -> [Int32] in defer { r.removeAll() }; return Array(r.values) }) { Glibc.close(f) }
        lock.locked {
            if fd >= 0 {
                _ = fdatasync(fd)
                Glibc.close(fd)
                fd = -1
            }
        }
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A pthread mutex with one condition variable (Swift's Mutex has no condition variable).
public final class PThreadLock: @unchecked Sendable {
    let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(m, nil)
        pthread_cond_init(c, nil)
    }

    deinit {
        pthread_mutex_destroy(m)
        pthread_cond_destroy(c)
        m.deallocate()
        c.deallocate()
    }

    public func lock() { pthread_mutex_lock(m) }
    public func unlock() { pthread_mutex_unlock(m) }
    public func wait() { pthread_cond_wait(c, m) }
    public func signal() { pthread_cond_signal(c) }
    public func broadcast() { pthread_cond_broadcast(c) }

    /// Waits at most `seconds` (the lock is held on return).
    public func wait(seconds: Double) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let total = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 + max(seconds, 0)
        ts.tv_sec = Int(total)
        ts.tv_nsec = Int((total - Double(Int(total))) * 1e9)
        pthread_cond_timedwait(c, m, &ts)
    }

    public func locked<T>(_ body: () -> T) -> T {
        lock()
        defer { unlock() }
        return body()
    }

    func lockedThrowing<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
