// ternctl queue: what the spool still owes — every message with a delivery not finished, each
// such delivery's state, and why the last attempt did not deliver. Reads the spool without
// changing it, so it works while ternd runs (and when it does not).
import ArgumentParser
import Config
import Glibc
import Spool

struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "List the messages still to be delivered, and why they wait.",
        discussion: """
            One paragraph per message: its queue ID, arrival, sender and spooled size, then every delivery \
            it still owes with its state (waiting for its first attempt, or deferred: attempts so far, the \
            next one, and the reason). Delivered and failed recipients are not shown. The spool is read as \
            it is, while ternd runs; nothing is changed.
              ternctl queue
              ternctl queue --config /etc/tern/tern.conf
            """
    )

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.parse()
        guard access(config.spool, F_OK) == 0 else {
            print("queue is empty (no spool at \(config.spool))")
            return
        }
        let listing: QueueListing
        do {
            listing = try QueueListing.read(directory: config.spool)
        } catch {
            printError("ternctl queue: \(error)")
            throw ExitCode(1)
        }
        print(Self.text(listing, now: Int64(time(nil))), terminator: "")
        for d in listing.damage { printError("ternctl queue: damaged spool: \(d)") }
    }

    /// The listing as printed.
    static func text(_ listing: QueueListing, now: Int64) -> String {
        guard !listing.messages.isEmpty else { return "queue is empty\n" }
        var out = ""
        for m in listing.messages {
            out += "\(QueueID.text(m.id))  \(date(m.arrival))  <\(m.sender)>  \(m.spooledBytes) bytes\n"
            for d in m.pending {
                var line = "    \(target(d.delivery))"
                if d.delivery.kind == .pipe || d.delivery.recipient.lowercased() != d.delivery.destination.lowercased() {
                    line += " (for <\(d.delivery.recipient)>)"
                }
                if d.state == nil {
                    line += "  waiting for its first attempt"
                } else {
                    line += "  deferred, \(d.attempts) attempt\(d.attempts == 1 ? "" : "s")"
                    line += d.nextAttempt <= now ? ", due now" : ", next \(date(d.nextAttempt))"
                }
                out += line + "\n"
                if !d.reason.isEmpty { out += "        \(d.reason)\n" }
            }
        }
        let n = listing.messages.count, k = listing.pendingDeliveries
        out += "\(n) message\(n == 1 ? "" : "s"), \(k) deliver\(k == 1 ? "y" : "ies") owed\n"
        return out
    }

    /// Where a delivery goes: an address, or the command of a pipe alias.
    static func target(_ d: SpoolDelivery) -> String {
        switch d.kind {
        case .mailbox, .remote: return "<\(d.destination)>"
        case .pipe: return d.shownDestination
        }
    }

    /// "2026-11-30 07:14:24 UTC".
    static func date(_ t: Int64) -> String {
        var tm = tm()
        var t = time_t(t)
        gmtime_r(&t, &tm)
        var buf = [CChar](repeating: 0, count: 32)
        let n = strftime(&buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm)
        return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
