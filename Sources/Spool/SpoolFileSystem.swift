// The spool's file operations, behind one small protocol so tests can make any of them fail
// (ENOSPC, EIO, EROFS), block (a frozen disk), or lose what was not synced (a crash), at any call.
// `PosixFileSystem` is the real one; the fault-injecting and in-memory ones live in
// TernTestSupport. Only the spool's writer thread writes; readers (delivery, `ternctl queue`) only
// read.

import CTernSystem
import Glibc

/// A failed file operation: what, on which path, and the errno it failed with.
public struct SpoolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        if operation == "lock" && errno == EWOULDBLOCK {
            return "\(path) is locked: another ternd (or a tool writing the spool) is using this spool"
        }
        if operation == "check" && errno == ESTALE {
            return "\(path) is no longer the spool folder ternd locked (moved or replaced)"
        }
        return "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }

    static func last(_ op: String, _ path: String) -> SpoolError { SpoolError(operation: op, path: path, errno: Glibc.errno) }

    /// Out of space (or quota): the disk is full, which frees itself once mail is delivered.
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }
}

/// An open file of a `SpoolFileSystem` (a descriptor for the real one).
public struct SpoolFile: Sendable, Hashable {
    public let handle: Int32
    public init(_ handle: Int32) { self.handle = handle }
}

/// What the spool does to files. Every call may fail with a `SpoolError`; none retries EINTR
/// itself (the real implementation does that below this interface).
public protocol SpoolFileSystem: AnyObject, Sendable {
    /// `mkdir -p` with mode 0750.
    func makeDirectories(_ path: String) throws(SpoolError)
    /// The names in a folder (no "." or "..").
    func list(_ directory: String) throws(SpoolError) -> [String]
    /// Creates a new file (O_EXCL) for reading and writing.
    func create(_ path: String) throws(SpoolError) -> SpoolFile
    /// Opens an existing file, read-only or for reading and writing (never appending: the spool
    /// writes at offsets it keeps itself).
    func open(_ path: String, writable: Bool) throws(SpoolError) -> SpoolFile
    func close(_ file: SpoolFile)
    /// Takes the exclusive lock on `path` (an existing file or folder), held until it is closed or
    /// the process ends; throws errno EWOULDBLOCK at once when someone else holds it.
    func lockExclusively(_ path: String) throws(SpoolError) -> SpoolFile
    func size(_ file: SpoolFile) throws(SpoolError) -> Int
    /// Writes all of `bytes` at `offset` (short writes are continued; a failure may leave part written).
    func write(_ file: SpoolFile, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SpoolError)
    /// Reads up to `buffer.count` bytes at `offset`; fewer only at the end of the file.
    func read(_ file: SpoolFile, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SpoolError) -> Int
    /// fdatasync.
    func sync(_ file: SpoolFile) throws(SpoolError)
    func truncate(_ file: SpoolFile, to length: Int) throws(SpoolError)
    /// Frees the blocks of a byte range (the file keeps its size and reads zeros there).
    func punchHole(_ file: SpoolFile, offset: Int, length: Int) throws(SpoolError)
    /// fsync of a folder, so entries created, renamed or removed in it survive a crash.
    func syncDirectory(_ path: String) throws(SpoolError)
    func unlink(_ path: String) throws(SpoolError)
    func rename(_ from: String, _ to: String) throws(SpoolError)
    /// A copy of a whole file (made durable before it returns).
    func copy(_ from: String, _ to: String) throws(SpoolError)
    /// Bytes free for an unprivileged writer on the file system holding `path`, when known.
    func freeBytes(_ path: String) -> Int?
    /// The size of the file system holding `path`, when known.
    func totalBytes(_ path: String) -> Int?
    /// Runs `body` over the whole content of a file (mapped, for recovery).
    func withContents<T>(of path: String, _ body: (UnsafeRawBufferPointer) throws(SpoolError) -> T) throws(SpoolError) -> T
    /// Whether `path` still names what `file` is open on (false: it was moved or replaced).
    func stillNames(_ path: String, _ file: SpoolFile) -> Bool
    /// A new file with no name in `directory` (O_TMPFILE), for reading and writing: it is gone
    /// when closed, and a crash leaves nothing of it.
    func createUnnamed(in directory: String) throws(SpoolError) -> SpoolFile
    /// Copies `count` bytes from `source` at `from` into `file` at `to` (short copies are
    /// continued; a failure may leave part written). The kernel copies where it can.
    func copyRange(from source: SpoolFile, at from: Int, to file: SpoolFile, at to: Int, count: Int) throws(SpoolError)
}

extension SpoolFileSystem {
    /// (File systems that cannot tell say yes.)
    public func stillNames(_ path: String, _ file: SpoolFile) -> Bool { true }
}

