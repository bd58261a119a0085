import CTernSystem
import Glibc

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

/// Process-wide helpers for the executables.
public enum ReactorSystem {
    /// A whole (small) file: configuration, alias and zone files. Nil when it cannot be read, with
    /// `errno` telling why.
    public static func readFile(_ path: String) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = CTernSystem.close(fd) }
        return readAll(fd)
    }

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
    public static func writeFileAtomically(_ bytes: [UInt8], to path: String, mode newMode: mode_t) throws(ReactorError) {
        var st = stat()
        let mode: mode_t = stat(path, &st) == 0 ? st.st_mode & 0o7777 : newMode
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let tmp = "\(path).tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .last("cannot create \(tmp)") }
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

    /// A whole file as UTF-8 text (invalid bytes replaced), or nil.
    /// The environment variables among `names` that are set (Reactor does not import Foundation).
    static func environment(_ names: [String]) -> [String: String] {
        var out: [String: String] = [:]
        for n in names { if let v = getenv(n) { out[n] = String(cString: v) } }
        return out
    }

    /// One line to stderr (the reactor has no logger of its own).
    public static func log(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    public static func readText(_ path: String) -> String? {
        readFile(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Raises the open-file limit to the hard limit (servers hold one fd per session).
    @discardableResult
    public static func raiseFileLimit() -> Int { Sys.raiseFileLimit() }

    /// CLOCK_MONOTONIC in nanoseconds.
    public static func now() -> UInt64 { tern_monotonic_ns() }
}
