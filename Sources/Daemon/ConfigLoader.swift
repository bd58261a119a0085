// Reads the configuration file and the alias files it names, collecting every error with its
// file and line.
import Config
import DNS
import Glibc
import MailAuth
import Reactor
import SMTP
import Users

public struct LoadedConfiguration: Sendable {
    public var configuration: Configuration
    public var domains: [RecipientResolver.DomainTable]
    public var path: String
    /// The zone of `resolver zone FILE`, read (and checked) with the configuration.
    public var zone: ZoneResolver? = nil
    /// DKIM signing keys by domain (ASCII), loaded from the `dkim` statements.
    public var signingKeys: [String: [DKIMSigningKey]] = [:]
    /// The public suffix list for DMARC; `suffixWarning` says why it is empty when it is.
    public var suffixes = PublicSuffixList(text: "")
    public var suffixWarning: String? = nil
    /// The server certificates of `certificates DIR`, by directory name, the first being the
    /// default; empty: plain SMTP only.
    public var certificates: [(name: String, context: TLSContext)] = []
    /// The users files of the domains that have one, by domain (ASCII).
    public var users: [String: UsersFile] = [:]
    /// Passwords for relay hosts, by the `auth FILE` they were read from.
    public var relayPasswords: [String: String] = [:]

    /// The configured resolver; the stub resolver runs on `group` when given.
    public func makeResolver(group: EventLoopGroup? = nil) throws -> any DNS.Resolver {
        if let zone { return zone }
        return try configuration.resolver.makeResolver(group: group)
    }
}

public enum ConfigLoader {
    /// Loads `path`, or the embedded default when nil.
    /// Parses `path` (the embedded default when nil) without reading the files it names; relative
    /// paths in it are relative to its folder.
    public static func parse(_ path: String?) throws(ConfigErrors) -> Configuration {
        guard let path else { return try ConfigParser.parse(Configuration.embeddedDefault, file: "(embedded default)") }
        let text: String
        do {
            text = try ReactorSystem.loadText(path)
        } catch {
            throw ConfigErrors(errors: [ConfigError(file: path, line: 0, message: "cannot read: \(error.reason)")])
        }
        return try ConfigParser.parse(text, file: path, baseDirectory: path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : ".")
    }

