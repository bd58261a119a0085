import CTernSystem
import Glibc
import Reactor
import Synchronization
import Testing

/// Echoes every byte back; counts what it saw.
final class Echo: ConnectionHandler {
    let stats: Stats
    init(_ stats: Stats) { self.stats = stats }
    func connectionActive(_ c: Connection) { stats.active.add(1, ordering: .relaxed) }
    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        stats.received.add(bytes.count, ordering: .relaxed)
        c.write(bytes)
        return bytes.count
    }
    func connectionClosed(_ c: Connection, error: ReactorError?) { stats.closed.add(1, ordering: .relaxed) }
}

final class Stats: Sendable {
    let active = Atomic<Int>(0)
    let received = Atomic<Int>(0)
    let closed = Atomic<Int>(0)
    let timedOut = Atomic<Int>(0)
}

/// A blocking client socket for tests.
struct TestSocket {
    let fd: Int32

    init(port: Int) throws {
        var inProgress: Int32 = 0
        let fd = tern_connect_tcp("127.0.0.1", Int32(port), &inProgress)
        guard fd >= 0 else { throw ReactorError.syscall("connect", errno: -fd) }
        // Back to blocking for simple test I/O.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&pfd, 1, 5000)
        self.fd = fd
    }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until `count` bytes arrived or the timeout passes.
    func receive(_ count: Int, timeoutMS: Int32 = 5000) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, timeoutMS) > 0 else { break }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, count - out.count), 0) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    /// True when the peer closed (EOF) within the timeout.
    func waitForEOF(timeoutMS: Int32 = 5000) -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, timeoutMS) > 0 else { return false }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return true }
        }
    }

    func close() { Glibc.close(fd) }
}

/// A server on `loops` loops whose connections get `handler(stats)`; returns the group (to shut
/// down), the counters and the port.
func server(loops: Int = 1, ringBuffers: Int = 512, _ handler: @escaping @Sendable (Stats) -> ConnectionHandler) throws -> (EventLoopGroup, Stats, Int) {
    let group = try EventLoopGroup(count: loops, ringBuffers: ringBuffers)
    group.start()
    let stats = Stats()
    let port = try group.listen(host: "127.0.0.1", port: 0) { _ in { _ in handler(stats) } }
    return (group, stats, port)
}

/// An echo server on `loops` loops.
func echoServer(loops: Int) throws -> (EventLoopGroup, Stats, Int) { try server(loops: loops) { Echo($0) } }

func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = ReactorSystem.now() + UInt64(seconds * 1e9)
    while ReactorSystem.now() < deadline {
        if condition() { return true }
        usleep(2000)
    }
    return condition()
}

@Suite("Reactor", .serialized)
struct ReactorTests {
    @Test("echo over two loops with SO_REUSEPORT")
    func echo() throws {
        let (group, stats, port) = try echoServer(loops: 2)
        defer { group.shutdown() }
        let s = try TestSocket(port: port)
        defer { s.close() }
        let msg = Array("hello reactor".utf8)
        s.send(msg)
        #expect(s.receive(msg.count) == msg)
    }

    @Test("5,000 concurrent connections are all served")
    func manyConnections() throws {
        ReactorSystem.raiseFileLimit()
        let (group, stats, port) = try echoServer(loops: 2)
        defer { group.shutdown() }
        var sockets: [TestSocket] = []
        for _ in 0..<5000 { sockets.append(try TestSocket(port: port)) }
        #expect(eventually { stats.active.load(ordering: .relaxed) == 5000 })
        for (i, s) in sockets.enumerated() { s.send(Array("c\(i)\n".utf8)) }
        var ok = 0
        for (i, s) in sockets.enumerated() where s.receive(Array("c\(i)\n".utf8).count) == Array("c\(i)\n".utf8) { ok += 1 }
        #expect(ok == 5000)
        let open = try group.onEachLoop { $0.openConnections }
        #expect(open.reduce(0, +) == 5000)
        #expect(open.allSatisfy { $0 > 500 }, "SO_REUSEPORT spreads connections: \(open)")
        for s in sockets { s.close() }
        #expect(eventually { stats.closed.load(ordering: .relaxed) == 5000 })
    }

