import Foundation
import Reactor
import SMTP
import Server
import Synchronization
import TernTestSupport
import Testing

/// A message as the capturing server stored it.
struct Captured: Sendable {
    var sender: String
    var recipients: [String]
    var body: [UInt8]
    var smtpUTF8: Bool
    var bodyType: BodyType
}

/// Keeps every accepted message, for byte-for-byte checks.
final class MessageStore: Sendable {
    let messages = Mutex<[Captured]>([])
    func append(_ c: Captured) { messages.withLock { $0.append(c) } }
    var all: [Captured] { messages.withLock { $0 } }
}

final class CapturingDelegate: InboundDelegate, @unchecked Sendable {
    let store: MessageStore
    var current: [UInt8] = []

    init(store: MessageStore) { self.store = store }

    func messageStart(_ session: InboundSession) { current = [] }
    func messageBody(_ session: InboundSession, _ bytes: UnsafeRawBufferPointer) { current += bytes }
    func messageComplete(_ session: InboundSession, _ smtp: ServerStateMachine) -> MessageDisposition {
        let e = smtp.envelope
        let c = Captured(sender: e.sender, recipients: e.recipientAddresses, body: current, smtpUTF8: e.smtpUTF8, bodyType: e.body)
        store.append(c)
        current = []
        return .reply(.messageAccepted)
    }
}

/// An SMTP server on the real reactor and engine that captures messages.
final class CapturingServer: @unchecked Sendable {
    let group: EventLoopGroup
    let port: Int
    let store = MessageStore()

    init(configuration: ServerConfiguration = ServerConfiguration(hostname: "mx.test"), loops: Int = 2) throws {
        group = try EventLoopGroup(count: loops)
        group.start()
        let server = ServerContext(configuration)
        let store = self.store
        port = try group.listen(host: "127.0.0.1", port: 0) { _ in
            let context = InboundContext(server: server, delegate: CapturingDelegate(store: store))
            return { _ in InboundSession(context: context) }
        }
    }

    var messages: [Captured] { store.all }

    func shutdown() { group.shutdown() }
}

/// Runs a program to completion and returns its exit status and output (through temporary files,
/// so a chatty child cannot block on a full pipe).
@discardableResult
func run(_ path: String, _ args: [String], timeout: TimeInterval = 120) throws -> (status: Int32, out: String, err: String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tern-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let outURL = dir.appendingPathComponent("out"), errURL = dir.appendingPathComponent("err")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardOutput = try FileHandle(forWritingTo: outURL)
    p.standardError = try FileHandle(forWritingTo: errURL)
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning {
        p.terminate()
        let grace = Date().addingTimeInterval(2)
        while p.isRunning && Date() < grace { usleep(10_000) }
        // The child may have SIGTERM blocked (a spawned process inherits the spawning thread's
        // signal mask): a timeout must end it all the same, or the test waits forever.
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    }
    p.waitUntilExit()
    let o = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
    let e = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return (p.terminationStatus, o, e)
}

/// Finds a program on PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// A binary of this package built next to the test bundle.
func builtBinary(_ name: String) -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    while dir.path != "/" {
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return ".build/debug/\(name)"
}

var ternbenchPath: String { builtBinary("ternbench") }
var ternctlPath: String { builtBinary("ternctl") }

let peersDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers").path
/// Starts the Python SMTP peer `script` (in Peers/) listening on `port`, and waits until it answers.
/// The caller stops it with `stopPeer`.
func startSMTPPeer(_ script: String, port: Int, _ arguments: [String]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["\(peersDirectory)/\(script)"] + arguments
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    #expect(waitFor(20) { (try? exchange(port: port, send: Array("QUIT\r\n".utf8), timeout: 1)) != nil }, "\(script) did not start")
    return p
}

func stopPeer(_ p: Process) {
    p.terminate()
    p.waitUntilExit()
}

let dialogsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("SMTPTests/Dialogs").path

/// A blocking TCP client for dialog replay.
func exchange(port: Int, send bytes: [UInt8], timeout: TimeInterval = 5) throws -> [UInt8] {
    let fd = try loopbackConnection(port: port, timeout: Int(timeout))
    defer { close(fd) }
    sendAll(fd, bytes)
    return readToEnd(fd)
}

/// A TCP connection to 127.0.0.1:`port` whose reads time out after `timeout` seconds.
func loopbackConnection(port: Int, timeout: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else {
        close(fd)
        throw POSIXError(.ECONNREFUSED)
    }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

/// Sends all of `bytes` (or as much as the peer takes before it closes).
func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }
        off += n
    }
}

/// Reads until the peer closes or a read times out.
func readToEnd(_ fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    // No retry on EINTR, on purpose: nothing here takes signals, and a reactor that disturbs other
    // threads of its process (an io_uring ring set up off its loop thread did) must fail tests.
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}

/// Ports `freePort` handed out in this test run.
let portsHandedOut = Mutex<Set<Int>>([])

/// A loopback port nothing listens on now, never one handed out before in this run: the kernel
/// may give the same ephemeral port to two probes in a row, and two listeners of one ternd
/// then collide ("is already a listener").
func freePort() -> Int {
    while true {
        let port = probePort()
        if portsHandedOut.withLock({ $0.insert(port).inserted }) { return port }
    }
}

/// A TCP port free on 127.0.0.1 right now (bound to port 0, then released).
func probePort() -> Int {
    let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(probe) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A TCP connection to 127.0.0.1 that has been greeted (the server's session exists), to use later.
final class Connected {
    let fd: Int32

    init(port: Int, timeout: Int = 10) throws {
        fd = try loopbackConnection(port: port, timeout: timeout)
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while !got.contains(10) {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            // (deinit closes fd: the object is whole by now.)
            guard n > 0 else { throw POSIXError(.ECONNRESET) }
            got += buf[0..<n]
        }
    }

    deinit { close(fd) }

    /// Sends `text`, then reads until what came contains `marker` (or 10 s pass, or the server
    /// closes); returns what came.
    func say(_ text: String, until marker: String) -> String {
        sendAll(fd, Array(text.utf8))
        var got = ""
        var buf = [UInt8](repeating: 0, count: 4096)
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        while !got.contains(marker) {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            got += String(decoding: buf[..<n], as: UTF8.self)
        }
        return got
    }

    /// Sends `text`, then reads until the server closes (or the timeout).
    func exchange(_ text: String) throws -> String {
        sendAll(fd, Array(text.utf8))
        return String(decoding: readToEnd(fd), as: UTF8.self)
    }
}
