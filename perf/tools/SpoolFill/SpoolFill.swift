// spoolfill: writes a spool holding COUNT messages whose deliveries are deferred far into the future,
// for perf/compare-queue.sh (acceptance and recovery with a large queue). Not installed; perf only.
//
//   spoolfill DIR COUNT [SIZE] [RCPT]
import ArgumentParser
import Glibc
import Spool

@main
struct SpoolFill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spoolfill", abstract: "Writes a spool holding COUNT messages deferred for a day (perf/compare-queue.sh).")

    @Argument(help: "The spool folder (created when missing).") var directory: String
    @Argument(help: "How many messages.") var count: Int
    @Argument(help: "Message size in bytes.") var size = 1000
    @Argument(help: "The recipient.") var recipient = "deferred@example.test"

    func validate() throws {
        guard count > 0, size > 0 else { throw ValidationError("COUNT and SIZE must be positive") }
        // An option taken for a folder once left a spool in the repository (`--input-fd/`).
        guard !directory.hasPrefix("-") else { throw ValidationError("'\(directory)' is not a folder (unknown option?)") }
    }

    func run() throws {
        let rcpt = recipient
        let spool = try Spool(directory: directory)
        _ = try spool.recover()
        var body = Array("Subject: deferred\r\n\r\n".utf8)
        while body.count + 78 <= size { body += Array(String(repeating: "x", count: 76).utf8) + [13, 10] }
        let later = Int64(time(nil)) + 86_400
        var done = 0
        while done < count {
            // In rounds: the messages, then (once they are stored) their deferrals.
            let round = min(10_000, count - done)
            var ids: [UInt64] = []
            for _ in 0..<round {
                let id = spool.newID()
                let m = SpoolMessage(
                    id: id, arrival: Int64(time(nil)), sender: "sender@remote.example", body: body,
                    deliveries: [SpoolDelivery(kind: .mailbox, recipient: rcpt, destination: rcpt)])
                if case .queued = spool.accept(m, completion: { _ in }) { ids.append(id) }
            }
            spool.waitForWrites(timeout: 600)
            for id in ids {
                spool.record(SpoolStatus(id: id, delivery: 0, state: .deferred, attempts: 1, nextAttempt: later, reason: "451 4.3.0 filled by spoolfill"))
            }
            spool.waitForWrites(timeout: 600)
            done += round
        }
        spool.close()
        print("spoolfill: \(spool.pendingCount) deferred messages in \(directory)")
    }
}