extension SpoolFileSystem {
    /// Through a buffer of 64 KiB (file systems without a kernel copy).
    public func copyRange(from source: SpoolFile, at from: Int, to file: SpoolFile, at to: Int, count: Int) throws(SpoolError) {
        try copyThroughMemory(from: source, at: from, to: file, at: to, count: count)
    }

    /// Copies a byte range by reading and writing 64 KiB at a time.
    func copyThroughMemory(from source: SpoolFile, at from: Int, to file: SpoolFile, at to: Int, count: Int) throws(SpoolError) {
        var done = 0
        while done < count {
            let chunk: [UInt8] = try read(source, count: min(65536, count - done), at: from + done)
            guard !chunk.isEmpty else { throw SpoolError(operation: "copy", path: "fd \(source.handle)", errno: EIO) }
            try write(file, chunk, at: to + done)
            done += chunk.count
        }
    }

    /// Writes all of `bytes` at `offset`.
    func write(_ file: SpoolFile, _ bytes: [UInt8], at offset: Int) throws(SpoolError) {
        var failure: SpoolError? = nil
        bytes.withUnsafeBytes { b in
            do throws(SpoolError) { try write(file, b, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Reads exactly `count` bytes at `offset` (fewer only when the file ends first).
    func read(_ file: SpoolFile, count: Int, at offset: Int) throws(SpoolError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            var failure: SpoolError? = nil
            let n = out.withUnsafeMutableBytes { b -> Int in
                do throws(SpoolError) { return try read(file, into: UnsafeMutableRawBufferPointer(rebasing: b[got...]), at: offset + got) } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw failure }
            if n == 0 { break }
            got += n
        }
        if got < count { out.removeLast(count - got) }
        return out
    }

    /// A whole file read into memory (for the read-only scan: a mapping could fault if the file
    /// shrinks meanwhile).
    func readAll(_ path: String) throws(SpoolError) -> [UInt8] {
        let f = try open(path, writable: false)
        defer { close(f) }
        return try read(f, count: try size(f), at: 0)
    }

    func exists(_ path: String) -> Bool {
        guard let f = try? open(path, writable: false) else { return false }
        close(f)
        return true
    }
}

/// The real file system.
public final class PosixFileSystem: SpoolFileSystem {
    public init() {}

    public static let shared = PosixFileSystem()

    public func makeDirectories(_ path: String) throws(SpoolError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o750) != 0 && Glibc.errno != EEXIST { throw .last("mkdir", current) }
        }
    }

    public func list(_ directory: String) throws(SpoolError) -> [String] {
        guard let d = opendir(directory) else { throw .last("opendir", directory) }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    public func create(_ path: String) throws(SpoolError) -> SpoolFile {
        let f = Self.retrying { Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o640) }
        guard f >= 0 else { throw .last("create", path) }
        return SpoolFile(f)
    }

    public func open(_ path: String, writable: Bool) throws(SpoolError) -> SpoolFile {
        let f = Self.retrying { Glibc.open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC) }
        guard f >= 0 else { throw .last("open", path) }
        return SpoolFile(f)
    }

    public func close(_ file: SpoolFile) { Glibc.close(file.handle) }

    public func createUnnamed(in directory: String) throws(SpoolError) -> SpoolFile {
        var fd = tern_open_unnamed(directory)
        while fd == -EINTR { fd = tern_open_unnamed(directory) }
        if fd >= 0 { return SpoolFile(fd) }
        // A file system without O_TMPFILE: a named file, unlinked at once.
        guard fd == -EOPNOTSUPP || fd == -EISDIR || fd == -EINVAL else { throw SpoolError(operation: "create", path: "\(directory) (unnamed)", errno: -fd) }
        var template = Array("\(directory)/.staging-XXXXXX".utf8CString)
        let g = template.withUnsafeMutableBufferPointer { tern_mkstemp_cloexec($0.baseAddress!) }
        guard g >= 0 else { throw SpoolError(operation: "create", path: "\(directory)/.staging-XXXXXX", errno: -g) }
        template.withUnsafeBufferPointer { _ = Glibc.unlink($0.baseAddress!) }
        return SpoolFile(g)
    }

    public func copyRange(from source: SpoolFile, at from: Int, to file: SpoolFile, at to: Int, count: Int) throws(SpoolError) {
        var done = 0
        while done < count {
            var inOff = Int64(from + done)
            var outOff = Int64(to + done)
            let n: Int = tern_copy_range_at(source.handle, &inOff, file.handle, &outOff, count - done)
            if n > 0 {
                done += n
                continue
            }
            if n == 0 { throw SpoolError(operation: "copy", path: "fd \(source.handle)", errno: EIO) }
            let e = Glibc.errno
            if e == EINTR { continue }
            // No kernel copy between these two (another file system, an old kernel): by hand.
            guard e == EXDEV || e == ENOSYS || e == EOPNOTSUPP || e == EINVAL else { throw SpoolError(operation: "copy", path: "fd \(file.handle)", errno: e) }
            try copyThroughMemory(from: source, at: from + done, to: file, at: to + done, count: count - done)
            return
        }
    }