    @Test("idle timeouts fire on one heap, not one timer each")
    func timeouts() throws {
        final class Idle: ConnectionHandler {
            let stats: Stats
            init(_ s: Stats) { stats = s }
            func connectionActive(_ c: Connection) { c.timeout = 150_000_000 }
            func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
            func connectionTimedOut(_ c: Connection) {
                stats.timedOut.add(1, ordering: .relaxed)
                c.write(Array("bye\r\n".utf8))
                c.close()
            }
            func connectionClosed(_ c: Connection, error: ReactorError?) { stats.closed.add(1, ordering: .relaxed) }
        }
        let (group, stats, port) = try server { Idle($0) }
        defer { group.shutdown() }
        let quiet = try (0..<50).map { _ in try TestSocket(port: port) }
        let chatty = try TestSocket(port: port)
        // Keep one connection busy past the timeout: activity moves its deadline.
        for _ in 0..<6 {
            chatty.send([0x61])
            usleep(50_000)
        }
        #expect(eventually(5) { stats.timedOut.load(ordering: .relaxed) == 50 })
        for q in quiet { #expect(q.receive(5) == Array("bye\r\n".utf8)) }
        #expect(stats.timedOut.load(ordering: .relaxed) == 50, "the busy connection has not timed out yet")
        #expect(chatty.receive(5, timeoutMS: 2000) == Array("bye\r\n".utf8))
        #expect(eventually(5) { stats.closed.load(ordering: .relaxed) == 51 })
    }

    @Test("scheduled callbacks run in deadline order and can be cancelled")
    func scheduled() throws {
        let loop = try EventLoop()
        let order = Mutex<[Int]>([])
        let t = Thread { loop.run() }
        loop.execute {
            loop.schedule(after: 30_000_000) { order.withLock { $0.append(3) } }
            loop.schedule(after: 10_000_000) { order.withLock { $0.append(1) } }
            let id = loop.schedule(after: 20_000_000) { order.withLock { $0.append(99) } }
            loop.schedule(after: 20_000_000) { order.withLock { $0.append(2) } }
            loop.cancel(id)
        }
        #expect(eventually(2) { order.withLock { $0.count } == 3 })
        #expect(order.withLock { $0 } == [1, 2, 3])
        loop.stop()
        t.join()
    }

    @Test("partial writes buffer, backpressure stops reading, and everything arrives")
    func backpressure() throws {
        let (group, stats, port) = try echoServer(loops: 1)
        defer { group.shutdown() }
        let s = try TestSocket(port: port)
        defer { s.close() }
        // Send 8 MB without reading: the echo's socket buffer fills, writes go partial, output
        // buffers up to the high-water mark, then the server stops reading.
        let chunk = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let total = 8 * 1024 * 1024
        let sender = Thread {
            var sent = 0
            while sent < total {
                s.send(chunk)
                sent += chunk.count
            }
        }
        usleep(300_000)
        let receivedWhileBlocked = stats.received.load(ordering: .relaxed)
        #expect(receivedWhileBlocked < total, "server must stop reading while its output does not drain")
        let buffered = try group.onEachLoop { loop in loop.openConnections }
        #expect(buffered == [1])
        // Now drain: every byte comes back, in order.
        var got = 0
        var ok = true
        while got < total {
            let part = s.receive(min(65536, total - got))
            if part.isEmpty { break }
            for (i, b) in part.enumerated() where b != chunk[(got + i) % 65536] {
                ok = false
                break
            }
            got += part.count
        }
        sender.join()
        #expect(got == total)
        #expect(ok)
    }

    @Test("peers that reset while megabytes wait to be sent: closed, nothing left behind, the loop serves on")
    func resetWhileWriting() throws {
        final class Flood: ConnectionHandler {
            let stats: Stats
            init(_ s: Stats) { stats = s }
            func connectionActive(_ c: Connection) {
                stats.active.add(1, ordering: .relaxed)
                let chunk = [UInt8](repeating: 0x61, count: 1 << 20)
                for _ in 0..<8 { c.write(chunk) }
            }
            func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
                c.write(bytes)
                return bytes.count
            }
            func connectionClosed(_ c: Connection, error: ReactorError?) { stats.closed.add(1, ordering: .relaxed) }
        }
        let (group, stats, port) = try server { Flood($0) }
        defer { group.shutdown() }
        for _ in 0..<20 {
            let s = try TestSocket(port: port)
            #expect(s.receive(4096).count == 4096, "the server is sending")
            var hard = linger(l_onoff: 1, l_linger: 0)
            setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
            s.close()  // a reset, with megabytes still queued on the server's side
        }
        #expect(eventually { stats.closed.load(ordering: .relaxed) == 20 })
        #expect(eventually { (try? group.onEachLoop { [$0.openConnections, $0.orphanedOutputs] }) == [[0, 0]] })
        // Still serving; and a loop stopped with a flood in flight shuts down cleanly (defer).
        let s = try TestSocket(port: port)
        defer { s.close() }
        #expect(s.receive(1 << 20).count == 1 << 20)
    }