    /// The secret files a process reads (privilege separation): each of ternd's processes loads
    /// only what its work needs, so smtp never opens a users file or a DKIM key, and the queue
    /// and lookup never a TLS key.
    public struct Parts: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        /// The users files (scrypt hashes): lookup checks passwords, the queue resolves recipients.
        public static let users = Parts(rawValue: 1)
        public static let signingKeys = Parts(rawValue: 2)
        /// TLS certificates and their keys.
        public static let certificates = Parts(rawValue: 4)
        public static let relayPasswords = Parts(rawValue: 8)
        public static let all: Parts = [.users, .signingKeys, .certificates, .relayPasswords]
        public static let smtp: Parts = [.certificates]
        public static let lookup: Parts = [.users]
        public static let queue: Parts = [.users, .signingKeys]
        public static let courier: Parts = [.relayPasswords]
    }

    public static func load(_ path: String?, parts: Parts = .all) throws(ConfigErrors) -> LoadedConfiguration {
        let name = path ?? "(embedded default)"
        var config = try parse(path)
        var errors: [ConfigError] = []
        // The queue opens its spool without following links (a link planted there must not
        // send root's chown elsewhere): a spool path that is a link is refused here, named.
        var st = stat()
        if lstat(config.spool, &st) == 0, st.st_mode & S_IFMT == S_IFLNK {
            var buf = [CChar](repeating: 0, count: 4096)
            let n = readlink(config.spool, &buf, buf.count - 1)
            let target = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
            errors.append(ConfigError(file: name, line: config.spoolLine, message: "spool \(config.spool) is a symbolic link (to \(target)): name the folder itself; ternd does not follow links to its spool"))
        }
        if config.certificates == nil {
            // Passwords travel only over TLS: a submission port without certificates would
            // accept nothing.
            for l in config.listeners where l.kind != .smtp {
                errors.append(ConfigError(file: name, line: l.line, message: "'listen \(l.kind.rawValue)' needs TLS: add 'certificates DIR' (AUTH runs only over TLS)"))
            }
        }
        var users: [String: UsersFile] = [:]
        for d in config.domains where parts.contains(.users) {
            guard let file = d.users else { continue }
            do {
                users[d.name.ascii] = try UsersFile.load(file, missingIsEmpty: false)
            } catch {
                // Only a file that is not there is to be created; one that cannot be read (say,
                // permission denied) is reported as that.
                let missing = access(file, F_OK) != 0 && errno == ENOENT
                for e in error.errors {
                    errors.append(e.line == 0
                        ? ConfigError(file: name, line: d.usersLine, message: "\(e.message): \(file)" + (missing ? " (create it with `ternctl user add USER@\(d.name.unicode)`)" : ""))
                        : e)
                }
            }
        }
        var tables: [RecipientResolver.DomainTable] = []
        for d in config.domains {
            var aliases = AliasFile()
            if let file = d.aliases {
                let t: String
                do {
                    t = try ReactorSystem.loadText(file)
                } catch {
                    errors.append(ConfigError(file: name, line: d.line, message: "cannot read aliases file \(file): \(error.reason)"))
                    continue
                }
                do {
                    aliases = try AliasFile.parse(t, file: file, domain: d.name, dropCharacters: d.dropCharacters)
                } catch {
                    errors += error.errors
                }
            }
            tables.append(.init(config: d, aliases: aliases))
        }
        var zone: ZoneResolver? = nil
        if case .zone(let file) = config.resolver {
            do {
                zone = try ZoneResolver.load(path: file)
            } catch {
                // A file that cannot be read is the resolver statement's problem; a bad line, the zone file's.
                errors.append(error.line == 0 ? ConfigError(file: name, line: config.resolverLine, message: "resolver zone: \(error.message.replacing("cannot read the zone file", with: "cannot read \(file)"))") : ConfigError(file: error.file, line: error.line, message: error.message))
            }
        }
        var signingKeys: [String: [DKIMSigningKey]] = [:]
        for d in config.domains where parts.contains(.signingKeys) {
            for k in d.dkim {
                let pem: [UInt8]
                do {
                    pem = try ReactorSystem.loadFile(k.file, limit: 1 << 20)
                } catch {
                    errors.append(ConfigError(file: name, line: k.line, message: "cannot read DKIM key \(k.file): \(error.reason)"))
                    continue
                }
                do {
                    let key = try CryptoKey.privateKey(pem: pem)
                    if key.type == .rsa, key.bits < 1024 {
                        errors.append(ConfigError(file: name, line: k.line, message: "DKIM key \(k.file): RSA keys under 1024 bits are refused by verifiers (RFC 8301); use 2048"))
                        continue
                    }
                    signingKeys[d.name.ascii, default: []].append(DKIMSigningKey(domain: d.name.ascii, selector: k.selector, key: key))
                } catch {
                    errors.append(ConfigError(file: name, line: k.line, message: "DKIM key \(k.file): \(error)"))
                }
            }
        }
        var suffixes = PublicSuffixList(text: "")
        var suffixWarning: String? = nil
        do {
            suffixes = try PublicSuffixList.load(config.publicSuffixList)
        } catch {
            if config.publicSuffixListLine != 0 {
                errors.append(ConfigError(file: name, line: config.publicSuffixListLine, message: "cannot read the public suffix list \(config.publicSuffixList)"))
            } else {
                suffixWarning = "no public suffix list at \(config.publicSuffixList) (install Debian's publicsuffix package): DMARC takes the last two labels as the organisational domain"
            }
        }
        var certificates: [(name: String, context: TLSContext)] = []
        if let dir = config.certificates, parts.contains(.certificates) {
            let at = config.certificatesLine
            if let names = Self.subdirectories(dir) {
                for sub in names {
                    // Regular files only, read at once (a FIFO would hang OpenSSL's reader).
                    if let bad = ["fullchain.pem", "privkey.pem"].lazy.compactMap({ f -> String? in
                        do throws(FileReadError) { _ = try ReactorSystem.loadFile("\(dir)/\(sub)/\(f)", limit: 1 << 20) } catch { return error.description }
                        return nil
                    }).first {
                        errors.append(ConfigError(file: name, line: at, message: "cannot read certificate: \(bad)"))
                        continue
                    }
                    do {
                        certificates.append((sub, try TLSContext.server(certificateChain: "\(dir)/\(sub)/fullchain.pem", privateKey: "\(dir)/\(sub)/privkey.pem")))
                    } catch {
                        errors.append(ConfigError(file: name, line: at, message: error.description))
                    }
                }
                if names.isEmpty {
                    errors.append(ConfigError(file: name, line: at, message: "no certificate in \(dir) (expected DIR/NAME/fullchain.pem and DIR/NAME/privkey.pem)"))
                }
            } else {
                errors.append(ConfigError(file: name, line: at, message: "cannot read the certificates directory \(dir): \(String(cString: strerror(errno)))"))
            }
        }
        var relayPasswords: [String: String] = [:]
        for r in config.relays {
            if let d = r.domain, config.domains.contains(where: { $0.name == d }) {
                errors.append(ConfigError(file: name, line: r.line, message: "'\(d.unicode)' is a local domain (domain block): it cannot also be relayed"))
            }
            if let file = r.via?.authFile, parts.contains(.relayPasswords) {
                let text: String
                do {
                    text = try ReactorSystem.loadText(file, limit: 1 << 20)
                } catch {
                    errors.append(ConfigError(file: name, line: r.line, message: "cannot read the relay password file \(file): \(error.reason)"))
                    continue
                }
                let password = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).first.map(String.init) ?? ""
                if password.isEmpty {
                    errors.append(ConfigError(file: name, line: r.line, message: "the relay password file \(file) is empty (its first line is the password)"))
                }
                relayPasswords[file] = password
            }
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        if config.hostname.isEmpty { config.hostname = "localhost" }
        return LoadedConfiguration(
            configuration: config, domains: tables, path: name, zone: zone, signingKeys: signingKeys, suffixes: suffixes, suffixWarning: suffixWarning,
            certificates: certificates, users: users, relayPasswords: relayPasswords)
    }

    /// The directories in `dir` (symbolic links followed), sorted; nil when it cannot be read.
    static func subdirectories(_ dir: String) -> [String]? {
        guard let d = opendir(dir) else { return nil }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let entry = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            if entry.hasPrefix(".") { continue }
            var st = stat()
            if stat("\(dir)/\(entry)", &st) == 0, st.st_mode & S_IFMT == S_IFDIR { names.append(entry) }
        }
        return names.sorted()
    }

}
