// File systems for spool tests: one in memory that knows what a crash would keep, and a wrapper
// that makes any call of another one fail or block.

import Glibc
import Spool
import Synchronization

/// A file system in memory that keeps, per file and for the folders, what is durable apart from
/// what is only written: `crashed(using:)` gives the state a power cut would leave — what was
/// synced, plus a prefix of what was written after (in order, the last write cut at an arbitrary
/// byte). Folder changes (create, rename, remove) go into one journal, as on ext4: an fsync of any
/// folder commits all of it, a rename is atomic, and a crash keeps a prefix of what was not
/// committed. `flipBit` damages a file as a bad disk would.
public final class MemoryFileSystem: SpoolFileSystem, @unchecked Sendable {
    final class Inode {
        var data: [UInt8] = []
        /// Bytes of holes (a write past the end leaves one): they take no space.
        var sparse = 0
        var durable: [UInt8] = []
        /// Changes since the last sync, in order.
        var log: [Change] = []
    }

    enum Change {
        case write(offset: Int, bytes: [UInt8])
        case truncate(Int)
    }

    struct Folder {
        var entries: [String: Inode] = [:]
        var durable: [String: Inode] = [:]
    }

    /// A folder change not yet committed.
    enum FolderChange {
        case set(folder: String, name: String, Inode)
        case remove(folder: String, name: String)
        case rename(from: String, fromName: String, to: String, toName: String, Inode)
    }

    /// Folder changes since the last commit, in order.
    var journal: [FolderChange] = []

    let lock = PThreadLock()
    var folders: [String: Folder] = [:]
    var handles: [Int32: (inode: Inode, writable: Bool)] = [:]
    var nextHandle: Int32 = 3
    /// Bytes the file system holds at most (nil: no limit).
    public var capacity: Int?
    /// After a crash the old instance refuses everything (its writer must not touch the new one).
    var dead = false

    public init(capacity: Int? = nil) {
        self.capacity = capacity
        folders["/"] = Folder()
    }

