// ternctl tls show|reset DOMAIN: the TLS security level recorded for a domain, per direction (the
// downgrade protection's history, kept under the configured spool), and forgetting it.
import ArgumentParser
import Config
import Delivery
import SMTP

struct TLSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls",
        abstract: "Show or reset the TLS security level recorded for a domain.",
        discussion: """
            Tern records the best security reached with each domain, per direction: plain < tls-unverified < \
            tls-verified. A later connection below that level is refused (mail waits) instead of falling back \
            to plaintext. After a domain's operator has really dropped TLS (or replaced a certificate with one \
            that cannot be verified), reset it:
              ternctl tls show example.com
              ternctl tls reset example.com
            """,
        subcommands: [TLSShow.self, TLSReset.self]
    )

    /// The history of the configured spool, and the domain's A-label form.
    static func open(_ domain: String, _ options: ConfigOption, command: String) throws -> (TLSHistory, String) {
        let config = try options.parse()
        let name: String
        do {
            name = try Domain(domain).ascii
        } catch {
            printError("ternctl tls \(command): invalid domain '\(domain)': \(error)")
            throw ExitCode(1)
        }
        return (TLSHistory(directory: TLSHistory.directory(spool: config.spool)), name)
    }
}

struct TLSShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print the levels recorded for DOMAIN (plain when none).")
    @Argument(help: "The domain (IDN in either form).") var domain: String
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let (history, name) = try TLSCommand.open(domain, options, command: "show")
        do {
            let s = try history.security(of: name)
            print("\(name) incoming \(s.incoming)")
            print("\(name) outgoing \(s.outgoing)")
        } catch {
            printError("ternctl tls show: \(error)")
            throw ExitCode(1)
        }
    }
}

struct TLSReset: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reset", abstract: "Forget the levels recorded for DOMAIN.")
    @Argument(help: "The domain (IDN in either form).") var domain: String
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let (history, name) = try TLSCommand.open(domain, options, command: "reset")
        do {
            print(try history.reset(name) ? "\(name): reset to plain" : "\(name): nothing was recorded")
        } catch {
            printError("ternctl tls reset: \(error)")
            throw ExitCode(1)
        }
    }
}
