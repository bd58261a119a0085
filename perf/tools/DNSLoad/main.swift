// dnsload: throughput of Tern's resolvers (perf/compare-dns.sh).
//
//   dnsload cached [--names N] [--lookups N]              cache hits on one thread
//   dnsload cold --server ADDR [--names N] [--lookups N] [--in-flight K]
//                                                          stub resolver, every question new
//   dnsload soak --server ADDR --seconds S [--names N]     cache + stub for S seconds; RSS and
//                                                          malloc'd bytes every 10 s
// Names are n0.load.test … n{N-1}.load.test (the script's unbound serves them).
import ArgumentParser
import CTernSystem
import DNS
import MailAuth
import Glibc
import Synchronization

/// The options (swift-argument-parser, as the other tools: an unknown option is an error).
struct Options: ParsableArguments {
    enum Mode: String, ExpressibleByArgument, CaseIterable { case cached, cold, soak, spf }
    @Argument(help: "cached, cold, soak or spf.") var mode: Mode
    @Option(help: "How many names (n0.load.test …).") var names = 1000
    @Option(help: "Lookups (cached: 5000000, cold: 200000).") var lookups: Int?
    @Option(help: "The DNS server, ADDRESS[:PORT] (cold, soak).") var server: String?
    @Option(name: .customLong("in-flight"), help: "Lookups in flight (cold).") var inFlight = 100
    @Option(help: "Seconds (soak).") var seconds = 600.0
    @Option(help: "SPF checks (spf).") var checks = 1_000_000

    func validate() throws {
        guard names > 0, inFlight > 0, seconds > 0, checks > 0, (lookups ?? 1) > 0 else { throw ValidationError("counts must be positive") }
        if mode == .cold || mode == .soak, server == nil { throw ValidationError("\(mode.rawValue) needs --server ADDRESS[:PORT]") }
    }
}
let options = Options.parseOrExit()

func fixed3(_ v: Double) -> String {
    let m = Int((v * 1000).rounded())
    let f = String(m % 1000)
    return "\(m / 1000).\(String(repeating: "0", count: 3 - f.count))\(f)"
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

func now() -> Double { Double(monotonicNanoseconds()) / 1e9 }

func rssKiB() -> Int {
    guard let f = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmRSS:") { return Int(s.split(separator: " ")[1]) ?? 0 }
    }
    return 0
}

func heapBytes() -> Int { Int(tern_heap_in_use()) }

let mode = options.mode.rawValue
let nameCount = options.names
let names = (0..<nameCount).map { try! DNSName("n\($0).load.test") }

switch mode {
case "cached":
    let lookups = options.lookups ?? 5_000_000
    let zone = ZoneResolver(records: names.enumerated().map { i, n in
        ResourceRecord(name: n, type: .a, ttl: 86_400, data: .a([10, UInt8(i >> 16 & 0xFF), UInt8(i >> 8 & 0xFF), UInt8(i & 0xFF)]))
    })
    let cache = CachingResolver(upstream: zone, capacity: nameCount * 2)
    // Off the main actor, so each lookup is a plain call on this thread, not two executor hops.
    let (found, t) = await Task.detached { () async -> (Int, Double) in
        for n in names { _ = await cache.resolve(n, .a) }  // warm
        var found = 0
        let t0 = now()
        for i in 0..<lookups {
            let a = await cache.resolve(names[i % nameCount], .a)
            found &+= a.records.count
        }
        return (found, now() - t0)
    }.value
    print("cached \(lookups) lookups in \(fixed3(t)) s: \(Int(Double(lookups) / t)) lookups/s on one thread (\(found == lookups ? "all answered" : "MISSING ANSWERS"))")
case "cold", "soak":
    guard let s = options.server, let server = DNSServer(s) else {
        print("dnsload: --server ADDR required")
        exit(1)
    }
    var config = StubConfiguration(servers: [server], timeout: 2, attempts: 2)
    config.udpPayload = 1232
    let stub = try StubResolver(configuration: config)
    if mode == "cold" {
        let lookups = options.lookups ?? 200_000
        let inFlight = options.inFlight
        let next = Counter()
        let ok = Counter()
        let t0 = now()
        await withTaskGroup(of: Void.self) { g in
            for _ in 0..<inFlight {
                g.addTask {
                    while true {
                        let i = next.value.add(1, ordering: .relaxed).oldValue
                        if i >= lookups { return }
                        let a = await stub.resolve(names[i % nameCount], .a)
                        if a.status == .noError { ok.value.add(1, ordering: .relaxed) }
                    }
                }
            }
        }
        let t = now() - t0
        let answered = ok.value.load(ordering: .relaxed)
        print("cold \(lookups) lookups, \(inFlight) in flight, in \(fixed3(t)) s: \(Int(Double(lookups) / t)) lookups/s, \(answered) answered")
    } else {
        let seconds = options.seconds
        let cache = CachingResolver(upstream: stub, capacity: nameCount / 2)  // half fit: hits, misses and evictions
        let start = now()
        var lookups = 0
        var nextReport = start
        var samples: [(Double, Int, Int)] = []
        var i = 0
        while now() - start < seconds {
            let base = i
            await withTaskGroup(of: Void.self) { g in
                for k in 0..<100 {
                    let n = names[(base &+ k &* 7919) % nameCount]
                    g.addTask { _ = await cache.resolve(n, .a) }
                }
            }
            i &+= 100
            lookups += 100
            if now() >= nextReport {
                samples.append((now() - start, rssKiB(), heapBytes()))
                print("t=\(Int(now() - start)) s lookups=\(lookups) rss=\(rssKiB()) KiB heap=\(heapBytes()) bytes entries=\(cache.statistics.entries)")
                nextReport += 10
            }
        }
        // Growth: the last third of the run against the first third (after warm-up).
        let third = max(samples.count / 3, 1)
        let early = samples.dropFirst(1).prefix(third).map(\.2).max() ?? 0
        let late = samples.suffix(third).map(\.2).max() ?? 0
        print("soak \(Int(seconds)) s, \(lookups) lookups: heap \(early) → \(late) bytes (max of the first and last thirds), rss \(samples.first?.1 ?? 0) → \(samples.last?.1 ?? 0) KiB")
    }
case "spf":
    // SPF checks through a cache of a static zone: a typical record with an include and an mx.
    let checks = options.checks
    let zone = try ZoneResolver.parse("""
        $ORIGIN example.test.
        @ TXT "v=spf1 ip4:198.51.100.0/24 mx include:_spf.example.net ~all"
        @ MX 10 mx
        mx A 203.0.113.25
        _spf.example.net. TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
        """)
    let spf = SPFChecker(resolver: CachingResolver(upstream: zone))
    let ip = SPFAddress("192.0.2.77")!
    let (passes, t) = await Task.detached { () async -> (Int, Double) in
        var passes = 0
        for _ in 0..<1000 { _ = await spf.check(ip: ip, helo: "h.example.org", mailFrom: "a@example.test") }  // warm
        let t0 = now()
        for _ in 0..<checks where await spf.check(ip: ip, helo: "h.example.org", mailFrom: "a@example.test").result == .pass { passes += 1 }
        return (passes, now() - t0)
    }.value
    print("spf \(checks) checks in \(fixed3(t)) s: \(Int(Double(checks) / t)) checks/s on one thread (\(passes == checks ? "all pass" : "WRONG RESULTS"))")
default:
    print("usage: dnsload cached|cold|soak|spf [--server ADDR] [--names N] [--lookups N] [--in-flight K] [--seconds S]")
    exit(2)
}
