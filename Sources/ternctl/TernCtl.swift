// ternctl: Tern's control and admin tool. See docs/ternctl.md.
import ArgumentParser
import Config
import DNS
import Daemon
import Glibc
import SMTP

@main
struct TernCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ternctl",
        abstract: "Tern's control and admin tool.",
        subcommands: [DNSCommand.self]
    )
}

/// Every ternctl command reads the same configuration as ternd.
struct ConfigOption: ParsableArguments {
    static let systemPath = "/etc/tern/tern.conf"

    @Option(name: .long, help: "Configuration file (default: \(ConfigOption.systemPath); the embedded default when that does not exist).")
    var config: String?

    /// The configuration: `--config`, else the system file, else the embedded default.
    func load() throws -> LoadedConfiguration {
        var path = config
        if path == nil, access(Self.systemPath, F_OK) == 0 { path = Self.systemPath }
        do {
            return try ConfigLoader.load(path)
        } catch {
            for e in error.errors { printError(e.description) }
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
    @Option(parsing: .upToNextOption, help: "Servers to ask, in order (ADDRESS[:PORT] ...), or `zone FILE`; default: the configured resolver.")
    var resolver: [String] = []
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
        let setting: ResolverSetting
        if resolver.isEmpty {
            setting = try options.load().configuration.resolver
        } else {
            switch ResolverSetting.parse(resolver) {
            case .success(let s): setting = s
            case .failure(let e):
                printError("ternctl dns: --resolver: \(e.message.replacingOccurrences(of: "usage: resolver", with: "usage: --resolver"))")
                throw ExitCode(1)
            }
        }
        let r: any Resolver
        do {
            r = try setting.makeResolver()
        } catch let e as ZoneError {
            printError(e.description)
            throw ExitCode(1)
        }
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