    @Test("more input than the loop's receive buffers (io_uring: the ring runs dry) all arrives, in order")
    func ringRunsDry() throws {
        let (group, stats, port) = try server(ringBuffers: 2) { Echo($0) }
        defer { group.shutdown() }
        let chunk = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let clients = try (0..<20).map { _ in try TestSocket(port: port) }
        let senders = clients.map { s in Thread { for _ in 0..<4 { s.send(chunk) } } }
        for s in clients {
            let back = s.receive(4 * 65536)
            #expect(back.count == 4 * 65536)
            #expect(back.indices.allSatisfy { back[$0] == chunk[$0 % 65536] }, "in order")
            s.close()
        }
        for t in senders { t.join() }
    }

    @Test("the peer's FIN reaches the handler once, and pending output still drains before the close")
    func halfClose() throws {
        final class Talker: ConnectionHandler {
            let stats: Stats
            init(_ s: Stats) { stats = s }
            func connectionActive(_ c: Connection) { c.write([UInt8](repeating: 0x62, count: 4 << 20)) }
            func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
            func connectionEndOfInput(_ c: Connection) {
                stats.timedOut.add(1, ordering: .relaxed)  // counts ends of input
                c.close()
            }
            func connectionClosed(_ c: Connection, error: ReactorError?) { stats.closed.add(1, ordering: .relaxed) }
        }
        let (group, stats, port) = try server { Talker($0) }
        defer { group.shutdown() }
        let s = try TestSocket(port: port)
        defer { s.close() }
        _ = Glibc.shutdown(s.fd, Int32(SHUT_WR))
        usleep(200_000)  // the FIN is in while 4 MB still wait on the server's side
        #expect(s.receive(4 << 20).count == 4 << 20)
        #expect(s.waitForEOF())
        #expect(eventually { stats.closed.load(ordering: .relaxed) == 1 })
        #expect(stats.timedOut.load(ordering: .relaxed) == 1, "connectionEndOfInput once")
    }

