// What `ternd --check` says about the files that hold secrets (issue 17, docs/security.md): the
// users files, DKIM signing keys and relay passwords are for `queue-user` (and root) alone, the
// TLS private keys for root alone, and the spool folder is the queue user's. This is the one
// place that decides what counts as too loose; ternd still starts (an operator may mean it),
// except for a spool folder another user owns, which the queue process refuses.
import Config
import Glibc

public enum SecretFiles {
    /// One line per file that others can read or change, each naming the file, who can, and
    /// the command that fixes it. Files that do not exist are not this check's business (the
    /// configuration's own check names them).
    public static func warnings(_ c: Configuration) -> [String] {
        let queue = getpwnam(c.queueUser).map { (uid: $0.pointee.pw_uid, gid: $0.pointee.pw_gid) }
        var out: [String] = []
        func check(_ path: String, what: String, forQueue: Bool) {
            var st = stat()
            guard stat(path, &st) == 0 else { return }
            let mode = st.st_mode & 0o7777
            let owners: Set<uid_t> = forQueue ? [0, queue?.uid ?? 0] : [0]
            let groups: Set<gid_t> = forQueue ? [0, queue?.gid ?? 0] : [0]
            let keeper = forQueue ? "root and \(c.queueUser)" : "root"
            let octal = "0" + String(mode, radix: 8)
            if !owners.contains(st.st_uid) {
                out.append("warning: \(path) (\(what)) belongs to \(userName(st.st_uid)), who can read and replace it; it is for \(keeper) only: chown \(forQueue ? c.queueUser : "root") \(path)")
            }
            if mode & 0o006 != 0 {
                out.append("warning: \(path) (\(what)) has mode \(octal): every user of this host can \(mode & 0o002 != 0 ? "change" : "read") it; it is for \(keeper) only: chmod o-rwx \(path)")
            }
            if mode & 0o020 != 0 {
                out.append("warning: \(path) (\(what)) has mode \(octal): its group \(groupName(st.st_gid)) can change it: chmod g-w \(path)")
            } else if mode & 0o040 != 0, !groups.contains(st.st_gid) {
                out.append("warning: \(path) (\(what)) has mode \(octal): the members of group \(groupName(st.st_gid)) can read it; it is for \(keeper) only: chmod g-r \(path)")
            }
        }
        for d in c.domains {
            if let users = d.users { check(users, what: "the users file of \(d.name.ascii)", forQueue: true) }
            for k in d.dkim { check(k.file, what: "DKIM signing key \(k.selector) of \(d.name.ascii)", forQueue: true) }
        }
        var seen: Set<String> = []
        for r in c.relays {
            guard let file = r.via?.authFile, seen.insert(file).inserted else { continue }
            check(file, what: "a relay password", forQueue: true)
        }
        if let dir = c.certificates {
            for name in directoryEntries(dir).sorted() { check("\(dir)/\(name)/privkey.pem", what: "TLS private key of \(name)", forQueue: false) }
        }
        out += unreadableByQueueUser(c).map { "warning: " + $0 }
        // The spool: ternd makes it the queue user's (0700) at start, unless another user owns it.
        var st = stat()
        if lstat(c.spool, &st) == 0, st.st_uid != 0, st.st_uid != queue?.uid {
            out.append("warning: the spool folder \(c.spool) belongs to \(userName(st.st_uid)), not to root or \(c.queueUser): ternd will not start as root (chown -R \(c.queueUser) \(c.spool), or name another `spool`)")
        }
        return out
    }

    /// The files lookup and the queue read again as `queue-user` on every reload (users files,
    /// DKIM keys, alias files; relay passwords are read by a new courier, as root) that it cannot read, each said with why: such a
    /// reload would be refused by them and applied by the rest. Empty when all can be read (or
    /// the user does not exist: that is said elsewhere).
    public static func unreadableByQueueUser(_ c: Configuration) -> [String] {
        guard let pw = getpwnam(c.queueUser) else { return [] }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        var files: [String] = []
        for d in c.domains {
            if let u = d.users { files.append(u) }
            if let a = d.aliases { files.append(a) }
            files += d.dkim.map(\.file)
        }
        var seen: Set<String> = []
        return files.filter { seen.insert($0).inserted }.compactMap { path in
            guard let why = cannotRead(path, uid: uid, gid: gid) else { return nil }
            return "\(c.queueUser) cannot read \(path): \(why) (lookup and the queue read it again as \(c.queueUser) on each reload)"
        }
    }

    /// Why uid:gid (no other groups) cannot read `path` — a folder on the way it may not search,
    /// or the file's own mode — or nil when it can (or the file is not there: the loader says so).
    static func cannotRead(_ path: String, uid: uid_t, gid: gid_t) -> String? {
        if let (at, st) = firstUnsearchableFolder(path, uid: uid, gid: gid) {
            return "the folder \(at) (mode 0\(String(st.st_mode & 0o7777, radix: 8)), \(userName(st.st_uid)):\(groupName(st.st_gid))) may not be searched"
        }
        var st = stat()
        guard stat(absolute(path), &st) == 0, !allows(st, uid: uid, gid: gid, 4) else { return nil }
        return "mode 0\(String(st.st_mode & 0o7777, radix: 8)), \(userName(st.st_uid)):\(groupName(st.st_gid)) (chgrp \(groupName(gid)) \(path) and chmod g+r \(path))"
    }

    /// Whether the mode bits `bits` (4 read, 1 search) hold for uid:gid, of the class it is in.
    static func allows(_ st: stat, uid: uid_t, gid: gid_t, _ bits: mode_t) -> Bool {
        if st.st_uid == uid { return st.st_mode & (bits << 6) != 0 }
        if st.st_gid == gid { return st.st_mode & (bits << 3) != 0 }
        return st.st_mode & bits != 0
    }

    /// `path` from /, a relative one from the working folder.
    static func absolute(_ path: String) -> String {
        guard !path.hasPrefix("/") else { return path }
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return path }
        return String(cString: buf) + "/" + path
    }

    /// The first folder on the way to `path` that uid:gid may not search, with its stat; nil
    /// when it can get there (or a folder on the way is missing: the loader says so).
    static func firstUnsearchableFolder(_ path: String, uid: uid_t, gid: gid_t) -> (String, stat)? {
        var at = ""
        for part in absolute(path).split(separator: "/").dropLast() {
            at += "/" + part
            var st = stat()
            guard stat(at, &st) == 0 else { return nil }
            if !allows(st, uid: uid, gid: gid, 1) { return (at, st) }
        }
        return nil
    }

    static func userName(_ uid: uid_t) -> String {
        getpwuid(uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(uid)"
    }

    static func groupName(_ gid: gid_t) -> String {
        getgrgid(gid).map { String(cString: $0.pointee.gr_name) } ?? "gid \(gid)"
    }

    static func directoryEntries(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