    static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return ("/", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    func fail(_ op: String, _ path: String, _ e: Int32) -> SpoolError { SpoolError(operation: op, path: path, errno: e) }

    func check(_ op: String, _ path: String) throws(SpoolError) {
        if dead { throw fail(op, path, EIO) }
    }

    var used: Int {
        var seen = Set<ObjectIdentifier>()
        var total = 0
        for f in folders.values {
            for i in f.entries.values where seen.insert(ObjectIdentifier(i)).inserted { total += i.data.count - i.sparse }
        }
        for h in handles.values where seen.insert(ObjectIdentifier(h.inode)).inserted { total += h.inode.data.count - h.inode.sparse }
        return total
    }

    func inode(_ path: String) -> Inode? {
        let (d, n) = Self.split(path)
        return folders[d]?.entries[n]
    }

    public func makeDirectories(_ path: String) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            try check("mkdir", path)
            var current = ""
            for part in path.split(separator: "/") {
                current += "/" + part
                if folders[current] == nil { folders[current] = Folder() }
            }
        }
    }

    public func list(_ directory: String) throws(SpoolError) -> [String] {
        try lock.lockedThrowing { () throws(SpoolError) -> [String] in
            try check("opendir", directory)
            guard let f = folders[Self.normal(directory)] else { throw fail("opendir", directory, ENOENT) }
            return Array(f.entries.keys)
        }
    }

    static func normal(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    public func create(_ path: String) throws(SpoolError) -> SpoolFile {
        try lock.lockedThrowing { () throws(SpoolError) -> SpoolFile in
            try check("create", path)
            let (d, n) = Self.split(path)
            guard folders[d] != nil else { throw fail("create", path, ENOENT) }
            guard folders[d]!.entries[n] == nil else { throw fail("create", path, EEXIST) }
            let i = Inode()
            folders[d]!.entries[n] = i
            journal.append(.set(folder: d, name: n, i))
            let h = nextHandle
            nextHandle += 1
            handles[h] = (i, true)
            return SpoolFile(h)
        }
    }

    /// An inode in no folder: it lives while a handle holds it, and a crash loses it.
    public func createUnnamed(in directory: String) throws(SpoolError) -> SpoolFile {
        try lock.lockedThrowing { () throws(SpoolError) -> SpoolFile in
            try check("create", directory)
            guard folders[Self.normal(directory)] != nil else { throw fail("create", directory, ENOENT) }
            let h = nextHandle
            nextHandle += 1
            handles[h] = (Inode(), true)
            return SpoolFile(h)
        }
    }

    public func open(_ path: String, writable: Bool) throws(SpoolError) -> SpoolFile {
        try lock.lockedThrowing { () throws(SpoolError) -> SpoolFile in
            try check("open", path)
            guard let i = inode(path) else { throw fail("open", path, ENOENT) }
            let h = nextHandle
            nextHandle += 1
            handles[h] = (i, writable)
            return SpoolFile(h)
        }
    }

    public func close(_ file: SpoolFile) {
        lock.locked {
            _ = handles.removeValue(forKey: file.handle)
            if let p = locks.first(where: { $0.value == file.handle })?.key { locks[p] = nil }
        }
    }

    /// Locks held (path: handle); a crash drops them, as the end of a process does.
    var locks: [String: Int32] = [:]

    public func lockExclusively(_ path: String) throws(SpoolError) -> SpoolFile {
        try lock.lockedThrowing { () throws(SpoolError) -> SpoolFile in
            try check("lock", path)
            guard locks[path] == nil else { throw fail("lock", path, EWOULDBLOCK) }
            let h = nextHandle
            nextHandle += 1
            locks[path] = h
            return SpoolFile(h)
        }
    }

    func handle(_ f: SpoolFile, _ op: String) throws(SpoolError) -> (inode: Inode, writable: Bool) {
        try check(op, "fd \(f.handle)")
        guard let h = handles[f.handle] else { throw fail(op, "fd \(f.handle)", EBADF) }
        return h
    }

    public func size(_ file: SpoolFile) throws(SpoolError) -> Int {
        try lock.lockedThrowing { () throws(SpoolError) -> Int in try handle(file, "fstat").inode.data.count }
    }

    public func write(_ file: SpoolFile, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            let h = try handle(file, "write")
            guard h.writable else { throw fail("write", "fd \(file.handle)", EBADF) }
            var n = bytes.count
            var short = false
            if let cap = capacity {
                // Past the end, the gap is a hole: only the bytes written take space.
                let grow = max(0, offset + n - max(h.inode.data.count, offset))
                let room = cap - used
                if grow > room {
                    n = max(0, n - (grow - max(room, 0)))
                    short = true
                }
            }
            if offset > h.inode.data.count, n > 0 { h.inode.sparse += offset - h.inode.data.count }
            if n > 0 {
                let chunk = Array(UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
                Self.apply(.write(offset: offset, bytes: chunk), to: &h.inode.data)
                h.inode.log.append(.write(offset: offset, bytes: chunk))
            }
            if short { throw fail("write", "fd \(file.handle)", ENOSPC) }
        }
    }

    static func apply(_ c: Change, to data: inout [UInt8]) {
        switch c {
        case .write(let offset, let bytes):
            if data.count < offset + bytes.count { data += [UInt8](repeating: 0, count: offset + bytes.count - data.count) }
            data.withUnsafeMutableBytes { d in
                bytes.withUnsafeBytes { b in
                    if let base = b.baseAddress { (d.baseAddress! + offset).copyMemory(from: base, byteCount: b.count) }
                }
            }
        case .truncate(let n):
            if n < data.count { data.removeLast(data.count - n) } else { data += [UInt8](repeating: 0, count: n - data.count) }
        }
    }

    public func read(_ file: SpoolFile, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SpoolError) -> Int {
        try lock.lockedThrowing { () throws(SpoolError) -> Int in
            let d = try handle(file, "read").inode.data
            guard offset < d.count else { return 0 }
            let n = min(buffer.count, d.count - offset)
            d.withUnsafeBytes { src in buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n) }
            return n
        }
    }

    public func sync(_ file: SpoolFile) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            let h = try handle(file, "fdatasync")
            h.inode.durable = h.inode.data
            h.inode.log.removeAll()
        }
    }

    public func truncate(_ file: SpoolFile, to length: Int) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            let h = try handle(file, "truncate")
            Self.apply(.truncate(length), to: &h.inode.data)
            h.inode.sparse = min(h.inode.sparse, length)
            h.inode.log.append(.truncate(length))
        }
    }

    public func punchHole(_ file: SpoolFile, offset: Int, length: Int) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            let h = try handle(file, "fallocate")
            let end = min(offset + length, h.inode.data.count)
            guard end > offset else { return }
            let zeros = [UInt8](repeating: 0, count: end - offset)
            Self.apply(.write(offset: offset, bytes: zeros), to: &h.inode.data)
            h.inode.log.append(.write(offset: offset, bytes: zeros))
        }
    }

    public func syncDirectory(_ path: String) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            try check("fsync", path)
            let p = Self.normal(path)
            guard folders[p] != nil else { throw fail("open", path, ENOENT) }
            // A journal commit: every folder change so far is durable.
            for k in folders.keys { folders[k]!.durable = folders[k]!.entries }
            journal.removeAll()
        }
    }

    public func unlink(_ path: String) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            try check("unlink", path)
            let (d, n) = Self.split(path)
            guard folders[d]?.entries[n] != nil else { return }
            folders[d]!.entries[n] = nil
            journal.append(.remove(folder: d, name: n))
        }
    }

    public func rename(_ from: String, _ to: String) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            try check("rename", from)
            let (d1, n1) = Self.split(from)
            let (d2, n2) = Self.split(to)
            guard let i = folders[d1]?.entries[n1], folders[d2] != nil else { throw fail("rename", from, ENOENT) }
            folders[d1]!.entries[n1] = nil
            folders[d2]!.entries[n2] = i
            journal.append(.rename(from: d1, fromName: n1, to: d2, toName: n2, i))
        }
    }

    public func copy(_ from: String, _ to: String) throws(SpoolError) {
        try lock.lockedThrowing { () throws(SpoolError) in
            try check("copy", from)
            guard let src = inode(from) else { throw fail("open", from, ENOENT) }
            let (d, n) = Self.split(to)
            guard folders[d] != nil else { throw fail("create", to, ENOENT) }
            guard folders[d]!.entries[n] == nil else { throw fail("create", to, EEXIST) }
            if let cap = capacity, src.data.count > cap - used { throw fail("copy_file_range", to, ENOSPC) }
            let i = Inode()
            i.data = src.data
            i.durable = src.data
            folders[d]!.entries[n] = i
            journal.append(.set(folder: d, name: n, i))
        }
    }

    public func freeBytes(_ path: String) -> Int? {
        lock.locked { capacity.map { $0 - used } }
    }

    public func totalBytes(_ path: String) -> Int? { lock.locked { capacity } }

    public func withContents<T>(of path: String, _ body: (UnsafeRawBufferPointer) throws(SpoolError) -> T) throws(SpoolError) -> T {
        let data = try lock.lockedThrowing { () throws(SpoolError) -> [UInt8] in
            try check("open", path)
            guard let i = inode(path) else { throw fail("open", path, ENOENT) }
            return i.data
        }
        var failure: SpoolError? = nil
        let r: T? = data.withUnsafeBytes { b in
            do throws(SpoolError) { return try body(b) } catch {
                failure = error
                return nil
            }
        }
        if let failure { throw failure }
        return r!
    }

    // MARK: Test controls

    /// The state a crash now would leave, as a new file system; this one refuses every call from
    /// now on (EIO), so whatever still runs against it cannot change what survived.
    public func crashed<G: RandomNumberGenerator>(using g: inout G) -> MemoryFileSystem {
        lock.locked {
            dead = true
            let after = MemoryFileSystem(capacity: capacity)
            var kept: [ObjectIdentifier: Inode] = [:]
            func survivor(_ i: Inode) -> Inode {
                if let k = kept[ObjectIdentifier(i)] { return k }
                let n = Inode()
                var data = i.durable
                // A prefix of the changes since the last sync reached the disk, the last one
                // perhaps only in part: an append cut at any byte; a write over bytes already
                // there within one 512-byte sector is whole or not at all (disks write sectors
                // whole).
                let reached = i.log.isEmpty ? 0 : Int.random(in: 0...i.log.count, using: &g)
                for (k, c) in i.log.prefix(reached).enumerated() {
                    if k == reached - 1, case .write(let offset, let bytes) = c, !bytes.isEmpty,
                        offset + bytes.count > data.count || offset / 512 != (offset + bytes.count - 1) / 512, Bool.random(using: &g)
                    {
                        let cut = Int.random(in: 0..<bytes.count, using: &g)
                        if cut > 0 { Self.apply(.write(offset: offset, bytes: Array(bytes[0..<cut])), to: &data) }
                    } else {
                        Self.apply(c, to: &data)
                    }
                }
                n.data = data
                n.durable = data
                kept[ObjectIdentifier(i)] = n
                return n
            }
            var entries = folders.mapValues(\.durable)
            let reached = journal.isEmpty ? 0 : Int.random(in: 0...journal.count, using: &g)
            for c in journal.prefix(reached) {
                switch c {
                case .set(let d, let name, let i): entries[d]?[name] = i
                case .remove(let d, let name): entries[d]?[name] = nil
                case .rename(let d1, let n1, let d2, let n2, let i):
                    entries[d1]?[n1] = nil
                    entries[d2]?[n2] = i
                }
            }
            for (path, e) in entries {
                var folder = Folder()
                for (name, i) in e { folder.entries[name] = survivor(i) }
                folder.durable = folder.entries
                after.folders[path] = folder
            }
            return after
        }
    }

    /// Flips one bit of a file, in what is written and in what is durable (a bad disk).
    public func flipBit(_ path: String, bit: Int) {
        lock.locked {
            guard let i = inode(path), !i.data.isEmpty else { return }
            let byte = (bit / 8) % i.data.count
            i.data[byte] ^= UInt8(1 << (bit % 8))
            if byte < i.durable.count { i.durable[byte] ^= UInt8(1 << (bit % 8)) }
        }
    }

    /// A file's bytes (nil when there is none).
    public func contents(_ path: String) -> [UInt8]? { lock.locked { inode(path)?.data } }

    /// Names in a folder.
    public func names(_ directory: String) -> [String] { lock.locked { folders[Self.normal(directory)].map { Array($0.entries.keys) } ?? [] } }
}

