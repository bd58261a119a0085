// ternctl user add|remove|list|check: the users files that AUTH checks, found through the same
// configuration ternd reads (`domain D { users FILE }`), rewritten atomically.
import ArgumentParser
import Config
import Glibc
import Reactor
import SMTP
import Users

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage the users who may authenticate (AUTH) and receive mail.",
        discussion: """
            Users live in the users file of their domain (`domain example.test { users FILE }`); passwords are \
            stored as scrypt hashes. The password is asked twice without echo on a terminal, or read as one \
            line from standard input otherwise. ternd picks up changes on SIGHUP (`systemctl reload tern`).
              ternctl user add alice@example.test
              printf '%s\\n' "$PASSWORD" | ternctl user add alice@example.test --config /etc/tern/tern.conf
              ternctl user check alice@example.test
              ternctl user list
              ternctl user remove alice@example.test
            """,
        subcommands: [UserAdd.self, UserRemove.self, UserList.self, UserCheck.self]
    )
}

/// USER@DOMAIN resolved against the configuration: the domain's users file.
struct UserAddress {
    let local: String
    let domain: Configuration.LocalDomain
    let file: String
    /// As root: the queue user's group, which a new users file gets (lookup reads it as that user).
    let group: gid_t?

    init(_ address: String, _ options: ConfigOption, command: String) throws {
        let config = try options.parse()
        group = getuid() == 0 ? getpwnam(config.queueUser).map { $0.pointee.pw_gid } : nil
        guard let at = address.lastIndex(of: "@"), at != address.startIndex else {
            printError("ternctl user \(command): expected USER@DOMAIN, got '\(address)'")
            throw ExitCode(1)
        }
        local = String(address[..<at])
        if let why = UsersFile.invalidName(local) {
            printError("ternctl user \(command): invalid user '\(local)': \(why)")
            throw ExitCode(1)
        }
        let domainText = String(address[address.index(after: at)...])
        guard let name = try? Domain(domainText), let d = config.localDomain(name) else {
            printError("ternctl user \(command): '\(domainText)' is not a domain of \(options.path ?? "the embedded default configuration")")
            throw ExitCode(1)
        }
        guard let file = d.users else {
            printError("ternctl user \(command): domain \(d.name.unicode) has no users file: add `users FILE` to its block in \(options.path ?? "the configuration")")
            throw ExitCode(1)
        }
        domain = d
        self.file = file
    }

    var display: String { "\(local)@\(domain.name.unicode)" }

    func load(missingIsEmpty: Bool) throws -> UsersFile {
        do {
            return try UsersFile.load(file, missingIsEmpty: missingIsEmpty)
        } catch {
            for e in error.errors { printError(e.description) }
            throw ExitCode(1)
        }
    }
}

/// Reads a password: twice without echo from a terminal, else one line of standard input.
func readPassword(confirm: Bool) throws -> [UInt8] {
    if isatty(0) == 1 {
        func prompt(_ text: String) -> [UInt8]? {
            var old = termios()
            tcgetattr(0, &old)
            var quiet = old
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(0, TCSAFLUSH, &quiet)
            defer {
                tcsetattr(0, TCSAFLUSH, &old)
                printError("")
            }
            var t = text
            t.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
            var line: [UInt8] = []
            var c: UInt8 = 0
            while read(0, &c, 1) == 1 {
                if c == 10 { return line }
                line.append(c)
            }
            return line.isEmpty ? nil : line
        }
        guard let first = prompt("Password: ") else { throw ExitCode(1) }
        if confirm {
            guard let second = prompt("Again: "), second == first else {
                printError("ternctl user: the passwords differ")
                throw ExitCode(1)
            }
        }
        return first
    }
    guard var all = ReactorSystem.readAll(0) else {
        printError("ternctl user: cannot read the password from standard input")
        throw ExitCode(1)
    }
    if let nl = all.firstIndex(of: 10) { all = Array(all[..<nl]) }
    if all.last == 13 { all.removeLast() }
    return all
}

struct UserAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a user, or set a user's password.")
    @Argument(help: "USER@DOMAIN") var address: String
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let u = try UserAddress(address, options, command: "add")
        var users = try u.load(missingIsEmpty: true)
        let password = try readPassword(confirm: true)
        guard !password.isEmpty else {
            printError("ternctl user add: empty password")
            throw ExitCode(1)
        }
        let hash: PasswordHash
        do {
            hash = try PasswordHash.make(password: password)
        } catch {
            printError("ternctl user add: \(error)")
            throw ExitCode(1)
        }
        let added = users.set(u.local, hash)
        do {
            try users.write(to: u.file, group: u.group)
        } catch {
            for e in error.errors { printError(e.description) }
            throw ExitCode(1)
        }
        print(added ? "added \(u.display) to \(u.file)" : "changed the password of \(u.display) in \(u.file)")
    }
}

struct UserRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a user.")
    @Argument(help: "USER@DOMAIN") var address: String
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let u = try UserAddress(address, options, command: "remove")
        var users = try u.load(missingIsEmpty: false)
        guard users.remove(u.local) else {
            printError("ternctl user remove: no user \(u.display) in \(u.file)")
            throw ExitCode(1)
        }
        do {
            try users.write(to: u.file, group: u.group)
        } catch {
            for e in error.errors { printError(e.description) }
            throw ExitCode(1)
        }
        print("removed \(u.display) from \(u.file)")
    }
}

struct UserList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the users (of every domain, or of one).")
    @Argument(help: "Only this domain.") var domain: String?
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.parse()
        var domains = config.domains
        if let domain {
            guard let name = try? Domain(domain), let d = config.localDomain(name) else {
                printError("ternctl user list: '\(domain)' is not a configured domain")
                throw ExitCode(1)
            }
            domains = [d]
        }
        var out = ""
        for d in domains {
            guard let file = d.users else { continue }
            do {
                for user in try UsersFile.load(file, missingIsEmpty: true).users { out += "\(user)@\(d.name.unicode)\n" }
            } catch {
                for e in error.errors { printError(e.description) }
                throw ExitCode(1)
            }
        }
        print(out, terminator: "")
    }
}

struct UserCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Check a user's password (exit status 0 when it matches, 1 when not).")
    @Argument(help: "USER@DOMAIN") var address: String
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let u = try UserAddress(address, options, command: "check")
        let users = try u.load(missingIsEmpty: true)
        let password = try readPassword(confirm: false)
        guard let hash = users.hash(for: u.local) else {
            printError("ternctl user check: no user \(u.display) in \(u.file)")
            throw ExitCode(1)
        }
        guard hash.matches(password) else {
            printError("ternctl user check: the password of \(u.display) does not match")
            throw ExitCode(1)
        }
        print("ok: \(u.display)")
    }
}
