import CTernSystem
import Glibc
import Synchronization

/// One event loop: a thread, a backend (epoll), a timer heap, a shared receive buffer, and a
/// queue of work from other threads (closures and Swift concurrency jobs).
///
/// Everything a loop owns — its connections, listeners, timers — is touched only on the loop's
/// thread. Other threads talk to it through `execute(_:)` and the executor conformances.
public final class EventLoop: @unchecked Sendable {
    enum TokenKind: UInt64 {
        case wakeup = 0, listener = 1, connection = 2, datagram = 3
    }

    @inline(__always)
    static func token(kind: TokenKind, fd: Int32, generation: UInt32) -> UInt64 {
        kind.rawValue << 62 | UInt64(generation & 0x3FFF_FFFF) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    public let backend: IOBackend
    /// The loop runs on io_uring (then `backend` is not used for I/O).
    var usesUring: Bool
    /// The ring: created by `run()` on the loop's thread and destroyed there when it returns (a
    /// ring belongs to the thread that submits to it). Work queued before that waits in
    /// `beforeRing`.
    var uring: Uring?
    var beforeRing: [(Uring) -> Void] = []
    let ringBuffers: Int
    /// io_uring: connections with staged output to send at the end of this turn.
    var sendList: [Connection] = []
    /// io_uring: closed connections whose last send is still in the kernel's hands.
    var orphanedFlights: [UInt64: Connection] = [:]
    /// io_uring: free staging buffers by size class, and their bytes.
    var sendBufferPool: [[UnsafeMutableRawPointer]] = Array(repeating: [], count: Uring.sendBufferSizes)
    var pooledSendBytes = 0
    /// "epoll" or "io_uring".
    public var backendName: String { usesUring ? "io_uring" : backend.name }
    public let index: Int
    let wakeFD: Int32
    let batch: EventBatch
    /// The shared receive buffer.
    let readBuffer: UnsafeMutableRawBufferPointer
    public let readBufferSize: Int

    var connections: [Connection?] = []
    public private(set) var listeners: [Int32: Listener] = [:]
    var datagrams: [Int32: DatagramSocket] = [:]
    var readyList: [Connection] = []
    var readyScratch: [Connection] = []
    var timers = TimerHeap()
    var callbacks: [UInt64: () -> Void] = [:]
    var nextCallbackID: UInt64 = 1
    var nextGeneration: UInt32 = 1
    var running = false
    /// Monotonic time of the current loop turn, in nanoseconds.
    public internal(set) var now: UInt64 = tern_monotonic_ns()

    struct Inbox {
        var closures: [@Sendable () -> Void] = []
        var jobs: [UnownedJob] = []
        var wakePending = false
        var stopping = false
    }
    let inbox = Mutex(Inbox())
    var drainedClosures: [@Sendable () -> Void] = []
    var drainedJobs: [UnownedJob] = []

    let threadID = Mutex<pthread_t?>(nil)
    var loopThread: pthread_t? = nil

    /// Connections open on this loop (loop thread only).
    public var openConnections: Int { openCount }
    /// Output buffers of closed connections the kernel still reads from (io_uring; loop thread
    /// only): zero once their sends have completed or been cancelled.
    public var orphanedOutputs: Int { orphanedFlights.count }
    var openCount = 0

    /// - Parameters:
    ///   - index: the loop's number within its group.
    ///   - readBufferSize: size of the shared receive buffer.
    ///   - ioUring: run on io_uring (default: what `IOBackendChoice` decided for the process).
    ///   - ringBuffers: io_uring: the receive buffers (8 KiB each) the loop provides to the kernel,
    ///     a power of two.
    public init(index: Int = 0, backend: IOBackend? = nil, readBufferSize: Int = 64 * 1024, ioUring: Bool? = nil, ringBuffers: Int = 512) throws(ReactorError) {
        precondition(ringBuffers > 0 && ringBuffers & (ringBuffers - 1) == 0, "ringBuffers must be a power of two")
        self.ringBuffers = ringBuffers
        self.index = index
        if let backend {
            self.backend = backend
        } else {
            self.backend = try EpollBackend()
        }
        usesUring = backend == nil && (ioUring ?? IOBackendChoice.usesUring)
        self.readBufferSize = readBufferSize
        readBuffer = .allocate(byteCount: readBufferSize, alignment: 64)
        batch = EventBatch(capacity: 256)
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw .last("eventfd") }
        if usesUring {
            uringPollInput(fd: wakeFD, token: Self.token(kind: .wakeup, fd: wakeFD, generation: 0))
        } else {
            try self.backend.registerReadOnly(fd: wakeFD, token: Self.token(kind: .wakeup, fd: wakeFD, generation: 0))
        }
    }

