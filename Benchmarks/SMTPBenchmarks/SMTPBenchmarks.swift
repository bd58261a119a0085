// package-benchmark (ordo-one) benchmarks of the SMTP engine: pipelined command parsing,
// whole pipelined transactions, and the DATA scanner. Allocation counts are part of the result:
// steady state must allocate nothing (thresholds in Thresholds/, checked by `make bench-check`).
import Benchmark
import Glibc
import SMTP

/// A server state machine after EHLO, with one shared output buffer, driven as the reactor does.
final class Harness: ServerEventHandler {
    var machine = ServerStateMachine(context: ServerContext(ServerConfiguration(maxRecipients: 1000)))
    let out = OutputBuffer(capacity: 1 << 20)
    var bodyBytes = 0
    var messages = 0

    init() {
        machine.start(into: out)
        feed(Array("EHLO bench.test\r\n".utf8))
        out.clear()
    }

    func feed(_ input: [UInt8]) {
        input.withUnsafeBytes { feed($0) }
    }

    func feed(_ b: UnsafeRawBufferPointer) {
        _ = machine.consume(b, into: out, handler: self)
    }

    /// Feeds `input` once to warm the envelope's storage, then once per measured iteration.
    static func measure(_ benchmark: Benchmark, feeding input: [UInt8]) -> Harness {
        let h = Harness()
        h.feed(input)
        h.out.clear()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            h.feed(input)
            h.out.clear()
        }
        benchmark.stopMeasurement()
        return h
    }

    func messageStart() { bodyBytes = 0 }
    func messageBody(_ bytes: UnsafeRawBufferPointer) { bodyBytes += bytes.count }
    func checkSender(_ session: ServerStateMachine) -> Reply? { nil }
    func checkRecipient(_ session: ServerStateMachine) -> Reply? { nil }
    func messageComplete(_ session: ServerStateMachine) -> Reply? {
        messages += 1
        return .messageAccepted
    }
}

func message(size: Int) -> [UInt8] {
    var m = Array("Subject: benchmark\r\nFrom: <sender@example.org>\r\n\r\n".utf8)
    let line = Array("The quick brown fox jumps over the lazy dog. 0123456789 ABCDEFGHIJKLMNOPQRS\r\n".utf8)
    while m.count + line.count <= size { m += line }
    m += Array(".leading dot line\r\n".utf8)
    return DotStuffing.stuff(m)
}

/// Allocation counts are checked against Thresholds/*.json (`make bench-check`) with no tolerance:
/// all of them are 0 in steady state. (With the timing metrics on, the harness's own collectors add
/// a fixed 16 per sample; the empty benchmark shows it.) One allocation per command would add
/// 1,000 per sample.
func zeroAllocations() -> [BenchmarkMetric: BenchmarkThresholds] {
    [.mallocCountTotal: BenchmarkThresholds(absolute: [.p90: 0])]
}

/// `TERN_BENCH_ALLOCATIONS_ONLY=1` (make bench-check) measures allocations only: timings on a shared
/// machine are too noisy to gate on, allocation counts are exact.
let allocationsOnly = getenv("TERN_BENCH_ALLOCATIONS_ONLY") != nil

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: allocationsOnly ? [.mallocCountTotal] : [.wallClock, .throughput, .mallocCountTotal, .instructions],
        warmupIterations: 3,
        maxDuration: allocationsOnly ? .milliseconds(300) : .seconds(2),
        maxIterations: 10_000
    )

    // The harness's own allocations per sample, for reference.
    Benchmark("EmptyMeasurement", configuration: .init(scalingFactor: .one, thresholds: zeroAllocations())) { benchmark in
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations { blackHole(i) }
        benchmark.stopMeasurement()
    }

    // 1,000 pipelined commands per iteration: MAIL, RCPT, RCPT, RSET, NOOP repeated.
    let commands: [UInt8] = {
        var c: [UInt8] = []
        for _ in 0..<200 {
            c += Array("MAIL FROM:<sender@example.org> SIZE=1000 BODY=8BITMIME\r\nRCPT TO:<first.recipient@example.test>\r\nRCPT TO:<second@example.test> NOTIFY=FAILURE\r\nRSET\r\nNOOP\r\n".utf8)
        }
        return c
    }()
    Benchmark("PipelinedCommands_1000", configuration: .init(scalingFactor: .one, thresholds: zeroAllocations())) {
        let h = Harness.measure($0, feeding: commands)
        blackHole(h.machine.errorCount)
    }

    // 100 pipelined 1 KB transactions per iteration: MAIL, RCPT, DATA, body, end of data.
    let transactions: [UInt8] = {
        let body = message(size: 1000)
        var t: [UInt8] = []
        for _ in 0..<100 {
            t += Array("MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n".utf8)
            t += body
            t += Array(".\r\n".utf8)
        }
        return t
    }()
    Benchmark("PipelinedTransactions_100x1KB", configuration: .init(scalingFactor: .one, thresholds: zeroAllocations())) {
        let h = Harness.measure($0, feeding: transactions)
        precondition(h.messages % 100 == 0)
        blackHole(h.bodyBytes)
    }

    // The DATA scanner over 1 MiB of 78-byte lines per iteration (bytes/s = 1 MiB × throughput).
    let megabyte: [UInt8] = {
        var m = message(size: 1 << 20)
        m += Array(".\r\n".utf8)
        return m
    }()
    Benchmark(
        "DataScanner_1MiB",
        configuration: .init(scalingFactor: .one, thresholds: zeroAllocations())
    ) { benchmark in
        var total = 0
        megabyte.withUnsafeBytes { b in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                var s = BodyScanner()
                var i = 0
                scan: while true {
                    switch s.scan(b, from: i) {
                    case .data(let r, let next): total += r.count; i = next
                    case .end(let r, _): total += r.count; break scan
                    case .needMore(let r, _): total += r.count; break scan
                    case .badLineEnding: fatalError("bad input")
                    }
                }
            }
            benchmark.stopMeasurement()
        }
        blackHole(total)
    }
}
