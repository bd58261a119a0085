// ternd: the Tern mail server. See docs/ternd.md and docs/config.md.
import ArgumentParser
import CTernSystem
import Config
import Daemon
import Glibc

@main
struct Ternd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ternd",
        abstract: "The Tern mail server: runs in the foreground and logs to stderr.",
        discussion: "Without --config, runs an embedded default: 127.0.0.1:2525, domain localhost, spool and Maildirs under ./var/."
    )

    @Option(help: "Configuration file.") var config: String?
    @Flag(help: "Check the configuration (and its alias files) and exit: 0 when it is valid, 1 otherwise.") var check = false
    @Option(help: "Event loop threads (0: one per core).") var loops: Int = 0

    func run() throws {
        if check {
            do {
                _ = try ConfigLoader.load(config)
                print("configuration OK")
            } catch {
                for e in error.errors { print(e.description) }
                throw ExitCode(1)
            }
            return
        }
        // Delivery commands may close their stdin early: a write to the pipe must fail, not kill us.
        signal(SIGPIPE, SIG_IGN)
        // Signals are taken from a signalfd; block them before any thread starts.
        var signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]
        let sfd = tern_signalfd(&signals, Int32(signals.count))
        guard sfd >= 0 else { throw ExitCode(1) }
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigLoader.load(config)
        } catch {
            for e in error.errors { Log.error(e.description) }
            throw ExitCode(1)
        }
        let daemon: Daemon
        do {
            daemon = try Daemon(loaded, loops: loops)
            try daemon.start()
        } catch {
            Log.error("cannot start: \(error)")
            throw ExitCode(1)
        }
        Log.info("ternd ready (\(loaded.path))")
        while true {
            var pfd = pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, -1) > 0 else { continue }
            let sig = tern_signalfd_read(sfd)
            if sig == SIGHUP {
                do {
                    daemon.reload(try ConfigLoader.load(config))
                } catch {
                    for e in error.errors { Log.error("reload refused: \(e.description)") }
                }
            } else if sig == SIGTERM || sig == SIGINT {
                daemon.drain()
                return
            }
        }
    }
}
