// Configuration and data files read as an operator may have them: CRLF line endings, special
// files named by mistake, files that cannot be read (issue 16, items 11 and 17).
import Foundation
import Testing

@Suite("configuration files", .serialized)
final class ConfigFilesTests {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "configfiles-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ name: String, _ text: String) throws { try text.write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8) }

    func check(_ config: String) throws -> (status: Int32, out: String, err: String) {
        try run(builtBinary("ternd"), ["--check", "--config", config], timeout: 20)
    }

    @Test("a spool path that is a symbolic link is refused at the spool line, naming its target, by --check and at start")
    func spoolLink() throws {
        try FileManager.default.createDirectory(atPath: "\(dir)/elsewhere", withIntermediateDirectories: true)
        #expect(symlink("\(dir)/elsewhere", "\(dir)/spool-link") == 0)
        try write("link.conf", "listen smtp 127.0.0.1:2525\nspool spool-link\n")
        let r = try check("\(dir)/link.conf")
        #expect(r.status == 1 && r.out.contains("\(dir)/link.conf:2: spool \(dir)/spool-link is a symbolic link (to \(dir)/elsewhere): name the folder itself"), "\(r)")
        let start = try run(builtBinary("ternd"), ["--config", "\(dir)/link.conf"], timeout: 20)
        #expect(start.status == 1 && start.err.contains("spool \(dir)/spool-link is a symbolic link"), "\(start)")
    }

    @Test("a config file that is a device, a FIFO, a folder or too large: refused at once with the reason, never read for ever")
    func specialConfigFiles() throws {
        #expect(mkfifo("\(dir)/fifo", 0o644) == 0)
        #expect(truncate(FileManager.default.createFile(atPath: "\(dir)/huge", contents: nil) ? "\(dir)/huge" : "", 65 << 20) == 0)
        for (path, reason) in [
            ("/dev/zero", "not a regular file (a character device)"), ("/dev/urandom", "not a regular file (a character device)"),
            ("\(dir)/fifo", "not a regular file (a FIFO)"), (dir, "not a regular file (a folder)"), ("\(dir)/huge", "larger than the 64 MiB"),
        ] {
            let start = Date()
            let r = try check(path)
            #expect(r.status == 1 && r.out.contains("\(path):0: cannot read: \(reason)"), "\(path): \(r)")
            #expect(Date().timeIntervalSince(start) < 10, "\(path) answered at once")
        }
    }

    @Test("an aliases file that is a FIFO, a zone that is a folder: the config line and the reason")
    func specialDataFiles() throws {
        #expect(mkfifo("\(dir)/aliases.fifo", 0o644) == 0)
        try write("a.conf", "listen smtp 127.0.0.1:2525\ndomain example.test {\n    aliases aliases.fifo\n}\n")
        let a = try check("\(dir)/a.conf")
        #expect(a.status == 1 && a.out.contains("\(dir)/a.conf:2: cannot read aliases file \(dir)/aliases.fifo: not a regular file (a FIFO)"), "\(a)")
        try write("z.conf", "listen smtp 127.0.0.1:2525\n\nresolver zone /tmp\n")
        let z = try check("\(dir)/z.conf")
        #expect(z.status == 1 && z.out.contains("\(dir)/z.conf:3: resolver zone: cannot read /tmp: not a regular file (a folder)"), "\(z)")
    }

    @Test("CRLF line endings in the config, aliases, users and zone files read as LF")
    func crlf() throws {
        try write("users", "# users\r\n")
        // (As ternctl makes it: one others can read, or queue-user cannot, is warned about.)
        chmod("\(dir)/users", 0o640)
        if getuid() == 0 { chown("\(dir)/users", 0, getgrnam("_ternq")?.pointee.gr_gid ?? 0) }
        try write("aliases", "postmaster: bob\r\nbob: bob\r\n")
        try write("crlf.zone", "$ORIGIN example.test.\r\n@ MX 10 mx\r\nmx A 127.0.0.1\r\n")
        try write("crlf.conf", "listen smtp 127.0.0.1:2525\r\nhostname mx.example.test\r\nresolver zone crlf.zone\r\ndomain example.test {\r\n    aliases aliases\r\n    users users\r\n}\r\n")
        let r = try check("\(dir)/crlf.conf")
        #expect(r.status == 0 && r.out == "configuration OK\n", "\(r)")
        let dns = try run(ternctlPath, ["dns", "MX", "example.test", "--config", "\(dir)/crlf.conf"])
        #expect(dns.out == "10 mx.example.test.\n;; status: NOERROR\n", "\(dns)")
    }

