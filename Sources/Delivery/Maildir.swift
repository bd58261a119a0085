// Local delivery into Maildirs (https://cr.yp.to/proto/maildir.html): a unique name, written to
// tmp/, fsync'd, renamed into new/, and new/ fsync'd so the entry survives a crash.

import CTernSystem
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
    public let pattern: Template
    public let hostname: String
    static let counter = Atomic<UInt64>(0)
    static let pid = getpid()

    public init(pattern: String, hostname: String) {
        self.pattern = Template(pattern)
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
        return pattern.expand(user: user, domain: domain)
    }

    /// Whether the user's Maildir exists (a user without an alias is valid when it does).
    public func exists(user: String, domain: String) -> Bool {
        guard let p = path(user: user, domain: domain) else { return false }
        var st = stat()
        return stat(p + "/new", &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// A message written to tmp/, not yet durable nor visible.
    public struct Staged: Sendable, Equatable {
        public let tmp: String
        public let final: String
        public let newDirectory: String
    }

    /// Delivers one message durably (header lines `prefix` first) and returns the file's path.
    public func deliver(prefix: [UInt8], message: [UInt8], user: String, domain: String) throws(DeliveryError) -> String {
        let s = try stage(prefix: prefix, message: message, user: user, domain: domain)
        try Self.commit([s])
        return s.final
    }

    /// Writes a message into the user's tmp/ (creating the Maildir when needed) without syncing:
    /// `commit` makes a batch durable with one file-system sync.
    public func stage(prefix: [UInt8], message: [UInt8], user: String, domain: String) throws(DeliveryError) -> Staged {
        guard let dir = path(user: user, domain: domain) else { throw .permanent("unsafe mailbox name '\(user)@\(domain)'") }
        var tv = timeval()
        gettimeofday(&tv, nil)
        let n = Self.counter.wrappingAdd(1, ordering: .relaxed).oldValue
        let name = "\(tv.tv_sec).M\(tv.tv_usec)P\(Self.pid)Q\(n).\(hostname)"
        let tmp = "\(dir)/tmp/\(name)"
        var fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 && errno == ENOENT {
            // First delivery to this Maildir: create it (the common case costs no mkdir calls).
            try Self.makeMaildir(dir)
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { throw Self.failure("create", tmp) }
        defer { Glibc.close(fd) }
        do {
            try Self.writeAll(fd, prefix, message, tmp)
        } catch {
            unlink(tmp)
            throw error
        }
        return Staged(tmp: tmp, final: "\(dir)/new/\(name)", newDirectory: "\(dir)/new")
    }

    /// Makes staged messages durable and visible: one `syncfs` for all their data, then each is
    /// renamed into new/, then every new/ folder involved is fsync'd. On failure nothing of the
    /// batch is visible: the tmp/ files are removed and the error applies to all.
    public static func commit(_ batch: [Staged]) throws(DeliveryError) {
        guard let first = batch.first else { return }
        let dirfd = open(first.newDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirfd >= 0 else {
            for s in batch { unlink(s.tmp) }
            throw failure("open", first.newDirectory)
        }
        let rc = tern_syncfs(dirfd)
        Glibc.close(dirfd)
        guard rc == 0 else {
            for s in batch { unlink(s.tmp) }
            throw .temporary("syncfs \(first.newDirectory): \(String(cString: strerror(-rc)))")
        }
        var renamed: [Staged] = []
        for s in batch {
            guard rename(s.tmp, s.final) == 0 else {
                let err = failure("rename", s.final)
                for r in renamed { unlink(r.final) }
                for u in batch where !renamed.contains(u) { unlink(u.tmp) }
                throw err
            }
            renamed.append(s)
        }
        for dir in Set(batch.map(\.newDirectory)) { try syncDirectory(dir) }
    }

    /// A file-system error is never the recipient's fault: a full disk, a folder read-only or
    /// forbidden, a file where a folder should be are all for the operator to fix, so the message
    /// stays queued and is tried again (and expires, with a report, only after the queue lifetime).
    static func failure(_ op: String, _ path: String) -> DeliveryError {
        let e = errno
        return .temporary("\(op) \(path): \(String(cString: strerror(e)))")
    }

    /// Writes `first` then `second` with one writev in the common case.
    static func writeAll(_ fd: Int32, _ first: [UInt8], _ second: [UInt8], _ path: String) throws(DeliveryError) {
        let n = first.withUnsafeBytes { a in
            second.withUnsafeBytes { b in
                var iov = (
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count))
                return withUnsafeBytes(of: &iov) { writev(fd, $0.baseAddress!.assumingMemoryBound(to: iovec.self), 2) }
            }
        }
        if n == first.count + second.count { return }
        // Interrupted or short: finish what is left one buffer at a time.
        let done = max(n, 0)
        if done < first.count {
            try writeAll(fd, Array(first[done...]), path)
            try writeAll(fd, second, path)
        } else {
            try writeAll(fd, Array(second[(done - first.count)...]), path)
        }
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
