// ternd: the Tern mail server. See docs/ternd.md and docs/config.md.
import ArgumentParser
import CTernSystem
import Config
import Daemon
import Glibc
import Reactor

extension IOBackendKind: ExpressibleByArgument {}

@main
struct Ternd: ParsableCommand {
    /// The alias files of a configuration and their modification times.
    static func aliasFiles(_ loaded: LoadedConfiguration) -> [String: Int] {
        var out: [String: Int] = [:]
        for d in loaded.configuration.domains { if let f = d.aliases { out[f] = modificationTime(f) } }
        return out
    }

    static func currentTimes(_ files: [String: Int]) -> [String: Int] {
        files.keys.reduce(into: [:]) { $0[$1] = modificationTime($1) }
    }

    /// Modification time and size folded into one number; -1 when the file is missing.
    static func modificationTime(_ path: String) -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { return -1 }
        return st.st_mtim.tv_sec &* 1_000_000_000 &+ st.st_mtim.tv_nsec &+ Int(st.st_size) &* 7
    }

    static let configuration = CommandConfiguration(
        commandName: "ternd",
        abstract: "The Tern mail server: runs in the foreground and logs to stderr.",
        discussion: "Without --config, runs an embedded default: 127.0.0.1:2525, domain localhost, spool and Maildirs under ./var/."
    )

    @Option(help: "Configuration file.") var config: String?
    @Flag(help: "Check the configuration (and its alias files) and exit: 0 when it is valid, 1 otherwise.") var check = false
    @Option(help: "Event loop threads (0: one per core).") var loops: Int = 0
    @Option(name: .customLong("io-backend"), help: "I/O backend: auto, epoll or io_uring (wins over the configuration's io-backend).")
    var ioBackend: IOBackendKind?
    @Option(help: ArgumentHelp("Run one of ternd's own processes (started by ternd itself): lookup, queue, courier, smtp.", visibility: .hidden))
    var role: String?
    @Option(help: ArgumentHelp("The smtp process's listeners, by kind, comma-separated (their sockets follow its control socket).", visibility: .hidden))
    var listeners: String = ""
    @Flag(help: ArgumentHelp("The smtp process replaces one a reload retires.", visibility: .hidden))
    var replacing = false
    @Option(name: .customLong("parent-pid"), help: ArgumentHelp("The pid of the ternd that started this process: it dies with it.", visibility: .hidden))
    var parentPID: Int32?

    /// A warning for each of `user` and `queue-user` that is not a user on this system, with
    /// the command that creates it.
    static func missingUsers(_ c: Configuration) -> [String] {
        [("user", c.user), ("queue-user", c.queueUser)].compactMap { statement, name in
            guard getpwnam(name) == nil else { return nil }
            return "warning: \(statement) '\(name)' does not exist on this system; create it with: useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \(name)"
        }
    }

    func run() throws {
        if let role {
            // Descriptor 3 is the control socket from the parent.
            switch role {
            case "lookup": throw ExitCode(LookupProcess.run(configPath: config, control: 3, parent: parentPID))
            case "queue": throw ExitCode(QueueProcess.run(configPath: config, control: 3, parent: parentPID, loops: loops, ioBackend: ioBackend))
            case "courier": throw ExitCode(CourierProcess.run(configPath: config, control: 3, channel: 4, parent: parentPID, loops: loops, ioBackend: ioBackend))
            case "smtp": throw ExitCode(SMTPProcess.run(configPath: config, control: 3, parent: parentPID, loops: loops, kinds: listeners.split(separator: ",").map(String.init), ioBackend: ioBackend, replacing: replacing))
            default:
                Log.error("unknown role '\(role)' (ternd starts its own processes with --role; do not use it by hand)")
                throw ExitCode(2)
            }
        }
        if check {
            do {
                let loaded = try ConfigLoader.load(config)
                for line in Self.missingUsers(loaded.configuration) { print(line) }
                for line in SecretFiles.warnings(loaded.configuration) { print(Log.visible(line)) }
                print("configuration OK")
            } catch {
                for e in error.errors { print(Log.visible(e.description)) }
                throw ExitCode(1)
            }
            return
        }
        // Signals are taken from a signalfd; block them before any thread starts.
        var signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGCHLD]
        let sfd = tern_signalfd(&signals, Int32(signals.count))
        guard sfd >= 0 else { throw ExitCode(1) }
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(config)
        } catch {
            for e in error.errors { Log.error(e.description) }
            throw ExitCode(1)
        }
        // As root, the processes run as `user` and `queue-user`: both must exist.
        if getuid() == 0 {
            let missing = Self.missingUsers(loaded.configuration)
            guard missing.isEmpty else {
                for m in missing { Log.error("cannot start: " + String(m.dropFirst(m.hasPrefix("warning: ") ? 9 : 0))) }
                throw ExitCode(1)
            }
        }
        // Secrets others can read are said at every start, not only by --check.
        for w in SecretFiles.warnings(loaded.configuration) { Log.warning(String(w.dropFirst("warning: ".count))) }
        throw ExitCode(ParentProcess.run(
            configPath: config, loaded: loaded, loops: loops, ioBackend: ioBackend, signals: sfd,
            aliasFiles: Self.aliasFiles, times: Self.currentTimes))
    }
}
