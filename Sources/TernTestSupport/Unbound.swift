// Real DNS servers for tests: unbound on loopback with local data, and a server that never answers.
import DNS
import Foundation
import Glibc

/// Two unbound instances on loopback: `main` answers from local data (and nothing else: the root
/// is a static local zone, so no query can leave the machine) and forwards `fail.test` to
/// `upstream`, which refuses everything, so `main` answers SERVFAIL for it.
public struct UnboundError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

public final class UnboundPair {
    public let dir: String
    public let mainPort: Int
    public let upstreamPort: Int
    var processes: [Process] = []

    public static let bigTXT = (0..<8).map { i in "\"" + String(repeating: Character(UnicodeScalar(UInt8(0x61 + i))), count: 250) + "\"" }.joined(separator: " ")

    public init() async throws {
        dir = NSTemporaryDirectory() + "tern-unbound-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        mainPort = freePort()
        upstreamPort = freePort()
        let common = { (port: Int) in
            """
            server:
              interface: 127.0.0.1
              port: \(port)
              do-daemonize: no
              chroot: ""
              username: ""
              directory: "\(self.dir)"
              pidfile: ""
              use-syslog: no
              logfile: ""
              do-ip6: no
              access-control: 127.0.0.0/8 allow
              do-not-query-localhost: no
              module-config: "iterator"
              edns-buffer-size: 1232
              num-threads: 1

            """
        }
        let main = common(mainPort) + """
              local-zone: "." static
              local-zone: "example.test." static
              local-data: "example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60"
              local-data: "example.test. 300 IN MX 10 mx.example.test."
              local-data: "example.test. 300 IN MX 20 mx2.example.test."
              local-data: "mx.example.test. 300 IN A 127.0.0.1"
              local-data: "mx.example.test. 300 IN AAAA ::1"
              local-data: "mx2.example.test. 1 IN A 127.0.0.2"
              local-data: "www.example.test. 300 IN CNAME mx.example.test."
              local-data: 'example.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 " "-all"'
              local-data: 'big.example.test. 300 IN TXT \(Self.bigTXT)'
              local-data: "_25._tcp.mx.example.test. 300 IN TLSA 3 1 1 abcdef0123456789"
              local-data: "example.test. 300 IN NS ns.example.test."
              local-data-ptr: "192.0.2.25 mx.example.test."
              local-zone: "fail.test." transparent
            forward-zone:
              name: "fail.test."
              forward-addr: 127.0.0.1@\(upstreamPort)
            remote-control:
              control-enable: no

            """
        // (unbound has a default static zone for "test.", so refuse fail.test explicitly)
        let upstream = common(upstreamPort) + """
              local-zone: "." refuse
              local-zone: "fail.test." refuse
            remote-control:
              control-enable: no

            """
        try main.write(toFile: dir + "/main.conf", atomically: true, encoding: .utf8)
        try upstream.write(toFile: dir + "/upstream.conf", atomically: true, encoding: .utf8)
        for conf in ["upstream", "main"] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/unbound")
            p.arguments = ["-d", "-c", dir + "/\(conf).conf"]
            p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            processes.append(p)
        }
        // Ready when it answers.
        let probe = try StubResolver(configuration: StubConfiguration(servers: [server], timeout: 0.2, attempts: 1))
        for _ in 0..<50 {
            if await probe.resolve(try DNSName("mx.example.test"), .a).status == .noError { return }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        throw UnboundError(message: "unbound did not answer on 127.0.0.1:\(mainPort) within 5 s (is the unbound package installed?)")
    }

    public var server: DNSServer { DNSServer(host: "127.0.0.1", port: mainPort) }

    deinit {
        for p in processes {
            p.terminate()
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A free loopback port (bound and released).
public func freePort() -> Int {
    let (fd, port) = boundLoopbackSocket(Int32(SOCK_STREAM.rawValue))
    close(fd)
    return port
}

/// A socket bound to 127.0.0.1 on a port the kernel picks, and that port.
func boundLoopbackSocket(_ type: Int32) -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, type, 0)
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return (fd, Int(UInt16(bigEndian: a.sin_port)))
}

/// A UDP socket that receives and never answers.
public final class SilentServer {
    let fd: Int32
    public let port: Int
    public init() {
        (fd, port) = boundLoopbackSocket(Int32(SOCK_DGRAM.rawValue))
    }
    deinit { close(fd) }
    public var server: DNSServer { DNSServer(host: "127.0.0.1", port: port) }
}


/// A UDP server that answers every query with the query's ID and then `reply` (a malformed or
/// hostile answer), on a thread of its own.
public final class ScriptedServer: @unchecked Sendable {
    let fd: Int32
    public let port: Int
    let reply: [UInt8]
    var thread: Thread?

    public init(reply: [UInt8]) {
        (fd, port) = boundLoopbackSocket(Int32(SOCK_DGRAM.rawValue))
        self.reply = reply
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let t = Thread { [self] in self.serve() }
        thread = t
        t.start()
    }

    var stopped = false
    func serve() {
        var buf = [UInt8](repeating: 0, count: 2048)
        while !stopped {
            var peer = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buf.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &len) } }
            }
            guard n >= 2 else { continue }
            let out = Array(buf[0..<2]) + reply
            _ = out.withUnsafeBytes { b in
                withUnsafePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, b.baseAddress, b.count, 0, $0, len) } }
            }
        }
    }

    public func stop() {
        stopped = true
        usleep(200_000)
        close(fd)
    }

    public var server: DNSServer { DNSServer(host: "127.0.0.1", port: port) }
}
