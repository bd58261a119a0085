// ternctl: Tern's control and admin tool. See docs/ternctl.md.
import ArgumentParser
import Config
import DNS
import Daemon
import Glibc
import MailAuth
import SMTP

@main
struct TernCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ternctl",
        abstract: "Tern's control and admin tool.",
        subcommands: [DNSCommand.self, SPFCommand.self, DKIMCommand.self, DMARCCommand.self, UserCommand.self, TLSCommand.self, QueueCommand.self]
    )
}

/// Every ternctl command reads the same configuration as ternd.
struct ConfigOption: ParsableArguments {
    static let systemPath = "/etc/tern/tern.conf"

    @Option(name: .long, help: "Configuration file (default: \(ConfigOption.systemPath); the embedded default when that does not exist).")
    var config: String?

    /// `--config`, else the system file when it exists; nil: the embedded default.
    var path: String? {
        if let config { return config }
        return access(Self.systemPath, F_OK) == 0 ? Self.systemPath : nil
    }

    /// The configuration file only, without loading what it names (keys, certificates, users):
    /// for commands that create those files.
    func parse() throws -> Configuration {
        do {
            return try ConfigLoader.parse(path)
        } catch {
            for e in error.errors { printError(Log.visible(e.description)) }
            throw ExitCode(1)
        }
    }

    /// The configuration: `--config`, else the system file, else the embedded default.
    func load() throws -> LoadedConfiguration {
        let path = self.path
        do {
            return try ConfigLoader.load(path)
        } catch {
            for e in error.errors { printError(Log.visible(e.description)) }
            throw ExitCode(1)
        }
    }
}

/// `--resolver ADDRESS... | --resolver zone FILE`, else the configured resolver.
struct ResolverOption: ParsableArguments {
    @Option(parsing: .upToNextOption, help: "Servers to ask, in order (ADDRESS[:PORT] ...), or `zone FILE`; default: the configured resolver.")
    var resolver: [String] = []

    func make(_ config: ConfigOption, command: String) throws -> any Resolver {
        let setting: ResolverSetting
        if resolver.isEmpty {
            // Only the resolver statement matters here: the configuration file is parsed, what
            // else it names (users, keys, certificates) is not loaded, so a broken unrelated part
            // does not keep a DNS question from being asked.
            setting = try config.parse().resolver
        } else {
            switch ResolverSetting.parse(resolver) {
            case .success(let s): setting = s
            case .failure(let e):
                printError("ternctl \(command): --resolver: \(e.message.replacingOccurrences(of: "usage: resolver", with: "usage: --resolver"))")
                throw ExitCode(1)
            }
        }
        do {
            return try setting.makeResolver()
        } catch let e as ZoneError {
            printError(e.description)
            throw ExitCode(1)
        }
    }
}

func printError(_ s: String) {
    var line = s + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct DNSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dns",
        abstract: "Look a name up the way Tern does and print the records as `dig +short` would.",
        discussion: """
            Prints the records (CNAMEs followed first, as dig does), then a line `;; status: S` where S is \
            NOERROR, NODATA, NXDOMAIN, SERVFAIL, TIMEOUT or FORMERR. Exit status: 0 for NOERROR, NODATA and \
            NXDOMAIN (an answer), 2 for SERVFAIL, TIMEOUT and FORMERR (no answer), 1 for bad arguments.
            Examples:
              ternctl dns MX example.test --resolver 127.0.0.1:5353
              ternctl dns TXT _dmarc.example.test --resolver 127.0.0.3:5353 127.0.0.1:5353
              ternctl dns A mx.example.test --resolver zone test.zone
            """
    )

    @Argument(help: "Record type: A, AAAA, MX, TXT, PTR, CNAME, NS, SOA, TLSA (or TYPEnn).") var type: String
    @Argument(help: "The name (IDN in either form).") var name: String
    @OptionGroup var resolverOption: ResolverOption
    @OptionGroup var options: ConfigOption

    func run() async throws {
        guard let recordType = RecordType(name: type) else {
            printError("ternctl dns: unknown record type '\(type)'")
            throw ExitCode(1)
        }
        let dnsName: DNSName
        do {
            dnsName = try DNSName(name.unicodeScalars.allSatisfy(\.isASCII) ? name : try Domain(name).ascii)
        } catch {
            printError("ternctl dns: invalid name '\(name)'")
            throw ExitCode(1)
        }
        let r = try resolverOption.make(options, command: "dns")
        let answer = await r.resolve(dnsName, recordType)
        var out = ""
        for a in answer.aliases { out += a.description + "\n" }
        // MX records by preference (servers rotate record order; equal preferences keep theirs).
        let records = recordType == .mx ? answer.records.enumerated().sorted { a, b in
            if case .mx(let pa, _) = a.element.data, case .mx(let pb, _) = b.element.data, pa != pb { return pa < pb }
            return a.offset < b.offset
        }.map(\.element) : answer.records
        for rec in records { out += rec.data.presentation + "\n" }
        out += ";; status: \(answer.status.rawValue)\n"
        print(out, terminator: "")
        if answer.status != .noError && !answer.status.isNegative { throw ExitCode(2) }
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard let r = firstRange(of: target) else { return self }
        return String(self[..<r.lowerBound]) + replacement + String(self[r.upperBound...])
    }
}

struct SPFCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spf",
        abstract: "SPF (RFC 7208).",
        subcommands: [SPFCheck.self]
    )
}

struct SPFCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a client address against the sender's SPF record, as ternd does at MAIL FROM.",
        discussion: """
            Prints the result word (pass, fail, softfail, neutral, none, temperror, permerror) on the first \
            line, then the explanation of a fail (the record's exp= text, or the default one), or for the \
            other results what decided them. An empty --from '' is the null sender: the HELO name is checked \
            as postmaster@HELO. Exit status 0 whatever the result; 1 for bad arguments.
              ternctl spf check --ip 192.0.2.1 --helo mx.example.org --from user@example.org --resolver 127.0.0.1:5353
            """
    )

    @OptionGroup var client: ClientOptions
    @OptionGroup var resolverOption: ResolverOption
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let address = try client.address(command: "spf check")
        let (helo, sender) = (client.helo, client.sender)
        let r = try resolverOption.make(options, command: "spf check")
        // Our name for %{r} in explanations: the configuration's hostname (a broken --config is an error).
        let hostname = options.config == nil && access(ConfigOption.systemPath, F_OK) != 0 ? "localhost" : try options.parse().hostname
        let outcome = await SPFChecker(resolver: r, receivingHost: hostname).check(ip: address, helo: helo, mailFrom: sender)
        print(outcome.result.rawValue)
        print(outcome.explanation ?? outcome.reason)
    }
}

/// The SMTP client a check is made for: `--ip`, `--helo`, `--from` (spf check, dmarc check).
struct ClientOptions: ParsableArguments {
    @Option(help: "The SMTP client's address (IPv4 or IPv6).") var ip: String
    @Option(help: "The HELO/EHLO name.") var helo: String
    @Option(help: "The MAIL FROM address; '' (or '<>') for the null sender.") var from: String

    func address(command: String) throws -> SPFAddress {
        guard let a = SPFAddress(ip) else {
            printError("ternctl \(command): invalid IP address '\(ip)'")
            throw ExitCode(1)
        }
        return a
    }

    /// MAIL FROM without its angle brackets.
    var sender: String { from.hasPrefix("<") && from.hasSuffix(">") ? String(from.dropFirst().dropLast()) : from }
}
