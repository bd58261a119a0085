// ternctl dkim keygen | sign | verify. See docs/mailauth.md.
import ArgumentParser
import Glibc
import MailAuth
import SMTP
import Reactor

struct DKIMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkim",
        abstract: "DKIM (RFC 6376, RFC 8463): make keys, sign and verify messages.",
        subcommands: [DKIMKeygen.self, DKIMSign.self, DKIMVerify.self]
    )
}

/// All of standard input.
func readStandardInput() -> [UInt8] { ReactorSystem.readAll(0) ?? [] }

func writeStandardOutput(_ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { return }
        off += n
    }
}

/// A message from a file or a pipe in SMTP's form: lines end in CRLF. Also says whether the input
/// used bare LF, so that output can be given back the same way.
func messageInSMTPForm(_ input: [UInt8]) -> (message: [UInt8], bareLF: Bool) {
    var out: [UInt8] = []
    out.reserveCapacity(input.count + input.count / 40)
    var bareLF = false
    var previous: UInt8 = 0
    for b in input {
        if b == 10, previous != 13 {
            out.append(13)
            bareLF = true
        }
        out.append(b)
        previous = b
    }
    return (out, bareLF)
}

func withBareLF(_ message: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(message.count)
    var i = 0
    while i < message.count {
        if message[i] == 13, i + 1 < message.count, message[i + 1] == 10 {
            i += 1
            continue
        }
        out.append(message[i])
        i += 1
    }
    return out
}

func loadPrivateKey(_ path: String, command: String) throws -> CryptoKey {
    let pem: [UInt8]
    do {
        pem = try ReactorSystem.loadFile(path, limit: 1 << 20)
    } catch {
        printError("ternctl \(command): \(path): cannot read: \(error.reason)")
        throw ExitCode(1)
    }
    do {
        return try CryptoKey.privateKey(pem: pem)
    } catch {
        printError("ternctl \(command): \(path): \(error)")
        throw ExitCode(1)
    }
}

/// The TXT record to publish for a key: `NAME. IN TXT "..." "..."` in strings of at most 255 bytes.
func dkimTXTRecord(domain: String, selector: String, key: CryptoKey) throws -> String {
    let p = Base64.encode(try key.publicKeyBytes())
    let text = "v=DKIM1; k=\(key.type.rawValue); p=\(p)"
    var strings: [String] = []
    var rest = Substring(text)
    while !rest.isEmpty {
        strings.append(String(rest.prefix(250)))
        rest = rest.dropFirst(250)
    }
    return "\(selector)._domainkey.\(domain). IN TXT " + strings.map { "\"\($0)\"" }.joined(separator: " ")
}

