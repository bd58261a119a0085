import Bench
import Reactor
import Testing

@Suite("Bench library", .serialized)
struct LibraryTests {
    @Test("sink and load generator in process, over IPv6 loopback")
    func ipv6() throws {
        let sink = try SinkServer(options: SinkOptions(listen: HostPort(host: "::1", port: 0), threads: 1))
        defer { sink.shutdown() }
        let report = try LoadGenerator(
            options: SendOptions(server: HostPort(host: "::1", port: sink.port), sessions: 3, messages: 30, threads: 1)
        ).run()
        #expect(report.allAccepted, "\(report.errors)")
        #expect(sink.counts.messages == 30)
        #expect(sink.counts.bytes == 30 * report.size)
    }

    @Test("addresses parse strictly", arguments: [
        ("127.0.0.1:25", "127.0.0.1", 25), ("[::1]:2525", "::1", 2525), ("localhost:1", "127.0.0.1", 1),
        ("[2001:db8::1]:587", "2001:db8::1", 587),
    ])
    func hostPort(_ s: String, _ host: String, _ port: Int) throws {
        #expect(try HostPort(parsing: s) == HostPort(host: host, port: port))
    }

    @Test("bad addresses are refused with a message", arguments: [
        "example.com:25", "127.0.0.1", "127.0.0.1:", "1.2.3:25", "::1:25", "[::1]25", "127.0.0.1:70000", "256.1.1.1:25", ":25",
    ])
    func badHostPort(_ s: String) {
        #expect(throws: HostPort.ParseError.self) { try HostPort(parsing: s) }
    }

    @Test("a default port allows bare addresses (DNS servers); port 0 only when allowed")
    func defaultPort() throws {
        #expect(try HostPort(parsing: "10.0.0.1", defaultPort: 53) == HostPort(host: "10.0.0.1", port: 53))
        #expect(try HostPort(parsing: "::1", defaultPort: 53) == HostPort(host: "::1", port: 53))
        #expect(try HostPort(parsing: "2001:db8::1", defaultPort: 53) == HostPort(host: "2001:db8::1", port: 53))
        #expect(try HostPort(parsing: "[::1]", defaultPort: 53) == HostPort(host: "::1", port: 53))
        #expect(try HostPort(parsing: "10.0.0.1:5353", defaultPort: 53) == HostPort(host: "10.0.0.1", port: 5353))
        #expect(throws: HostPort.ParseError.self) { try HostPort(parsing: "127.0.0.1:0") }
        #expect(try HostPort(parsing: "127.0.0.1:0", allowPortZero: true).port == 0)
        #expect(throws: HostPort.ParseError.self) { try HostPort(parsing: "01.2.3.4:25") }
        #expect(throws: HostPort.ParseError.self) { try HostPort(parsing: "1::2::3", defaultPort: 53) }
        #expect(IPAddress.v6("::ffff:192.0.2.1") == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1])
        #expect(IPAddress.v6("::ffff:192.0.2") == nil && IPAddress.v6("1:2:3:4:5:6:7:1.2.3.4") == nil)
    }

    @Test("the test message has the requested size and is valid for DATA")
    func message() {
        for size in [0, 100, 1000, 4096, 100_000] + Array(250...420) {
            let m = MessageFactory.message(size: size, from: "a@b.test", to: "c@d.test")
            #expect(m.count == max(size, m.count), "size \(size)")
            if size >= 400 { #expect(m.count == size) }
            #expect(m.suffix(2) == [13, 10])
        }
    }
}