    public func stillNames(_ path: String, _ file: SpoolFile) -> Bool {
        var a = stat()
        var b = stat()
        guard fstat(file.handle, &a) == 0 else { return true }
        guard stat(path, &b) == 0 else { return false }
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }

    public func lockExclusively(_ path: String) throws(SpoolError) -> SpoolFile {
        let fd = Self.retrying { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw .last("open", path) }
        guard Self.retrying({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 else {
            let e = SpoolError.last("lock", path)
            Glibc.close(fd)
            throw e
        }
        return SpoolFile(fd)
    }

    public func size(_ file: SpoolFile) throws(SpoolError) -> Int {
        var st = stat()
        guard fstat(file.handle, &st) == 0 else { throw .last("fstat", "fd \(file.handle)") }
        return Int(st.st_size)
    }

    public func write(_ file: SpoolFile, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SpoolError) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(file.handle, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 && Glibc.errno == EINTR { continue }
            if n < 0 { throw .last("write", "fd \(file.handle)") }
            if n == 0 { throw SpoolError(operation: "write", path: "fd \(file.handle)", errno: EIO) }
            done += n
        }
    }

    public func read(_ file: SpoolFile, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SpoolError) -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            let n = Glibc.pread(file.handle, buffer.baseAddress!, buffer.count, off_t(offset))
            if n < 0 && Glibc.errno == EINTR { continue }
            if n < 0 { throw .last("read", "fd \(file.handle)") }
            return n
        }
    }

    public func sync(_ file: SpoolFile) throws(SpoolError) {
        guard Self.retrying({ fdatasync(file.handle) }) == 0 else { throw .last("fdatasync", "fd \(file.handle)") }
    }

    public func truncate(_ file: SpoolFile, to length: Int) throws(SpoolError) {
        guard Self.retrying({ ftruncate(file.handle, off_t(length)) }) == 0 else { throw .last("truncate", "fd \(file.handle)") }
    }

    public func punchHole(_ file: SpoolFile, offset: Int, length: Int) throws(SpoolError) {
        let rc = tern_punch_hole(file.handle, off_t(offset), off_t(length))
        guard rc == 0 else { throw SpoolError(operation: "fallocate", path: "fd \(file.handle)", errno: -rc) }
    }

    public func syncDirectory(_ path: String) throws(SpoolError) {
        let d = Self.retrying { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard d >= 0 else { throw .last("open", path) }
        defer { Glibc.close(d) }
        guard Self.retrying({ fsync(d) }) == 0 else { throw .last("fsync", path) }
    }

    public func unlink(_ path: String) throws(SpoolError) {
        guard Glibc.unlink(path) == 0 || Glibc.errno == ENOENT else { throw .last("unlink", path) }
    }

    public func rename(_ from: String, _ to: String) throws(SpoolError) {
        guard Glibc.rename(from, to) == 0 else { throw .last("rename", from) }
    }

    public func copy(_ from: String, _ to: String) throws(SpoolError) {
        let src = try open(from, writable: false)
        defer { close(src) }
        let n = try size(src)
        let dst = try create(to)
        defer { close(dst) }
        var copied = 0
        while copied < n {
            let k = tern_copy_range(src.handle, dst.handle, n - copied)
            if k < 0 && Glibc.errno == EINTR { continue }
            if k <= 0 { throw .last("copy_file_range", to) }
            copied += k
        }
        try sync(dst)
    }

    public func freeBytes(_ path: String) -> Int? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    public func totalBytes(_ path: String) -> Int? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Int(s.f_blocks) * Int(s.f_frsize)
    }

    public func withContents<T>(of path: String, _ body: (UnsafeRawBufferPointer) throws(SpoolError) -> T) throws(SpoolError) -> T {
        let f = try open(path, writable: false)
        defer { close(f) }
        let n = try size(f)
        guard n > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        guard let p = mmap(nil, n, PROT_READ, MAP_PRIVATE, f.handle, 0), p != MAP_FAILED else { throw .last("mmap", path) }
        defer { munmap(p, n) }
        _ = madvise(p, n, MADV_SEQUENTIAL)
        return try body(UnsafeRawBufferPointer(start: p, count: n))
    }

    static func retrying(_ call: () -> Int32) -> Int32 {
        while true {
            let rc = call()
            if rc < 0 && Glibc.errno == EINTR { continue }
            return rc
        }
    }
}