/// Wraps a file system so tests can make a chosen call fail with an errno, or block until
/// released (a frozen disk), by a rule on each call.
public final class FaultInjectingFileSystem: SpoolFileSystem, @unchecked Sendable {
    public enum Operation: String, Sendable, CaseIterable {
        case mkdir, list, create, open, close, lock, size, write, read, sync, truncate, punchHole, syncDirectory, unlink, rename, copy, map
    }

    public struct Call: Sendable {
        public var operation: Operation
        /// The file's path (for calls on an open file: the path it was opened by).
        public var path: String
        /// How many calls of this operation came before.
        public var count: Int
    }

    public enum Fault: Sendable {
        case fail(Int32)
        /// Waits until `release()`.
        case block
    }

    let base: any SpoolFileSystem
    let state = Mutex<(counts: [Operation: Int], paths: [Int32: String])>(([:], [:]))
    let rule = Mutex<(@Sendable (Call) -> Fault?)?>(nil)
    let gate = PThreadGate()

    public init(_ base: any SpoolFileSystem) { self.base = base }

    /// Sets the rule asked before every call (nil: no faults).
    public func setRule(_ r: (@Sendable (Call) -> Fault?)?) { rule.withLock { $0 = r } }

    /// Lets blocked calls go on (and later ones not be blocked by the same rule: set a new one).
    public func release() { gate.open() }