    deinit {
        readBuffer.deallocate()
        Sys.close(wakeFD)
        backend.close()
    }

    /// True when called on this loop's thread.
    public var inEventLoop: Bool {
        guard let t = loopThread else { return threadID.withLock { $0.map { pthread_equal($0, pthread_self()) != 0 } ?? false } }
        return pthread_equal(t, pthread_self()) != 0
    }

    // MARK: Cross-thread work

    /// Runs `work` on the loop's thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let wake = inbox.withLock { box -> Bool in
            box.closures.append(work)
            if box.wakePending { return false }
            box.wakePending = true
            return true
        }
        if wake { wakeup() }
    }

    func enqueueJob(_ job: UnownedJob) {
        let wake = inbox.withLock { box -> Bool in
            box.jobs.append(job)
            if box.wakePending { return false }
            box.wakePending = true
            return true
        }
        if wake { wakeup() }
    }

    func wakeup() {
        var one: UInt64 = 1
        _ = CTernSystem.write(wakeFD, &one, 8)
    }

    /// Asks the loop to stop; `run()` returns after closing every connection and listener.
    public func stop() {
        inbox.withLock { $0.stopping = true }
        wakeup()
    }

    // MARK: Timers

    /// Runs `body` on the loop after `delay` nanoseconds. Loop thread only.
    @discardableResult
    public func schedule(after delay: UInt64, _ body: @escaping () -> Void) -> UInt64 {
        let id = nextCallbackID
        nextCallbackID += 1
        callbacks[id] = body
        timers.push(TimerEntry(deadline: now &+ delay, seq: 0, connection: nil, generation: 0, callbackID: id))
        return id
    }

    /// Cancels a scheduled callback.
    public func cancel(_ id: UInt64) { callbacks[id] = nil }

    func armTimer(_ c: Connection) {
        c.armedDeadline = c.deadline
        timers.push(TimerEntry(deadline: c.deadline, seq: 0, connection: c, generation: c.generation, callbackID: 0))
    }

    /// Entries in the timer heap (for tests: closed connections must leave none behind).
    public var pendingTimers: Int { timers.count }

    func fireTimers() {
        while let e = timers.popDue(now) {
            if let c = e.connection {
                guard !c.isClosed, c.generation == e.generation, e.deadline == c.armedDeadline else { continue }
                if c.timeout == 0 && c.movesDeadlineOnRead {
                    c.timerArmed = false
                } else if c.deadline > now {
                    armTimer(c)
                } else {
                    c.timerArmed = false
                    c.deadline = .max
                    if let h = c.handler { h.connectionTimedOut(c) } else { c.close() }
                }
            } else if let body = callbacks.removeValue(forKey: e.callbackID) {
                body()
            }
        }
    }

    // MARK: Registration

    func adopt(fd: Int32, connecting: Bool) throws(ReactorError) -> Connection {
        nextGeneration = nextGeneration &+ 1
        let c = Connection(fd: fd, loop: self, generation: nextGeneration)
        c.connecting = connecting
        let i = Int(fd)
        if i >= connections.count {
            connections.append(contentsOf: repeatElement(nil, count: max(i + 1 - connections.count, connections.count)))
        }
        if usesUring {
            // Completions carry the fd in 24 bits of their user data.
            guard fd < 1 << 24 else { throw .syscall("io_uring: descriptor number too large", errno: EMFILE) }
            if connecting { uringWantWritable(c) } else { uringRecv(c) }
        } else {
            try backend.register(fd: fd, token: c.token)
        }
        connections[i] = c
        openCount += 1
        return c
    }

    func remove(_ c: Connection) {
        if c.heapIndex >= 0 { timers.remove(at: c.heapIndex) }
        c.timerArmed = false
        if usesUring { uringCancel(c.token, sends: true) } else { backend.deregister(fd: c.fd) }
        if Int(c.fd) < connections.count, connections[Int(c.fd)] === c { connections[Int(c.fd)] = nil }
        Sys.close(c.fd)
        openCount -= 1
    }

    /// The open connection an event or completion is for: its descriptor's connection, if the
    /// generation in `token` is that one's (a late event for a closed connection whose descriptor
    /// number was reused finds nothing).
    @inline(__always)
    func connection(fd: Int32, token: UInt64) -> Connection? {
        guard Int(fd) < connections.count, let c = connections[Int(fd)], !c.isClosed,
            c.generation & 0x3FFF_FFFF == UInt32((token >> 32) & 0x3FFF_FFFF)
        else { return nil }
        return c
    }

    func markReady(_ c: Connection) {
        guard !c.onReadyList, !c.isClosed else { return }
        c.onReadyList = true
        readyList.append(c)
    }

    /// Adopts a connected stream socket made elsewhere (one end of a socketpair, a descriptor
    /// another process handed over): made non-blocking and close-on-exec, then served like an
    /// accepted connection. Loop thread only.
    @discardableResult
    public func adopt(fd: Int32, handler: ConnectionHandler) throws(ReactorError) -> Connection {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            throw .syscall("fcntl", errno: errno)
        }
        let c = try adopt(fd: fd, connecting: false)
        c.handler = handler
        handler.connectionActive(c)
        return c
    }

    /// Opens an outbound TCP connection to a numeric address. Loop thread only.
    @discardableResult
    public func connect(host: String, port: Int, handler: ConnectionHandler) throws(ReactorError) -> Connection {
        var inProgress: Int32 = 0
        let fd = tern_connect_tcp(host, Int32(port), &inProgress)
        guard fd >= 0 else { throw .syscall("connect", errno: -fd) }
        let c = try adopt(fd: fd, connecting: inProgress != 0)
        c.handler = handler
        if inProgress == 0 { handler.connectionActive(c) }
        return c
    }

    /// Listens on `host:port` and hands each accepted connection to `makeHandler`. Loop thread only.
    @discardableResult
    public func listen(
        host: String, port: Int, reusePort: Bool = true, backlog: Int = 4096,
        makeHandler: @escaping (Connection) -> ConnectionHandler
    ) throws(ReactorError) -> Listener {
        let fd = tern_listen_tcp(host, Int32(port), reusePort ? 1 : 0, Int32(backlog))
        guard fd >= 0 else { throw .syscall("listen \(host):\(port)", errno: -fd) }
        return try listen(fd: fd, makeHandler: makeHandler)
    }

    @discardableResult
    /// Accepts on `fd`, a listening socket made elsewhere (ternd's parent binds them and hands
    /// them to its smtp process); the loop owns it from now on. Loop thread only.
    public func listen(fd: Int32, makeHandler: @escaping (Connection) -> ConnectionHandler) throws(ReactorError) -> Listener {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let l = Listener(fd: fd, port: Int(tern_local_port(fd)), makeHandler: makeHandler)
        listeners[fd] = l
        if usesUring {
            uringAccept(l)
        } else {
            do {
                try backend.registerReadOnly(fd: fd, token: Self.token(kind: .listener, fd: fd, generation: 0))
            } catch {
                listeners[fd] = nil
                Sys.close(fd)
                throw error
            }
        }
        return l
    }

    /// Stops listening (connections already accepted stay).
    public func close(_ listener: Listener) {
        guard listeners.removeValue(forKey: listener.fd) != nil else { return }
        if usesUring { uringCloseListener(fd: listener.fd) } else { backend.deregister(fd: listener.fd) }
        Sys.close(listener.fd)
    }

    // MARK: The loop

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        loopThread = pthread_self()
        threadID.withLock { $0 = pthread_self() }
        running = true
        if usesUring {
            do {
                let u = try Uring(buffers: ringBuffers)
                uring = u
                for work in beforeRing { work(u) }
                beforeRing = []
                runUring(u)
                uring = nil
                return
            } catch {
                // Probed at start, so rare (out of memory, a limit): this loop runs on epoll.
                ReactorSystem.log("event loop \(index): \(error); this loop runs on epoll")
                usesUring = false
                beforeRing = []
                try? backend.registerReadOnly(fd: wakeFD, token: Self.token(kind: .wakeup, fd: wakeFD, generation: 0))
            }
        }
        while running {
            let timeout: Int32
            if !readyList.isEmpty || !drainedClosures.isEmpty {
                timeout = 0
            } else if let next = timers.next {
                let ms = next > now ? (next - now + 999_999) / 1_000_000 : 0
                timeout = Int32(min(ms, 60_000))
            } else {
                timeout = 60_000
            }
            let n: Int
            do {
                n = try backend.wait(batch, timeoutMS: timeout)
            } catch {
                fatalError("event loop \(index): \(error)")
            }
            now = tern_monotonic_ns()
            for k in 0..<n { dispatch(batch.tokens[k], backend.decode(batch.events[k])) }
            processReadyList()
            fireTimers()
            runInbox()
        }
        shutdownAll()
    }

    func dispatch(_ token: UInt64, _ ev: IOEvents) {
        let kind = token >> 62
        let fd = Int32(truncatingIfNeeded: token & 0xFFFF_FFFF)
        switch kind {
        case TokenKind.connection.rawValue:
            guard let c = connection(fd: fd, token: token) else { return }
            if ev.contains(.error) || ev.contains(.hangup) { c.hangupSeen = true }
            if c.connecting {
                guard ev.contains(.writable) || ev.contains(.error) || ev.contains(.hangup) else { return }
                let err = tern_socket_error(fd)
                if err != 0 {
                    c.fail(.syscall("connect", errno: err))
                    return
                }
                c.connecting = false
                c.handler?.connectionActive(c)
                if c.isClosed { return }
            }
            if ev.contains(.writable), c.bufferedOutput > 0 { c.flush() }
            if ev.contains(.readable) || ev.contains(.hangup) || ev.contains(.error) { readFrom(c) }
        case TokenKind.listener.rawValue:
            if let l = listeners[fd] { acceptAll(l) }
        case TokenKind.datagram.rawValue:
            if let s = datagrams[fd] { receiveAll(s) }
        default:
            var v: UInt64 = 0
            _ = CTernSystem.read(wakeFD, &v, 8)
        }
    }

    /// An accept refused for want of descriptors (or memory): a log line at once, then at most
    /// one a minute with the count, so the operator sees it without a flood.
    func noteShortage(_ l: Listener, errno e: Int32) {
        l.shortages += 1
        let now = ReactorSystem.now()
        guard l.shortageLogged == 0 || now - l.shortageLogged >= 60_000_000_000 else { return }
        let why = e == EMFILE ? "out of file descriptors (the process limit)" : e == ENFILE ? "out of file descriptors (the system limit)" : "out of memory"
        ReactorSystem.log("accept on port \(l.port): \(why): \(String(cString: strerror(e))); connections wait in the listen backlog (\(l.shortages) time(s) since the last line)")
        l.shortages = 0
        l.shortageLogged = now
    }

    func acceptAll(_ l: Listener) {
        while true {
            let fd = tern_accept(l.fd)
            if fd < 0 {
                let e = errno
                if e == EINTR || e == ECONNABORTED { continue }
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    // Out of descriptors: try again shortly rather than spin (ET will not re-fire).
                    l.acceptErrors += 1
                    noteShortage(l, errno: e)
                    schedule(after: 100_000_000) { [weak self, l] in
                        guard let self, self.listeners[l.fd] === l else { return }
                        self.acceptAll(l)
                    }
                }
                return
            }
            _ = tern_set_nodelay(fd)
            let c: Connection
            do {
                c = try adopt(fd: fd, connecting: false)
            } catch {
                Sys.close(fd)
                continue
            }
            l.accepted += 1
            let h = l.makeHandler(c)
            c.handler = h
            h.connectionActive(c)
        }
    }

    /// Copies a connection's unconsumed bytes to the front of the receive buffer; returns how many.
    @inline(__always)
    func stagePending(_ c: Connection) -> Int {
        let left = c.pendingInput.count
        if left > 0 {
            let base = readBuffer.baseAddress!
            c.pendingInput.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: left) }
        }
        return left
    }

    /// Offers the first `total` bytes of the receive buffer to the handler and keeps what it leaves
    /// unconsumed. Returns false when the connection closed (or overflowed its buffer).
    func offer(_ c: Connection, total: Int) -> Bool {
        offer(c, bytes: UnsafeRawBufferPointer(start: readBuffer.baseAddress!, count: total))
    }

    /// Offers `bytes` (the receive buffer, or an io_uring provided buffer) to the handler and keeps
    /// what it leaves unconsumed.
    func offer(_ c: Connection, bytes: UnsafeRawBufferPointer) -> Bool {
        let total = bytes.count
        let consumed = c.handler?.connectionReceived(c, bytes) ?? total
        if c.isClosed { return false }
        let rest = total - consumed
        if rest == 0 {
            // Idle again: an idle connection holds no input buffer.
            if !c.pendingInput.isEmpty { c.pendingInput.removeAll() }
            return true
        }
        if rest >= readBufferSize, !c.readingPaused {
            c.fail(.inputOverflow)
            return false
        }
        c.pendingInput.removeAll(keepingCapacity: true)
        c.pendingInput.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
        return true
    }

    /// Reads until the socket is drained (edge-triggered), at most a few buffers per turn so one
    /// busy connection cannot starve the others; then it goes on the ready list.
    func readFrom(_ c: Connection) {
        var reads = 0
        let base = readBuffer.baseAddress!
        while !c.isClosed, !c.readingPaused, !c.outputBlocked {
            let left = stagePending(c)
            let want = readBufferSize - left
            let n = Sys.read(c.fd, base + left, want)
            if n == -Int(EAGAIN) { return }
            if n < 0 {
                c.fail(n == -Int(ECONNRESET) ? .connectionReset : .syscall("read", errno: Int32(-n)))
                return
            }
            if n == 0 {
                c.pendingInput.removeAll()
                c.inputEnded = true
                if let h = c.handler { h.connectionEndOfInput(c) } else { c.close() }
                return
            }
            if c.movesDeadlineOnRead { c.touch() }
            guard offer(c, total: left + n) else { return }
            if n < want, !c.hangupSeen { return }
            reads += 1
            if reads >= 4 {
                markReady(c)
                return
            }
        }
    }

    /// Offers buffered input to a handler that resumed reading (before the socket is read again).
    func replayPending(_ c: Connection) {
        guard !c.pendingInput.isEmpty, c.handler != nil else { return }
        _ = offer(c, total: stagePending(c))
    }

    func processReadyList() {
        guard !readyList.isEmpty else { return }
        swap(&readyList, &readyScratch)
        for c in readyScratch {
            c.onReadyList = false
            guard !c.isClosed, !c.readingPaused, !c.outputBlocked else { continue }
            if usesUring {
                uringResume(c)
                continue
            }
            replayPending(c)
            if !c.isClosed, !c.readingPaused, !c.outputBlocked { readFrom(c) }
        }
        readyScratch.removeAll(keepingCapacity: true)
    }

    func runInbox() {
        let stopping = inbox.withLock { box -> Bool in
            if !box.closures.isEmpty { swap(&box.closures, &drainedClosures) }
            if !box.jobs.isEmpty { swap(&box.jobs, &drainedJobs) }
            box.wakePending = false
            return box.stopping
        }
        if !drainedClosures.isEmpty {
            for work in drainedClosures { work() }
            drainedClosures.removeAll(keepingCapacity: true)
        }
        if !drainedJobs.isEmpty {
            let serial = asUnownedSerialExecutor()
            let task = asUnownedTaskExecutor()
            for job in drainedJobs { job.runSynchronously(isolatedTo: serial, taskExecutor: task) }
            drainedJobs.removeAll(keepingCapacity: true)
        }
        if stopping { running = false }
    }

    func shutdownAll() {
        for fd in Array(listeners.keys) {
            if usesUring { uringCloseListener(fd: fd) } else { backend.deregister(fd: fd) }
            Sys.close(fd)
        }
        listeners.removeAll()
        for s in Array(datagrams.values) { s.close() }
        for c in connections.compactMap({ $0 }) { c.closeNow(error: .shutdown) }
        timers.removeAll()
        callbacks.removeAll()
        // Run what is left so no continuation is stranded.
        runInbox()
    }
}

/// A listening socket of one loop.
public final class Listener {
    public let fd: Int32
    /// The bound port (useful with port 0).
    public let port: Int
    let makeHandler: (Connection) -> ConnectionHandler
    public internal(set) var accepted = 0
    public internal(set) var acceptErrors = 0
    /// Accepts refused for want of descriptors or memory since the last log line about it, and
    /// when that line was written (one a minute at most).
    var shortages = 0
    var shortageLogged: UInt64 = 0

    init(fd: Int32, port: Int, makeHandler: @escaping (Connection) -> ConnectionHandler) {
        self.fd = fd
        self.port = port
        self.makeHandler = makeHandler
    }
}
