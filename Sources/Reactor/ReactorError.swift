import CTernSystem
import Glibc
import Synchronization

/// Errors of the reactor. Those from a system call carry its name and errno.
public enum ReactorError: Error, Equatable, Sendable, CustomStringConvertible {
    case syscall(String, errno: Int32)
    /// The peer closed or reset the connection.
    case connectionReset
    /// The handler consumed nothing from a full read buffer.
    case inputOverflow
    /// The loop shut down with the connection open.
    case shutdown
    case invalidAddress(String)

    public var description: String {
        switch self {
        case .syscall(let name, let e): return "\(name): \(String(cString: strerror(e))) (errno \(e))"
        case .connectionReset: return "connection reset by peer"
        case .inputOverflow: return "input line exceeds the read buffer"
        case .shutdown: return "event loop shut down"
        case .invalidAddress(let a): return "invalid address: \(a)"
        }
    }

    static func last(_ name: String) -> ReactorError { .syscall(name, errno: errno) }
}

/// Syscall wrappers: retry EINTR, report would-block as nil, throw otherwise.
enum Sys {
    @inline(__always)
    static func read(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) -> Int {
        while true {
            let r = CTernSystem.read(fd, p, n)
            if r >= 0 { return r }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -Int(EAGAIN) : -Int(errno)
        }
    }

    @inline(__always)
    static func write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
        while true {
            let r = CTernSystem.send(fd, p, n, Int32(MSG_NOSIGNAL))
            if r >= 0 { return r }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -Int(EAGAIN) : -Int(errno)
        }
    }

    static func close(_ fd: Int32) {
        _ = CTernSystem.close(fd)
    }

    /// Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit.
    @discardableResult
    static func raiseFileLimit() -> Int {
        var rl = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 0 }
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        return Int(rl.rlim_cur)
    }
}

/// Why a file could not be read, as people read it (`PATH: reason`).
public struct FileReadError: Error, Sendable, Equatable, CustomStringConvertible {
    public let path: String
    public let reason: String
    public let errno: Int32

    public init(path: String, reason: String, errno: Int32) {
        self.path = path
        self.reason = reason
        self.errno = errno
    }

    init(path: String, errno e: Int32) { self.init(path: path, reason: String(cString: strerror(e)), errno: e) }

    public var description: String { "\(path): \(reason)" }
}

/// Process-wide helpers for the executables.
public enum ReactorSystem {
    /// What configuration, alias, users, key and zone files may weigh at most.
    public static let fileSizeLimit = 64 << 20

    /// A whole (small) file: configuration, alias, users, key and zone files. Only a regular
    /// file is read (a FIFO, a device such as /dev/zero or a folder is refused at once, never
    /// waited on or read for ever), and at most `limit` bytes. The one place that decides it.
    public static func loadFile(_ path: String, limit: Int = fileSizeLimit) throws(FileReadError) -> [UInt8] {
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw FileReadError(path: path, errno: errno) }
        defer { _ = CTernSystem.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileReadError(path: path, errno: errno) }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG else {
            let what: String
            switch kind {
            case S_IFDIR: what = "a folder"
            case S_IFIFO: what = "a FIFO"
            case S_IFCHR: what = "a character device"
            case S_IFBLK: what = "a block device"
            case S_IFSOCK: what = "a socket"
            default: what = "not a file"
            }
            throw FileReadError(path: path, reason: "not a regular file (\(what))", errno: EINVAL)
        }
        let tooLarge = FileReadError(path: path, reason: "larger than the \(limit >> 20) MiB a file of this kind may be", errno: EFBIG)
        guard Int(st.st_size) <= limit else { throw tooLarge }
        var out: [UInt8] = []
        out.reserveCapacity(Int(st.st_size))
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { CTernSystem.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw FileReadError(path: path, errno: errno) }
            if n == 0 { return out }
            out += buffer[..<n]
            // (A file that grows while it is read.)
            guard out.count <= limit else { throw tooLarge }
        }
    }

    /// A whole file as UTF-8 text (invalid bytes replaced), CRLF line endings read as LF.
    public static func loadText(_ path: String, limit: Int = fileSizeLimit) throws(FileReadError) -> String {
        let bytes = try loadFile(path, limit: limit)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count)
        for (i, b) in bytes.enumerated() where !(b == 13 && i + 1 < bytes.count && bytes[i + 1] == 10) { text.append(b) }
        return String(decoding: text, as: UTF8.self)
    }

    /// `loadFile`, nil when the file cannot be read.
    public static func readFile(_ path: String) -> [UInt8]? { try? loadFile(path) }

    /// Everything readable from `fd` up to end of file (a file, or a pipe such as standard input);
    /// nil on a read error, with `errno` telling why.
    public static func readAll(_ fd: Int32) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { CTernSystem.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { return out }
            out += buffer[..<n]
        }
    }

    /// Replaces `path` atomically: a temporary file beside it, fsync, rename, fsync of the
    /// directory. A new file gets `mode`; an existing one keeps its own.
    /// An existing file keeps its mode, owner and group; a new one gets `newMode` and, when
    /// given, `owner` (uid, gid).
    public static func writeFileAtomically(_ bytes: [UInt8], to path: String, mode newMode: mode_t, owner: (uid_t, gid_t)? = nil) throws(ReactorError) {
        var st = stat()
        let exists = stat(path, &st) == 0
        let mode: mode_t = exists ? st.st_mode & 0o7777 : newMode
        let keep: (uid_t, gid_t)? = exists ? (st.st_uid, st.st_gid) : owner
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let tmp = "\(path).tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .last("cannot create \(tmp)") }
        if let keep, getuid() == 0 { _ = fchown(fd, keep.0, keep.1) }
        fchmod(fd, mode)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                let e = ReactorError.last("cannot write \(tmp)")
                close(fd)
                unlink(tmp)
                throw e
            }
            off += n
        }
        guard fsync(fd) == 0, close(fd) == 0 else {
            let e = ReactorError.last("cannot write \(tmp)")
            unlink(tmp)
            throw e
        }
        guard rename(tmp, path) == 0 else {
            let e = ReactorError.last("cannot replace \(path)")
            unlink(tmp)
            throw e
        }
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    /// The environment variables among `names` that are set (Reactor does not import Foundation).
    static func environment(_ names: [String]) -> [String: String] {
        var out: [String: String] = [:]
        for n in names { if let v = getenv(n) { out[n] = String(cString: v) } }
        return out
    }

    /// Where the reactor's own lines go (the daemon sets its logger); stderr until then.
    static let sink = Mutex<(@Sendable (String) -> Void)?>(nil)

    public static func setLogSink(_ f: @escaping @Sendable (String) -> Void) { sink.withLock { $0 = f } }

    /// One line for the operator (the reactor has no logger of its own).
    public static func log(_ line: String) {
        if let f = sink.withLock({ $0 }) {
            f(line)
            return
        }
        let text = line + "\n"
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    public static func readText(_ path: String) -> String? { try? loadText(path) }

    /// Raises the open-file limit to the hard limit (servers hold one fd per session).
    @discardableResult
    public static func raiseFileLimit() -> Int { Sys.raiseFileLimit() }

    /// CLOCK_MONOTONIC in nanoseconds.
    public static func now() -> UInt64 { tern_monotonic_ns() }
}
