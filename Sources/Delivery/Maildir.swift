// Local delivery into Maildirs (https://cr.yp.to/proto/maildir.html): a unique name, written to
// tmp/, fsync'd, renamed into new/, and new/ fsync'd so the entry survives a crash.

import Glibc
import Synchronization

public enum DeliveryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Try again later (4xx-like): disk full, I/O error, MDA exit 75.
    case temporary(String)
    /// Give up and bounce (5xx-like).
    case permanent(String)

    public var description: String {
        switch self {
        case .temporary(let s): return "temporary failure: \(s)"
        case .permanent(let s): return "permanent failure: \(s)"
        }
    }
}

public struct Maildir: Sendable {
    /// A path pattern with %{user}, %{domain}, %{rcpt}.
    public let pattern: String
    public let hostname: String
    static let counter = Atomic<UInt64>(0)

    public init(pattern: String, hostname: String) {
        self.pattern = pattern
        self.hostname = hostname.replacingSlashesAndColons()
    }

    /// A user, domain or address is safe in a path: no '/', no NUL or control characters, not
    /// starting with '.', so `../../etc` can never become a folder.
    public static func isSafe(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix(".") && !name.unicodeScalars.contains { $0 == "/" || $0.value < 0x20 || $0.value == 0x7F }
    }

    /// The Maildir folder of a user.
    public func path(user: String, domain: String) -> String? {
        guard Self.isSafe(user), Self.isSafe(domain) else { return nil }
        return pattern.replacingOccurrences("%{user}", user)
            .replacingOccurrences("%{domain}", domain)
            .replacingOccurrences("%{rcpt}", "\(user)@\(domain)")
    }

    /// Whether the user's Maildir exists (a user without an alias is valid when it does).
    public func exists(user: String, domain: String) -> Bool {
        guard let p = path(user: user, domain: domain) else { return false }
        var st = stat()
        return stat(p + "/new", &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Delivers `message` (header lines `prefix` are written first) and returns the file's path.
    public func deliver(prefix: [UInt8], message: [UInt8], user: String, domain: String, create: Bool = true) throws(DeliveryError) -> String {
        guard let dir = path(user: user, domain: domain) else { throw .permanent("unsafe mailbox name '\(user)@\(domain)'") }
        if create { try Self.makeMaildir(dir) }
        var tv = timeval()
        gettimeofday(&tv, nil)
        let n = Self.counter.wrappingAdd(1, ordering: .relaxed).oldValue
        let name = "\(tv.tv_sec).M\(tv.tv_usec)P\(getpid())Q\(n).\(hostname)"
        let tmp = "\(dir)/tmp/\(name)"
        let final = "\(dir)/new/\(name)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.failure("create", tmp) }
        var ok = false
        defer {
            if !ok { unlink(tmp) }
        }
        do {
            try Self.writeAll(fd, prefix, tmp)
            try Self.writeAll(fd, message, tmp)
        } catch {
            Glibc.close(fd)
            throw error
        }
        guard fsync(fd) == 0 else {
            let e = Self.failure("fsync", tmp)
            Glibc.close(fd)
            throw e
        }
        Glibc.close(fd)
        guard rename(tmp, final) == 0 else { throw Self.failure("rename", final) }
        ok = true
        try Self.syncDirectory("\(dir)/new")
        return final
    }

    static func failure(_ op: String, _ path: String) -> DeliveryError {
        let e = errno
        let text = "\(op) \(path): \(String(cString: strerror(e)))"
        // A missing or forbidden folder will not fix itself; the rest may.
        return (e == ENOTDIR || e == EACCES || e == EROFS) ? .permanent(text) : .temporary(text)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws(DeliveryError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw failure("write", path) }
            done += n
        }
    }

    static func syncDirectory(_ path: String) throws(DeliveryError) {
        let d = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard d >= 0 else { throw failure("open", path) }
        defer { Glibc.close(d) }
        guard fsync(d) == 0 else { throw failure("fsync", path) }
    }

    /// Creates `dir` and its cur/, new/, tmp/ (and missing parents).
    public static func makeMaildir(_ dir: String) throws(DeliveryError) {
        var current = dir.hasPrefix("/") ? "" : "."
        for part in dir.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o700) != 0 && errno != EEXIST { throw failure("mkdir", current) }
        }
        for sub in ["cur", "new", "tmp"] {
            let p = "\(dir)/\(sub)"
            if mkdir(p, 0o700) != 0 && errno != EEXIST { throw failure("mkdir", p) }
        }
    }
}

extension String {
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }

    /// Maildir names may not contain '/' or ':' (the flags separator).
    func replacingSlashesAndColons() -> String {
        replacingOccurrences("/", "\\057").replacingOccurrences(":", "\\072")
    }
}
