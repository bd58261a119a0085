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
            if mode & 0o007 != 0 {
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
        // The spool: ternd makes it the queue user's (0700) at start, unless another user owns it.
        var st = stat()
        if lstat(c.spool, &st) == 0, st.st_uid != 0, st.st_uid != queue?.uid {
            out.append("warning: the spool folder \(c.spool) belongs to \(userName(st.st_uid)), not to root or \(c.queueUser): ternd will not start as root (chown -R \(c.queueUser) \(c.spool), or name another `spool`)")
        }
        return out
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
