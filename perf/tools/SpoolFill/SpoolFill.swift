// spoolfill: writes a spool holding COUNT messages whose deliveries are deferred far into the future,
// for perf/compare-queue.sh (acceptance and recovery with a large queue). Not installed; perf only.
//
//   spoolfill DIR COUNT [SIZE] [RCPT]
import Glibc
import Spool

@main
struct SpoolFill {
    static func main() throws {
        let args = CommandLine.arguments
        guard args.count >= 3, let count = Int(args[2]) else {
            print("usage: spoolfill DIR COUNT [SIZE] [RCPT]")
            exit(2)
        }
        let size = args.count > 3 ? Int(args[3]) ?? 1000 : 1000
        let rcpt = args.count > 4 ? args[4] : "deferred@example.test"
        let spool = try Spool(directory: args[1])
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
        print("spoolfill: \(spool.pendingCount) deferred messages in \(args[1])")
    }
}