struct DKIMKeygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a DKIM key: writes the private key (PKCS#8 PEM, mode 0600) and prints the TXT record to publish.",
        discussion: """
            The key goes to --key FILE (default: DOMAIN.SELECTOR.pem in the current directory); an existing \
            file is never overwritten. Then name it in the configuration:
              domain example.test {
                  dkim SELECTOR FILE
              }
            Example: ternctl dkim keygen example.test --selector 2026a --algo ed25519
            """
    )

    @Argument(help: "The signing domain (d=).") var domain: String
    @Option(help: "The selector (s=); default: today's date as YYYYMMDD.") var selector: String?
    @Option(help: "rsa2048, rsa3072 or ed25519.") var algo: String = "rsa2048"
    @Option(help: "Where to write the private key (default: the file the configuration names for this domain and selector, else DOMAIN.SELECTOR.pem).") var key: String?
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let type: KeyType
        let bits: Int
        switch algo.lowercased() {
        case "rsa2048", "rsa": (type, bits) = (.rsa, 2048)
        case "rsa3072": (type, bits) = (.rsa, 3072)
        case "ed25519": (type, bits) = (.ed25519, 0)
        default:
            printError("ternctl dkim keygen: unknown --algo '\(algo)' (rsa2048, rsa3072 or ed25519)")
            throw ExitCode(1)
        }
        let domain = self.domain.lowercased().trimmingTrailingDot
        guard !domain.isEmpty, domain.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "/") }) else {
            printError("ternctl dkim keygen: invalid domain '\(self.domain)'")
            throw ExitCode(1)
        }
        let selector = self.selector ?? Self.today()
        guard !selector.isEmpty, selector.utf8.allSatisfy({ TagListChars.selector($0) }) else {
            printError("ternctl dkim keygen: invalid selector '\(selector)' (letters, digits, '-', '_' and '.')")
            throw ExitCode(1)
        }
        // The configuration may already name the file (`dkim SELECTOR FILE` in the domain's block).
        let configured = try options.parse().domains.first { (try? Domain(domain)) == $0.name }?.dkim.first { $0.selector == selector }?.file
        let path = key ?? configured ?? "\(domain).\(selector).pem"
        let generated = try CryptoKey.generate(type, bits: bits)
        let pem = try generated.privatePEM()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            printError("ternctl dkim keygen: \(path): \(errno == EEXIST ? "exists already; not overwritten" : String(cString: strerror(errno)))")
            throw ExitCode(1)
        }
        // As root the key is the queue user's (0600): the queue process signs with it and reads it
        // again on reload.
        if getuid() == 0, let q = try? options.parse().queueUser, let pw = getpwnam(q) { _ = fchown(fd, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        let written = pem.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == pem.count, fsync(fd) == 0, close(fd) == 0 else {
            printError("ternctl dkim keygen: \(path): cannot write: \(String(cString: strerror(errno)))")
            unlink(path)
            throw ExitCode(1)
        }
        if configured != nil && path == configured {
            printError("ternctl dkim keygen: wrote \(path), the key the configuration's `dkim \(selector) …` line names; publish this record:")
        } else {
            printError("ternctl dkim keygen: wrote \(path); publish this record, then add `dkim \(selector) \(path)` to the domain's block:")
        }
        print(try dkimTXTRecord(domain: domain, selector: selector, key: generated))
    }

    static func today() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        let y = Int(tm.tm_year) + 1900, m = Int(tm.tm_mon) + 1, d = Int(tm.tm_mday)
        return "\(y)\(m < 10 ? "0" : "")\(m)\(d < 10 ? "0" : "")\(d)"
    }
}

enum TagListChars {
    static func selector(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 122) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".")
    }
}

extension String {
    var trimmingTrailingDot: String { hasSuffix(".") ? String(dropLast()) : self }
}

struct DKIMSign: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign the message on standard input and write it, signed, to standard output.",
        discussion: """
            c=relaxed/relaxed; From, Subject, Date, To, Cc, Message-ID and Reply-To are over-signed. The \
            algorithm follows the key: rsa-sha256 or ed25519-sha256; --key may be given twice (one signature \
            each). Without --key, the domain's keys in the configuration sign (as ternd would). Lines may end             in LF or CRLF; the output keeps the input's line ends.
              ternctl dkim sign --domain example.test --selector 2026a --key example.test.2026a.pem < msg.eml
              ternctl dkim sign --domain example.test --config /etc/tern/tern.conf < msg.eml
            """
    )

    @Option(help: "The signing domain (d=).") var domain: String
    @Option(help: "The selector (s=); with two keys, give one per key, in the same order.") var selector: [String] = []
    @Option(help: "The private key (PEM); repeat for a second signature. Default: the domain's keys in the configuration.") var key: [String] = []
    @Option(help: "The signing time (t=), seconds since 1970; default: now.") var time: Int?
    @OptionGroup var options: ConfigOption

    func run() async throws {
        var keys: [DKIMSigningKey]
        if key.isEmpty {
            let ascii = (try? Domain(domain).ascii) ?? domain.lowercased().trimmingTrailingDot
            keys = try options.load().signingKeys[ascii] ?? []
            guard !keys.isEmpty else {
                printError("ternctl dkim sign: no --key, and \(options.path ?? "the configuration") has no dkim key for \(domain)")
                throw ExitCode(1)
            }
        } else {
            guard selector.count == 1 || selector.count == key.count else {
                printError("ternctl dkim sign: give one --selector, or one per --key")
                throw ExitCode(1)
            }
            keys = try key.enumerated().map { i, path in
                DKIMSigningKey(domain: domain.trimmingTrailingDot, selector: selector[selector.count == 1 ? 0 : i], key: try loadPrivateKey(path, command: "dkim sign"))
            }
        }
        let (message, bareLF) = messageInSMTPForm(readStandardInput())
        let signed = try DKIMSigner.sign(message, keys: keys, time: time ?? Int(Glibc.time(nil)))
        writeStandardOutput(bareLF ? withBareLF(signed) : signed)
    }
}