    @Test("--check warns about a user or queue-user the system does not have, with the command that creates it")
    func missingSystemUsers() throws {
        try write("n.conf", "listen smtp 127.0.0.1:2525\nuser no-such-tern-user\nqueue-user _ternq\n")
        let r = try check("\(dir)/n.conf")
        #expect(r.status == 0 && r.out.hasSuffix("configuration OK\n"), "\(r)")
        #expect(r.out.contains("warning: user 'no-such-tern-user' does not exist on this system; create it with: useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin no-such-tern-user"), "\(r)")
        // make test creates the defaults, as a package would: no warning for them.
        #expect(!r.out.contains("'_ternq'"), "\(r)")
    }

    @Test("a users file that cannot be read says why (permission denied), not that it is missing")
    func unreadableUsers() throws {
        try write("users", "# nobody may read this\n")
        chmod("\(dir)/users", 0o600)
        chmod(dir, 0o755)
        try write("u.conf", "listen smtp 127.0.0.1:2525\ndomain example.test {\n    users users\n}\n")
        chmod("\(dir)/u.conf", 0o644)
        let r = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", builtBinary("ternd"), "--check", "--config", "\(dir)/u.conf"], timeout: 20)
        #expect(r.status == 1 && r.out.contains("\(dir)/u.conf:3: cannot read the users file: Permission denied"), "\(r)")
        #expect(!r.out.contains("create it"), "\(r)")
        try FileManager.default.removeItem(atPath: "\(dir)/users")
        let missing = try check("\(dir)/u.conf")
        #expect(missing.status == 1 && missing.out.contains("create it with `ternctl user add USER@example.test`"), "\(missing)")
    }

    @Test("ternctl dns asks the configured resolver even when an unrelated part of the config is broken")
    func dnsWithBrokenConfig() throws {
        try write("ok.zone", "$ORIGIN example.test.\nmx A 192.0.2.9\n")
        try write("b.conf", "listen smtp 127.0.0.1:2525\nresolver zone ok.zone\ndomain example.test {\n    users no-such-users-file\n    dkim s1 no-such-key.pem\n}\n")
        #expect(try check("\(dir)/b.conf").status == 1, "the config is broken")
        let dns = try run(ternctlPath, ["dns", "A", "mx.example.test", "--config", "\(dir)/b.conf"])
        #expect(dns.status == 0 && dns.out == "192.0.2.9\n;; status: NOERROR\n", "\(dns)")
    }

    @Test("ternctl dkim keygen for a key the config names already does not ask for the dkim line again")
    func keygenConfiguredKey() throws {
        try write("k.conf", "listen smtp 127.0.0.1:2525\ndomain example.test {\n    dkim s1 s1.pem\n}\n")
        let named = try run(ternctlPath, ["dkim", "keygen", "example.test", "--selector", "s1", "--algo", "ed25519", "--config", "\(dir)/k.conf"])
        #expect(named.status == 0, "\(named)")
        #expect(named.err.contains("wrote \(dir)/s1.pem, the key the configuration's `dkim s1 …` line names"), "\(named)")
        #expect(!named.err.contains("then add"), "\(named)")
        #expect(FileManager.default.fileExists(atPath: "\(dir)/s1.pem"))
        let other = try run("/bin/sh", ["-c", "cd '\(dir)' && '\(ternctlPath)' dkim keygen example.test --selector s2 --algo ed25519 --config k.conf"])
        #expect(other.err.contains("then add `dkim s2 example.test.s2.pem`"), "\(other)")
    }

    @Test("a certificate file that is a FIFO is refused at once, never waited on")
    func certificateFIFO() throws {
        try FileManager.default.createDirectory(atPath: "\(dir)/certs/mx.example.test", withIntermediateDirectories: true)
        #expect(mkfifo("\(dir)/certs/mx.example.test/fullchain.pem", 0o644) == 0)
        #expect(mkfifo("\(dir)/certs/mx.example.test/privkey.pem", 0o644) == 0)
        try write("c.conf", "listen smtp 127.0.0.1:2525\ncertificates certs\n")
        let start = Date()
        let r = try check("\(dir)/c.conf")
        #expect(r.status == 1 && r.out.contains("\(dir)/c.conf:2: cannot read certificate: \(dir)/certs/mx.example.test/fullchain.pem: not a regular file (a FIFO)"), "\(r)")
        #expect(Date().timeIntervalSince(start) < 10)
    }
}