    /// Calls waiting in a `.block` fault now.
    public var blockedCalls: Int { gate.waiting }

    /// How many calls of `op` were made.
    public func count(_ op: Operation) -> Int { state.withLock { $0.counts[op] ?? 0 } }

    func enter(_ op: Operation, path: String) throws(SpoolError) {
        // Taken before the rule is asked: a release() between the two still lets this call go.
        let generation = gate.generation
        let n = state.withLock { s -> Int in
            let n = s.counts[op] ?? 0
            s.counts[op] = n + 1
            return n
        }
        guard let r = rule.withLock({ $0 }), let fault = r(Call(operation: op, path: path, count: n)) else { return }
        switch fault {
        case .fail(let e): throw SpoolError(operation: op.rawValue, path: path, errno: e)
        case .block: gate.wait(since: generation)
        }
    }

    func path(_ f: SpoolFile) -> String { state.withLock { $0.paths[f.handle] ?? "fd \(f.handle)" } }

    public func makeDirectories(_ path: String) throws(SpoolError) {
        try enter(.mkdir, path: path)
        try base.makeDirectories(path)
    }
    public func list(_ directory: String) throws(SpoolError) -> [String] {
        try enter(.list, path: directory)
        return try base.list(directory)
    }
    public func create(_ path: String) throws(SpoolError) -> SpoolFile {
        try enter(.create, path: path)
        let f = try base.create(path)
        state.withLock { $0.paths[f.handle] = path }
        return f
    }
    public func createUnnamed(in directory: String) throws(SpoolError) -> SpoolFile {
        try enter(.create, path: "\(directory)/(unnamed)")
        let f = try base.createUnnamed(in: directory)
        state.withLock { $0.paths[f.handle] = "\(directory)/(unnamed)" }
        return f
    }
    /// A copy is a write to `file` (faults for writes apply to it), then the base's copy.
    public func copyRange(from source: SpoolFile, at from: Int, to file: SpoolFile, at to: Int, count: Int) throws(SpoolError) {
        try enter(.write, path: path(file))
        try base.copyRange(from: source, at: from, to: file, at: to, count: count)
    }
    public func open(_ path: String, writable: Bool) throws(SpoolError) -> SpoolFile {
        try enter(.open, path: path)
        let f = try base.open(path, writable: writable)
        state.withLock { $0.paths[f.handle] = path }
        return f
    }
    public func close(_ file: SpoolFile) {
        base.close(file)
        state.withLock { _ = $0.paths.removeValue(forKey: file.handle) }
    }
    public func lockExclusively(_ path: String) throws(SpoolError) -> SpoolFile {
        try enter(.lock, path: path)
        let f = try base.lockExclusively(path)
        state.withLock { $0.paths[f.handle] = path }
        return f
    }
    public func size(_ file: SpoolFile) throws(SpoolError) -> Int {
        try enter(.size, path: path(file))
        return try base.size(file)
    }
    public func write(_ file: SpoolFile, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SpoolError) {
        try enter(.write, path: path(file))
        try base.write(file, bytes, at: offset)
    }
    public func read(_ file: SpoolFile, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SpoolError) -> Int {
        try enter(.read, path: path(file))
        return try base.read(file, into: buffer, at: offset)
    }
    public func sync(_ file: SpoolFile) throws(SpoolError) {
        try enter(.sync, path: path(file))
        try base.sync(file)
    }
    public func truncate(_ file: SpoolFile, to length: Int) throws(SpoolError) {
        try enter(.truncate, path: path(file))
        try base.truncate(file, to: length)
    }
    public func punchHole(_ file: SpoolFile, offset: Int, length: Int) throws(SpoolError) {
        try enter(.punchHole, path: path(file))
        try base.punchHole(file, offset: offset, length: length)
    }
    public func syncDirectory(_ path: String) throws(SpoolError) {
        try enter(.syncDirectory, path: path)
        try base.syncDirectory(path)
    }
    public func unlink(_ path: String) throws(SpoolError) {
        try enter(.unlink, path: path)
        try base.unlink(path)
    }
    public func rename(_ from: String, _ to: String) throws(SpoolError) {
        try enter(.rename, path: from)
        try base.rename(from, to)
    }
    public func copy(_ from: String, _ to: String) throws(SpoolError) {
        try enter(.copy, path: from)
        try base.copy(from, to)
    }
    public func freeBytes(_ path: String) -> Int? { base.freeBytes(path) }
    public func totalBytes(_ path: String) -> Int? { base.totalBytes(path) }
    public func withContents<T>(of path: String, _ body: (UnsafeRawBufferPointer) throws(SpoolError) -> T) throws(SpoolError) -> T {
        try enter(.map, path: path)
        return try base.withContents(of: path, body)
    }
}

/// Where blocked calls wait.
final class PThreadGate: @unchecked Sendable {
    private let lock = PThreadLock()
    private var opened = 0
    private var waitingCount = 0

    var waiting: Int { lock.locked { waitingCount } }
    var generation: Int { lock.locked { opened } }

    /// Waits until the gate is opened after `generation` (at once if it was already).
    func wait(since generation: Int) {
        lock.lock()
        waitingCount += 1
        while opened == generation { lock.wait() }
        waitingCount -= 1
        lock.unlock()
    }

    func open() {
        lock.locked {
            opened += 1
            lock.broadcast()
        }
    }
}

/// A seeded random number generator (SplitMix64): the same seed, the same sequence.
public struct SplitMix: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Waits (polling every millisecond) until `condition` holds or `seconds` pass; whether it held.
@discardableResult
public func waitUntil(_ seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    let deadline = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 + seconds
    while !condition() {
        clock_gettime(CLOCK_MONOTONIC, &ts)
        if Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 > deadline { return false }
        usleep(1000)
    }
    return true
}
