import CTernSystem
import Glibc
import Synchronization

/// A set of event loops, one thread each (one per core by default).
public final class EventLoopGroup: @unchecked Sendable {
    public let loops: [EventLoop]
    let threads = Mutex<[pthread_t]>([])
    let counter = Atomic<Int>(0)

    /// - Parameter count: number of loops; 0 means one per core.
    /// - Parameter ringBuffers: io_uring receive buffers per loop (see `EventLoop.init`).
    public init(count: Int = 0, readBufferSize: Int = 64 * 1024, ringBuffers: Int = 512) throws(ReactorError) {
        let n = count > 0 ? count : Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        var loops: [EventLoop] = []
        for i in 0..<max(n, 1) { loops.append(try EventLoop(index: i, readBufferSize: readBufferSize, ringBuffers: ringBuffers)) }
        self.loops = loops
    }

    /// Starts one thread per loop.
    public func start() {
        var started: [pthread_t] = []
        for loop in loops {
            let box = Unmanaged.passRetained(loop)
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
                loop.run()
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            started.append(tid)
        }
        threads.withLock { $0 = started }
        // Wait until every loop knows its thread, so `inEventLoop` is right from the start.
        for loop in loops {
            while loop.threadID.withLock({ $0 == nil }) { sched_yield() }
        }
    }

    /// The next loop, round robin.
    public func next() -> EventLoop {
        loops[counter.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
    }

    /// Runs `body` on every loop and waits for all of them.
    public func onEachLoop<T: Sendable>(_ body: @escaping @Sendable (EventLoop) throws -> T) throws -> [T] {
        let results = Mutex<[Int: Result<T, any Error>]>([:])
        let done = Atomic<Int>(0)
        for loop in loops {
            loop.execute {
                let r = Result { try body(loop) }
                results.withLock { $0[loop.index] = r }
                done.add(1, ordering: .releasing)
            }
        }
        while done.load(ordering: .acquiring) < loops.count { usleep(200) }
        return try results.withLock { r in try loops.indices.map { try r[$0]!.get() } }
    }

    /// Listens on `host:port` on every loop with SO_REUSEPORT, so the kernel spreads connections.
    /// With port 0 the first loop picks the port and the others bind the same one.
    /// - Returns: the bound port.
    public func listen(
        host: String, port: Int, makeHandler: @escaping @Sendable (EventLoop) -> (Connection) -> ConnectionHandler
    ) throws -> Int {
        let first = try onEachLoop { loop -> Int in
            guard loop.index == 0 else { return 0 }
            return try loop.listen(host: host, port: port, makeHandler: makeHandler(loop)).port
        }[0]
        _ = try onEachLoop { loop -> Int in
            guard loop.index != 0 else { return first }
            return try loop.listen(host: host, port: first, makeHandler: makeHandler(loop)).port
        }
        return first
    }

    /// Stops every loop and joins the threads.
    public func shutdown() {
        for loop in loops { loop.stop() }
        let ts = threads.withLock { t -> [pthread_t] in
            let copy = t
            t = []
            return copy
        }
        for t in ts { pthread_join(t, nil) }
    }
}