struct DKIMVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify the DKIM signatures of the message on standard input.",
        discussion: """
            One line per signature, in header order: pass, fail, neutral, temperror or permerror, then d=, s=, \
            a= and the reason; `none` when the message is not signed. Keys are looked up through the \
            configured resolver (or --resolver). Exit status 0 whatever the result; 1 for bad arguments.
              ternctl dkim verify --resolver 127.0.0.1:5353 < msg.eml
            """
    )

    @OptionGroup var resolverOption: ResolverOption
    @OptionGroup var options: ConfigOption
    @Option(help: "The time to check x= against, seconds since 1970; default: now.") var time: Int?

    func run() async throws {
        let r = try resolverOption.make(options, command: "dkim verify")
        let (message, _) = messageInSMTPForm(readStandardInput())
        let verifier = DKIMVerifier(now: time ?? Int(Glibc.time(nil)))
        verifier.update(message)
        for v in await verifier.finish(resolver: r) { print(v.line) }
    }
}

struct DMARCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dmarc",
        abstract: "DMARC (RFC 7489).",
        subcommands: [DMARCCheck.self]
    )
}

struct DMARCCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Evaluate DMARC for the message on standard input as ternd would: SPF for --ip/--helo/--from, its DKIM signatures, the From domain's policy.",
        discussion: """
            Prints the result word (pass, fail, none, temperror, permerror) on the first line, then the From \
            domain with the published policy and what it asks for this message (disposition, after pct=), \
            then the SPF and DKIM results with their alignment. Exit status 0 whatever the result; 1 for \
            bad arguments.
              ternctl dmarc check --ip 192.0.2.1 --helo mx.example.org --from bounce@example.org --resolver 127.0.0.1:5353 < msg.eml
            """
    )

    @OptionGroup var client: ClientOptions
    @Option(help: "The public suffix list (default: the configured one).") var publicSuffixList: String?
    @Option(help: "The time to check DKIM x= against, seconds since 1970; default: now.") var time: Int?
    @OptionGroup var resolverOption: ResolverOption
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let address = try client.address(command: "dmarc check")
        let (helo, sender) = (client.helo, client.sender)
        let r = try resolverOption.make(options, command: "dmarc check")
        let configured = options.config == nil && access(ConfigOption.systemPath, F_OK) != 0 ? nil : try options.load()
        let listPath = publicSuffixList ?? configured?.configuration.publicSuffixList ?? PublicSuffixList.defaultPath
        let suffixes: PublicSuffixList
        do {
            suffixes = try PublicSuffixList.load(listPath)
        } catch {
            printError("ternctl dmarc check: \(listPath): cannot read the public suffix list")
            throw ExitCode(1)
        }
        let hostname = configured?.configuration.hostname ?? "localhost"
        let spf = await SPFChecker(resolver: r, receivingHost: hostname).check(ip: address, helo: helo, mailFrom: sender)
        let (message, _) = messageInSMTPForm(readStandardInput())
        let verifier = DKIMVerifier(now: time ?? Int(Glibc.time(nil)))
        verifier.update(message)
        let dkim = await verifier.finish(resolver: r)
        let spfDomain = sender.lastIndex(of: "@").map { String(sender[sender.index(after: $0)...]) } ?? helo
        let outcome = await DMARCChecker(resolver: r, suffixes: suffixes).check(header: verifier.header, inputs: DMARCInputs(spf: spf.result, spfDomain: spfDomain, dkim: dkim))
        var out = outcome.result.rawValue + "\n"
        if let p = outcome.publishedPolicy {
            out += "from=\(outcome.fromDomain) policy=\(p.rawValue) disposition=\(outcome.disposition.rawValue) (\(outcome.reason))\n"
        } else {
            out += (outcome.fromDomain.isEmpty ? "" : "from=\(outcome.fromDomain) ") + outcome.reason + "\n"
        }
        let relevant = outcome.publishedPolicy != nil
        out += "spf=\(spf.result.rawValue) domain=\(spfDomain)" + (relevant ? (outcome.spfAligned ? " (aligned)" : " (not aligned)") : "") + "\n"
        for (i, d) in dkim.enumerated() {
            out += "dkim=" + d.line + (relevant && d.result == .pass ? (outcome.alignedSignatures.contains(i) ? " (aligned)" : " (not aligned)") : "") + "\n"
        }
        print(out, terminator: "")
    }
}
