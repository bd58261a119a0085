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
        try Self.commit([s])[0].get()
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

    /// Makes staged messages durable and visible: one `syncfs` per file system for all their
    /// data, then each is renamed into new/, then every new/ folder involved is fsync'd.
    ///
    /// Returns one result per staged message, in order: one Maildir's trouble (a folder that
    /// refuses the rename, cannot be synced, a file system that cannot sync) fails only the
    /// messages going there. A failed message is not left visible: its tmp/ file is removed, and
    /// when its folder could not be synced after the rename, its new/ entry is removed again —
    /// when that removal fails (a mail reader took it already, or the folder refuses) the message
    /// is visible and counts as delivered. So a retry never makes a second copy (this is the one
    /// place that decides it).
    public static func commit(
        _ batch: [Staged], syncDirectory: (String) throws(DeliveryError) -> Void = Maildir.syncDirectory
    ) -> [Result<Void, DeliveryError>] {
        var results = [Result<Void, DeliveryError>](repeating: .success(()), count: batch.count)
        // Data first: syncfs on each file system holding a staged file (found through the file).
        var synced: [UInt64: DeliveryError?] = [:]
        for (k, s) in batch.enumerated() {
            let fd = open(s.tmp, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                results[k] = .failure(failure("open", s.tmp))
                continue
            }
            var st = stat()
            let device: UInt64 = fstat(fd, &st) == 0 ? UInt64(st.st_dev) : UInt64.max - UInt64(k)
            if synced[device] == nil {
                let rc = tern_syncfs(fd)
                synced[device] = rc == 0 ? .some(nil) : .some(.temporary("syncfs \(s.tmp): \(String(cString: strerror(-rc)))"))
            }
            Glibc.close(fd)
            if case .some(.some(let e)) = synced[device] { results[k] = .failure(e) }
        }
        // Then visibility, message by message.
        var renamed: [String: [Int]] = [:]
        for (k, s) in batch.enumerated() {
            guard case .success = results[k] else {
                unlink(s.tmp)
                continue
            }
            guard rename(s.tmp, s.final) == 0 else {
                results[k] = .failure(failure("rename", s.final))
                unlink(s.tmp)
                continue
            }
            renamed[s.newDirectory, default: []].append(k)
        }
        // Then the entries' durability, folder by folder.
        for (dir, members) in renamed {
            do throws(DeliveryError) {
                try syncDirectory(dir)
            } catch {
                // Removed again: not delivered. Not removable (a reader took it, or the folder
                // refuses): it is visible, so it counts as delivered.
                for k in members where unlink(batch[k].final) == 0 {
                    results[k] = .failure(error)
                }
            }
        }
        return results
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

    public static func syncDirectory(_ path: String) throws(DeliveryError) {
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
