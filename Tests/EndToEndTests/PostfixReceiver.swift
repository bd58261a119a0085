import Foundation
import Glibc
import Testing

/// A real Postfix (Debian's package) receiving mail for some domains into one Maildir, with its
/// own configuration folder and queue, on a port of its own; STARTTLS with `certificate` when
/// given; SMTPUTF8 on or off.
final class PostfixReceiver {
    let dir: String
    let port: Int
    var process: Process?

    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/sbin/postfix") && getuid() == 0 }

    /// `mailboxes`: the only addresses that exist (others get Postfix's 550 5.1.1); nil: every address.
    /// `extra`: more main.cf lines.
    init(domains: [String], mailboxes: [String]? = nil, smtpUTF8: Bool = true, certificate: (chain: String, key: String)? = nil, extra: String = "") throws {
        // Postfix's own user must reach its folders.
        dir = "/var/tmp/tern-postfix-\(UUID().uuidString)"
        port = freePort()
        let fm = FileManager.default
        for sub in ["conf", "queue", "data", "mail"] { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        chmod(dir, 0o755)
        var tls = ""
        if let certificate {
            try fm.copyItem(atPath: certificate.chain, toPath: "\(dir)/conf/cert.pem")
            try fm.copyItem(atPath: certificate.key, toPath: "\(dir)/conf/key.pem")
            tls = """
                smtpd_tls_security_level = may
                smtpd_tls_cert_file = \(dir)/conf/cert.pem
                smtpd_tls_key_file = \(dir)/conf/key.pem
                """
        }
        var master = try String(contentsOfFile: "/usr/share/postfix/master.cf.dist", encoding: .utf8)
        master = master.replacingOccurrences(of: "\nsmtp      inet", with: "\n\(port)      inet")
        // No chroot: the folders are not set up for it.
        master = master.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 8, !line.hasPrefix("#"), !line.hasPrefix(" "), f[4] == "y" else { return String(line) }
            var g = f.map(String.init)
            g[4] = "n"
            return g.joined(separator: "  ")
        }.joined(separator: "\n")
        try master.write(toFile: "\(dir)/conf/master.cf", atomically: true, encoding: .utf8)
        let main = """
            compatibility_level = 3.6
            queue_directory = \(dir)/queue
            data_directory = \(dir)/data
            mail_owner = postfix
            myhostname = mx.remote.example
            mydestination =
            inet_interfaces = 127.0.0.1
            inet_protocols = ipv4
            mynetworks = 127.0.0.0/8
            smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
            virtual_mailbox_domains = \(domains.joined(separator: ", "))
            virtual_mailbox_base = \(dir)/mail
            virtual_mailbox_maps = \(mailboxes.map { "inline:{ " + $0.map { "\($0)=inbox/" }.joined(separator: ", ") + " }" } ?? "static:inbox/")
            virtual_uid_maps = static:\(Self.id("-u", "postfix"))
            virtual_gid_maps = static:\(Self.id("-g", "postfix"))
            maillog_file = \(dir)/maillog
            smtputf8_enable = \(smtpUTF8 ? "yes" : "no")
            # Nothing leaves: mail for any other domain fails here (no DNS, no connection out).
            default_transport = error:tests send nothing out
            relay_transport = error:tests send nothing out
            \(tls)
            \(extra)

            """
        try main.write(toFile: "\(dir)/conf/main.cf", atomically: true, encoding: .utf8)
        _ = try run("/bin/chown", ["postfix:postfix", "\(dir)/data", "\(dir)/mail"])
    }

    static func id(_ flag: String, _ user: String) -> String {
        (try? run("/usr/bin/id", [flag, user]).out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? "0"
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/postfix")
        p.arguments = ["-c", "\(dir)/conf", "start-fg"]
        let out = FileHandle(forWritingAtPath: "/dev/null")
        p.standardOutput = out
        p.standardError = out
        try p.run()
        process = p
        for _ in 0..<1000 {
            if (try? exchange(port: port, send: Array("QUIT\r\n".utf8), timeout: 1)) != nil {
                // Postfix writes its log through postlogd, after the fact: wait until the probe's
                // session is in it, so that a test counting connections from here on does not
                // count the probe (it once landed after a test had read `connections`).
                for _ in 0..<500 where !log.contains("]: disconnect from ") { usleep(10_000) }
                if !log.contains("]: disconnect from ") { Issue.record("postfix never logged the probe: \(log)") }
                return
            }
            usleep(20_000)
        }
        Issue.record("postfix did not start: \(log)")
    }

    var log: String { (try? String(contentsOfFile: "\(dir)/maillog", encoding: .utf8)) ?? "" }

    /// Connections smtpd accepted so far.
    var connections: Int { log.components(separatedBy: "]: connect from ").count - 1 }

    /// The messages delivered so far, oldest first.
    var messages: [String] {
        let new = "\(dir)/mail/inbox/new"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: new)) ?? []).sorted()
        return names.compactMap { try? String(contentsOfFile: "\(new)/\($0)", encoding: .utf8) }
    }

    func cleanUp() {
        _ = try? run("/usr/sbin/postfix", ["-c", "\(dir)/conf", "stop"])
        process?.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
}