    @Test("shutdown closes every connection and listener")
    func shutdown() throws {
        let (group, stats, port) = try echoServer(loops: 2)
        let sockets = try (0..<20).map { _ in try TestSocket(port: port) }
        #expect(eventually { stats.active.load(ordering: .relaxed) == 20 })
        group.shutdown()
        #expect(stats.closed.load(ordering: .relaxed) == 20)
        for s in sockets {
            #expect(s.waitForEOF())
            s.close()
        }
        var inProgress: Int32 = 0
        let fd = tern_connect_tcp("127.0.0.1", Int32(port), &inProgress)
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&pfd, 1, 1000)
        #expect(tern_socket_error(fd) == ECONNREFUSED)
        Glibc.close(fd)
    }

    @Test("outbound connect, and a refused connect reports its errno")
    func connect() throws {
        final class Client: ConnectionHandler {
            let result = Mutex<String>("")
            func connectionActive(_ c: Connection) { c.write(Array("ping".utf8)) }
            func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
                result.withLock { $0 += String(decoding: bytes, as: UTF8.self) }
                c.close()
                return bytes.count
            }
            func connectionClosed(_ c: Connection, error: ReactorError?) {
                if let error { result.withLock { $0 = "error: \(error)" } }
            }
        }
        let (group, stats, port) = try echoServer(loops: 1)
        defer { group.shutdown() }
        let client = Client()
        let box = UncheckedBox(client)
        _ = try group.onEachLoop { loop in _ = try loop.connect(host: "127.0.0.1", port: port, handler: box.value) }
        #expect(eventually { client.result.withLock { $0 } == "ping" })
        // A port nobody listens on.
        let probe = tern_listen_tcp("127.0.0.1", 0, 0, 1)
        let deadPort = Int(tern_local_port(probe))
        Glibc.close(probe)
        let refused = Client()
        let rbox = UncheckedBox(refused)
        _ = try group.onEachLoop { loop in _ = try loop.connect(host: "127.0.0.1", port: deadPort, handler: rbox.value) }
        #expect(eventually { refused.result.withLock { $0 }.contains("errno \(ECONNREFUSED)") })
    }

    @Test("the loop is a task executor and a serial executor")
    func executors() async throws {
        let loop = try EventLoop()
        let t = Thread { loop.run() }
        defer {
            loop.stop()
            t.join()
        }
        let onLoop = await Task(executorPreference: loop) { loop.inEventLoop }.value
        #expect(onLoop)
        actor Counter {
            let loop: EventLoop
            var n = 0
            init(loop: EventLoop) { self.loop = loop }
            nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
            func bump() -> Bool {
                n += 1
                return loop.inEventLoop
            }
        }
        let c = Counter(loop: loop)
        var all = true
        for _ in 0..<100 { all = await c.bump() && all }
        #expect(all)
        #expect(await c.n == 100)
        #expect(!loop.inEventLoop)
    }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

/// A plain thread for tests.
final class Thread: @unchecked Sendable {
    var tid = pthread_t()
    let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        pthread_create(&tid, nil, { arg in
            let t = Unmanaged<Thread>.fromOpaque(arg!).takeRetainedValue()
            t.body()
            return nil
        }, box.toOpaque())
    }

    func join() { pthread_join(tid, nil) }
}

@Suite("Timer heap")
struct TimerHeapTests {
    @Test("closed connections leave no timer behind")
    func churn() throws {
        final class Timed: ConnectionHandler {
            func connectionActive(_ c: Connection) { c.timeout = 60_000_000_000 }
            func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int { bytes.count }
            func connectionClosed(_ c: Connection, error: ReactorError?) {}
        }
        let group = try EventLoopGroup(count: 1)
        group.start()
        defer { group.shutdown() }
        let port = try group.listen(host: "127.0.0.1", port: 0) { _ in { _ in Timed() } }
        var open: [TestSocket] = []
        for i in 0..<300 {
            let s = try TestSocket(port: port)
            if i % 3 == 0 { open.append(s) } else { s.close() }
        }
        #expect(eventually { (try? group.onEachLoop { $0.openConnections })?.first == 100 })
        #expect(try group.onEachLoop { $0.pendingTimers } == [100])
        for s in open { s.close() }
        #expect(eventually { (try? group.onEachLoop { $0.pendingTimers })?.first == 0 })
    }

    @Test("callbacks fire in deadline order under random scheduling and cancelling")
    func randomOrder() throws {
        let loop = try EventLoop()
        let fired = Mutex<[UInt64]>([])
        let t = Thread { loop.run() }
        defer {
            loop.stop()
            t.join()
        }
        let expected = Mutex<[UInt64]>([])
        loop.execute {
            var seed: UInt64 = 7
            var ids: [(UInt64, UInt64)] = []
            for _ in 0..<500 {
                seed = seed &* 6364136223846793005 &+ 1
                let delay = (seed >> 33) % 50_000_000
                let at = loop.now + delay
                let id = loop.schedule(after: delay) { fired.withLock { $0.append(at) } }
                ids.append((id, at))
            }
            var kept: [UInt64] = []
            for (k, (id, at)) in ids.enumerated() {
                if k % 4 == 0 { loop.cancel(id) } else { kept.append(at) }
            }
            expected.withLock { $0 = kept.sorted() }
        }
        #expect(eventually(3) { fired.withLock { $0.count } == 375 })
        let got = fired.withLock { $0 }
        #expect(got == got.sorted())
        #expect(got == expected.withLock { $0 })
    }
}
