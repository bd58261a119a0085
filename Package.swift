// swift-tools-version: 6.1
// Tern — a mail transfer agent for Linux. See README.md and docs/architecture.md.
import PackageDescription

/// Release builds drop the runtime exclusivity checks in the hot modules: profiling the sink under
/// smtp-source showed swift_beginAccess and its access-set bookkeeping at ~14% of user-space CPU.
/// Debug builds (and so every test run) keep them, and the compile-time checks stay in force.
let hotPath: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "Tern",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ternbench", targets: ["ternbench"]),
        .executable(name: "ternd", targets: ["ternd"]),
        .executable(name: "ternctl", targets: ["ternctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The one C module: liburing, OpenSSL, epoll/eventfd/timerfd/socket headers and shims.
        .target(
            name: "CTernSystem",
            linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // Event loops, the backend seam, sockets, timers, buffers, executors. No SMTP knowledge.
        .target(name: "Reactor", dependencies: ["CTernSystem"], swiftSettings: hotPath),
        // Sans-IO SMTP: server and client state machines, commands, replies, addresses, body scanner.
        .target(name: "SMTP", swiftSettings: hotPath),
        // The configuration language, aliases and recipient resolution (sans-IO).
        .target(name: "Config", dependencies: ["SMTP", "DNS"], exclude: ["generate-case-folding.py"]),
        // DNS: the Resolver protocol, the wire format, the static zone resolver and the cache.
        .target(name: "DNS", dependencies: ["Reactor"]),
        // Mail authentication: SPF (and next DKIM, DMARC, Authentication-Results).
        .target(name: "MailAuth", dependencies: ["DNS", "Reactor", "SMTP", "CTernSystem"], swiftSettings: hotPath),
        // Users and their passwords: scrypt hashes, the per-domain users files.
        .target(name: "Users", dependencies: ["CTernSystem", "SMTP", "Config", "Reactor"]),
        // The durable spool: an append-only log with group commit, recovery, per-delivery state.
        .target(name: "Spool", dependencies: ["CTernSystem"]),
        // The typed frames ternd's processes send each other, encoded by hand, and the order rules.
        .target(name: "IPC", dependencies: ["CTernSystem", "SMTP", "Config", "Reactor"]),
        // The inbound session's decisions as pure functions (relay guard, sender rules, SPF, DMARC).
        .target(name: "Policy", dependencies: ["Config", "MailAuth", "SMTP", "Spool"]),
        // Privilege separation: the parent's supervision of its children (and, next, spawning them).
        .target(name: "Privsep", dependencies: ["IPC", "CTernSystem", "Reactor"]),
        // The queue's scheduling: the delivery workers (MailQueue), the retry policy, bounces (DSNs).
        .target(name: "Queue", dependencies: ["CTernSystem", "Config", "Delivery", "SMTP", "Spool"]),
        // Local delivery: Maildir (and, next, the MDA and the outbound courier).
        .target(name: "Delivery", dependencies: ["CTernSystem", "Config", "DNS", "MailAuth", "Reactor", "SMTP"]),
        // Wiring of the SMTP engine onto the reactor: inbound sessions and listeners.
        .target(name: "Server", dependencies: ["Reactor", "SMTP"], swiftSettings: hotPath),
        // ternd's processes and their wiring: configuration loading, the mail delegate, intake.
        .target(name: "Daemon", dependencies: ["CTernSystem", "Reactor", "SMTP", "Server", "Config", "Spool", "Delivery", "DNS", "MailAuth", "Users", "Policy", "Queue", "IPC", "Privsep"], swiftSettings: hotPath),
        .executableTarget(
            name: "ternd",
            dependencies: ["Daemon", "Config", "CTernSystem", "Reactor", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The control and admin tool.
        .executableTarget(
            name: "ternctl",
            dependencies: ["Daemon", "Config", "DNS", "Delivery", "MailAuth", "SMTP", "Spool", "Users", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The load generator and the sink behind `ternbench`.
        .target(
            name: "Bench",
            dependencies: ["Reactor", "SMTP", "Server", .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: hotPath
        ),
        .executableTarget(
            name: "ternbench",
            dependencies: ["Bench", "Reactor", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Helpers shared by tests: the dialog runner, byte splitting, process helpers.
        .target(name: "TernTestSupport", dependencies: ["SMTP", "DNS", "Spool"], path: "Sources/TernTestSupport"),
        .testTarget(name: "SMTPTests", dependencies: ["SMTP", "TernTestSupport"], exclude: ["Dialogs"]),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CTernSystem", "TernTestSupport"]),
        .testTarget(name: "SpoolTests", dependencies: ["Spool", "TernTestSupport"]),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "Config", "MailAuth", "SMTP", "Spool"]),
        .testTarget(name: "PrivsepTests", dependencies: ["Privsep", "IPC"]),
        .testTarget(name: "QueueTests", dependencies: ["Queue", "Spool", "TernTestSupport"]),
        .testTarget(name: "ConfinementTests", dependencies: ["CTernSystem"]),
        .testTarget(name: "IPCTests", dependencies: ["IPC", "Config", "SMTP", "Reactor", "CTernSystem", "TernTestSupport"]),
        .testTarget(name: "UsersTests", dependencies: ["Users", "Config"]),
        .testTarget(name: "DeliveryTests", dependencies: ["Delivery", "DNS", "SMTP", "Config"]),
        .testTarget(name: "DNSTests", dependencies: ["DNS", "TernTestSupport", "Reactor"]),
        .testTarget(name: "MailAuthTests", dependencies: ["MailAuth", "DNS", "SMTP"], exclude: ["Data"]),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "SMTP", "DNS", "Reactor"]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["Bench", "Server", "Reactor", "SMTP", "TernTestSupport", "Daemon", "Spool", "DNS", "IPC", "CTernSystem"],
            exclude: ["Peers"]
        ),
        // perf helper: fills a spool with deferred messages (perf/compare-queue.sh).
        .executableTarget(name: "spoolfill", dependencies: ["Spool", .product(name: "ArgumentParser", package: "swift-argument-parser")], path: "perf/tools/SpoolFill"),
        // perf helper: resolver throughput and soak (perf/compare-dns.sh).
        .executableTarget(name: "dnsload", dependencies: ["DNS", "MailAuth", "CTernSystem", .product(name: "ArgumentParser", package: "swift-argument-parser")], path: "perf/tools/DNSLoad"),
        // perf helper: DKIM sign/verify throughput (perf/compare-dkim.sh).
        .executableTarget(name: "dkimload", dependencies: ["DNS", "MailAuth", "SMTP", "CTernSystem", .product(name: "ArgumentParser", package: "swift-argument-parser")], path: "perf/tools/DKIMLoad"),
        // package-benchmark (ordo-one): `swift package benchmark` or `make bench`.
        .executableTarget(
            name: "SMTPBenchmarks",
            dependencies: ["SMTP", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/SMTPBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
