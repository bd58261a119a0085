// The io_uring backend: completions instead of readiness. Receives are multishot into a ring of
// provided buffers shared by the loop's connections (an idle connection holds none), accepts are
// multishot, writability, connects, datagram sockets and the wake-up eventfd are polls; one
// io_uring_enter per loop turn submits everything queued and waits. Sends stay direct `send`
// calls (most complete at once); a send the kernel cannot take arms a poll for writability.
import CTernSystem
import Glibc
import Synchronization

/// Which I/O backend the loops use: `io-backend auto|epoll|io_uring` in the configuration,
/// `--io-backend` on ternd and ternbench, `TERN_IO_BACKEND` in the environment (tests).
public enum IOBackendKind: String, Sendable, CaseIterable {
    case auto
    case epoll
    case ioUring = "io_uring"
}

public enum IOBackendChoice {
    static let chosen = Mutex<(kind: IOBackendKind, useUring: Bool)?>(nil)

    /// Decides once per process and remembers it for the loops created afterwards: io_uring when
    /// asked for (or `auto`) and the kernel lets us set up a ring with what we use; epoll
    /// otherwise. Returns the decision and one line saying which, and why when io_uring was
    /// wanted and is not usable.
    @discardableResult
    public static func select(_ kind: IOBackendKind) -> (useUring: Bool, note: String) {
        let d = decide(kind, environment: ReactorSystem.environment(["TERN_IO_BACKEND", "TERN_IO_URING_REFUSE"]))
        chosen.withLock { $0 = (kind, d.useUring) }
        return d
    }

    /// The decision without side effects. `TERN_IO_BACKEND` (tests) replaces `auto`;
    /// `TERN_IO_URING_REFUSE=REASON` makes the probe fail as if the kernel had refused.
    public static func decide(_ kind: IOBackendKind, environment: [String: String]) -> (useUring: Bool, note: String) {
        var kind = kind
        if kind == .auto, let env = environment["TERN_IO_BACKEND"], let k = IOBackendKind(rawValue: env) { kind = k }
        if kind == .epoll { return (false, "io backend: epoll") }
        if let refusal = probe(refuse: environment["TERN_IO_URING_REFUSE"]) {
            let asked = kind == .ioUring ? "io_uring was asked for but " : "io_uring "
            return (false, "io backend: epoll, because \(asked)is not usable here: \(refusal)")
        }
        return (true, "io backend: io_uring (multishot receive into provided buffers, multishot accept)")
    }

    /// Whether new loops use io_uring (`select` decides; until then `TERN_IO_BACKEND`, else epoll).
    public static var usesUring: Bool {
        if let c = chosen.withLock({ $0 }) { return c.useUring }
        if getenv("TERN_IO_BACKEND") != nil { return select(.auto).useUring }
        return false
    }

    /// Why io_uring cannot be used, or nil.
    static func probe(refuse: String?) -> String? {
        if let refuse { return refuse + " (TERN_IO_URING_REFUSE)" }
        if let text = ReactorSystem.readText("/proc/sys/kernel/io_uring_disabled"), let v = Int(text.filter(\.isNumber)), v == 2 {
            return "kernel.io_uring_disabled = 2"
        }
        // A ring of our own on a thread of its own, gone with it: the caller's thread keeps no
        // io_uring state.
        final class Box: @unchecked Sendable { var result: String? = nil }
        let box = Box()
        let ctx = Unmanaged.passRetained(box).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            var err: Int32 = 0
            var why: UnsafePointer<CChar>? = nil
            if let u = tern_uring_create(8, 8, 4096, &err, &why) {
                tern_uring_destroy(u)
            } else {
                box.result = "\(why.map { String(cString: $0) } ?? "io_uring_setup failed") (\(String(cString: strerror(-err))))"
            }
            return nil
        }, ctx)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(ctx).release()
            return "cannot start a thread to probe io_uring (\(String(cString: strerror(rc))))"
        }
        pthread_join(tid, nil)
        return box.result
    }
}

/// One loop's ring (loop thread only).
final class Uring {
    let ring: OpaquePointer
    let bufferSize: Int
    static let batch = 256
    let uds = UnsafeMutablePointer<UInt64>.allocate(capacity: Uring.batch)
    let results = UnsafeMutablePointer<Int32>.allocate(capacity: Uring.batch)
    let flags = UnsafeMutablePointer<UInt32>.allocate(capacity: Uring.batch)

    /// Operation kinds in bits 24–31 of a request's user data (the low 24 bits are the fd).
    enum Op: UInt64 {
        case primary = 0  // receive, accept, poll for input
        case writable = 1  // poll for output (an outbound connect)
        case cancel = 2
        case send = 3
    }

    /// Staging buffers come in power-of-two sizes from 4 KiB to 4 MiB, pooled per loop by size
    /// (at most `poolPerSize` of each and `poolBytes` in all): fresh pages for every large write
    /// cost more in page faults than the copy itself.
    static let smallestSendBuffer = 4096
    static let sendBufferSizes = 11
    static let poolPerSize = 128
    static let poolBytes = 32 << 20
    /// Completion batching: after a turn with at least 2 × `batchAbove` completions, the next wait
    /// asks for half as many (at most 64) and gives up after `batchWait` ns.
    static let batchAbove = 4
    static let batchWait: Int64 = 50_000
    /// Writes of at least this many bytes with nothing queued before them are sent directly
    /// (unless zero-copy sends are asked for at their size).
    static let directSendMinimum = 16 * 1024
    /// Input kept for a paused connection before its receive is held (the rest waits in the
    /// kernel).
    static let pausedHold = 16 * 1024
    /// Sends of at least this many bytes go out with IORING_OP_SEND_ZC (`TERN_SEND_ZC_MIN`;
    /// default off: on loopback the kernel copies anyway, see docs/io-backends.md).
    static let zeroCopyMinimum: Int = {
        if let v = getenv("TERN_SEND_ZC_MIN"), let n = Int(String(cString: v)), n > 0 { return n }
        return .max
    }()

    init(buffers: Int = 512, bufferSize: Int = 8192) throws(ReactorError) {
        var err: Int32 = 0
        var why: UnsafePointer<CChar>? = nil
        guard let r = tern_uring_create(4096, UInt32(buffers), UInt32(bufferSize), &err, &why) else {
            throw .syscall("io_uring: \(why.map { String(cString: $0) } ?? "setup")", errno: -err)
        }
        ring = r
        self.bufferSize = bufferSize
    }

    deinit {
        tern_uring_destroy(ring)
        uds.deallocate()
        results.deallocate()
        flags.deallocate()
    }

    @inline(__always)
    static func ud(_ token: UInt64, _ op: Op) -> UInt64 { token | op.rawValue << 24 }
}

extension EventLoop {
    // MARK: Registration on the ring

    /// Runs `body` with the ring, or once `run()` has created it.
    @inline(__always)
    func withRing(_ body: @escaping (Uring) -> Void) {
        if let u = uring { body(u) } else { beforeRing.append(body) }
    }

    func uringRecv(_ c: Connection) {
        guard let u = uring else { return withRing { [weak self, c] _ in self?.uringRecv(c) } }
        // After the peer's FIN there is nothing more to receive (a receive would report it again).
        guard !c.isClosed, !c.inputEnded else { return }
        c.receiveArmed = true
        _ = tern_uring_recv_multishot(u.ring, c.fd, Uring.ud(c.token, .primary))
    }

    func uringWantWritable(_ c: Connection) {
        guard let u = uring else { return withRing { [weak self, c] _ in self?.uringWantWritable(c) } }
        guard !c.writeArmed, !c.isClosed else { return }
        c.writeArmed = true
        _ = tern_uring_poll(u.ring, c.fd, UInt32(POLLOUT), 0, Uring.ud(c.token, .writable))
    }

    func uringCancel(_ token: UInt64, sends: Bool = false) {
        guard let u = uring else { return }  // nothing was submitted yet
        _ = tern_uring_cancel(u.ring, Uring.ud(token, .primary), Uring.ud(token, .cancel))
        _ = tern_uring_cancel(u.ring, Uring.ud(token, .writable), Uring.ud(token, .cancel))
        if sends { _ = tern_uring_cancel(u.ring, Uring.ud(token, .send), Uring.ud(token, .cancel)) }
    }

    // MARK: Output through the ring

    /// Copies `bytes` behind what the connection already staged; the loop sends it this turn.
    /// A large write with nothing ahead of it is sent at once instead, as epoll would: one system
    /// call costs less than copying it (only what the socket does not take is staged).
    func uringStage(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        var bytes = bytes
        if bytes.count >= Uring.directSendMinimum, bytes.count < Uring.zeroCopyMinimum, c.staging == nil, c.flight == nil, !c.connecting {
            guard let rest = c.sendNow(bytes), !rest.isEmpty else { return }
            bytes = rest
        }
        let n = bytes.count
        if c.staging == nil {
            (c.staging, c.stagingCapacity) = takeSendBuffer(atLeast: n)
            c.stagingCount = 0
        } else if c.stagingCount + n > c.stagingCapacity {
            // Doubling, also past the largest pooled size: a stream of small writes stays linear.
            let (bigger, capacity) = takeSendBuffer(atLeast: max(c.stagingCapacity * 2, c.stagingCount + n))
            memcpy(bigger, c.staging!, c.stagingCount)
            releaseSendBuffer(c.staging!, c.stagingCapacity)
            c.staging = bigger
            c.stagingCapacity = capacity
        }
        memcpy(c.staging! + c.stagingCount, bytes.baseAddress!, n)
        c.stagingCount += n
        queueSend(c)
    }

    @inline(__always)
    func queueSend(_ c: Connection) {
        guard !c.sendQueued, c.flight == nil, !c.connecting else { return }
        c.sendQueued = true
        sendList.append(c)
    }

    /// The size class of a capacity (0: 4 KiB), or nil beyond the largest.
    @inline(__always)
    static func sendBufferClass(_ capacity: Int) -> Int? {
        let k = Int.bitWidth - (capacity - 1).leadingZeroBitCount - 12
        return k < Uring.sendBufferSizes ? max(k, 0) : nil
    }

    func takeSendBuffer(atLeast n: Int) -> (UnsafeMutableRawPointer, Int) {
        guard let k = Self.sendBufferClass(max(n, Uring.smallestSendBuffer)) else { return (malloc(n)!, n) }
        let capacity = Uring.smallestSendBuffer << k
        if let p = sendBufferPool[k].popLast() {
            pooledSendBytes -= capacity
            return (p, capacity)
        }
        return (malloc(capacity)!, capacity)
    }

    func releaseSendBuffer(_ p: UnsafeMutableRawPointer, _ capacity: Int) {
        if let k = Self.sendBufferClass(capacity), Uring.smallestSendBuffer << k == capacity,
            sendBufferPool[k].count < Uring.poolPerSize, pooledSendBytes + capacity <= Uring.poolBytes
        {
            sendBufferPool[k].append(p)
            pooledSendBytes += capacity
        } else {
            free(p)
        }
    }

    /// Sends what connections staged this turn (called before each io_uring_enter).
    func submitSends(_ u: Uring) {
        guard !sendList.isEmpty else { return }
        for c in sendList {
            c.sendQueued = false
            guard !c.isClosed, !c.connecting, c.flight == nil, c.stagingCount > 0 else { continue }
            c.flight = c.staging
            c.flightCount = c.stagingCount
            c.flightCapacity = c.stagingCapacity
            c.flightHead = 0
            c.staging = nil
            c.stagingCount = 0
            c.stagingCapacity = 0
            submitFlight(u, c)
        }
        sendList.removeAll(keepingCapacity: true)
    }

    func submitFlight(_ u: Uring, _ c: Connection) {
        let left = c.flightCount - c.flightHead
        let zc = left >= Uring.zeroCopyMinimum
        c.sendOutstanding = true
        _ = tern_uring_send(u.ring, c.fd, c.flight! + c.flightHead, UInt32(min(left, 1 << 30)), zc ? 1 : 0, Uring.ud(c.token, .send))
    }

    /// A send (or a zero-copy notification) completed.
    func sent(_ u: Uring, _ c: Connection, _ res: Int32, _ flags: UInt32) {
        if flags & UInt32(IORING_CQE_F_NOTIF) != 0 {
            c.flightNotifications -= 1
        } else {
            c.sendOutstanding = false
            if flags & UInt32(IORING_CQE_F_MORE) != 0 { c.flightNotifications += 1 }
            if !c.isClosed {
                if res == -EAGAIN || res == -EINTR {
                    return submitFlight(u, c)
                } else if res < 0 {
                    // Closing orphans the flight until its notifications are in.
                    c.fail(.syscall("send", errno: -res))
                } else {
                    c.flightHead += Int(res)
                    c.bytesSent &+= UInt64(res)
                    if c.flightHead < c.flightCount { return submitFlight(u, c) }
                }
            }
        }
        guard !c.sendOutstanding, c.flightNotifications == 0, c.isClosed || c.flightHead >= c.flightCount, let buffer = c.flight else { return }
        releaseSendBuffer(buffer, c.flightCapacity)
        c.flight = nil
        c.flightCount = 0
        c.flightHead = 0
        c.flightCapacity = 0
        if c.isClosed {
            orphanedFlights[c.token] = nil
            return
        }
        // Input held back while output was above the high-water mark may be read again.
        if c.receiveHeld || !c.pendingInput.isEmpty, !c.outputBlocked { markReady(c) }
        if c.stagingCount > 0 { return queueSend(c) }
        if c.closeAfterFlush { return c.closeNow(error: nil) }
        c.handler?.connectionWritable(c)
    }

    /// A connection closes: staged output goes, a flight stays until the kernel is done with it.
    func uringReleaseOutput(_ c: Connection) {
        if let s = c.staging {
            releaseSendBuffer(s, c.stagingCapacity)
            c.staging = nil
            c.stagingCount = 0
            c.stagingCapacity = 0
        }
        if c.flight != nil {
            if c.sendOutstanding || c.flightNotifications > 0 {
                orphanedFlights[c.token] = c
            } else {
                releaseSendBuffer(c.flight!, c.flightCapacity)
                c.flight = nil
            }
        }
    }

    func uringPollInput(fd: Int32, token: UInt64) {
        guard let u = uring else { return withRing { [weak self] _ in self?.uringPollInput(fd: fd, token: token) } }
        _ = tern_uring_poll(u.ring, fd, UInt32(POLLIN), 1, Uring.ud(token, .primary))
    }

    /// Stops a listener at once: its multishot accept holds the socket open until the
    /// cancellation runs, and a socket still listening would take connections meant for a new
    /// listener that the kernel may give the same port (SO_REUSEPORT).
    func uringCloseListener(fd: Int32) {
        // Cancelled, never shut down: the listening socket is shared with ternd's parent and with
        // the smtp process that replaces this one on a reload, and shutdown() would stop it
        // listening for them too.
        uringCancel(Self.token(kind: .listener, fd: fd, generation: 0))
    }

    func uringAccept(_ l: Listener) {
        guard let u = uring else { return withRing { [weak self, l] _ in self?.uringAccept(l) } }
        _ = tern_uring_accept_multishot(u.ring, l.fd, Uring.ud(Self.token(kind: .listener, fd: l.fd, generation: 0), .primary))
    }

    // MARK: The loop

    func runUring(_ u: Uring) {
        var harvested = 0
        while running {
            var timeout: Int64
            if !readyList.isEmpty || !drainedClosures.isEmpty {
                timeout = 0
            } else if let next = timers.next {
                timeout = next > now ? Int64(min(next - now, 60_000_000_000)) : 0
            } else {
                timeout = 60_000_000_000
            }
            // Busy (many completions last turn): wait for a few more at once, briefly, so one turn
            // serves many connections; idle: wake on the first.
            var waitFor: UInt32 = 1
            if harvested >= 2 * Uring.batchAbove, timeout != 0 {
                waitFor = UInt32(min(harvested / 2, 64))
                timeout = min(timeout, Uring.batchWait)
            }
            submitSends(u)
            let rc = tern_uring_wait(u.ring, timeout, waitFor)
            if rc < 0 { fatalError("event loop \(index): io_uring_enter: \(String(cString: strerror(-rc)))") }
            now = tern_monotonic_ns()
            harvested = harvest(u)
            processReadyList()
            fireTimers()
            runInbox()
        }
        shutdownAll()
        // Cancellations go out, and sends still in the kernel's hands finish, before the ring is
        // torn down (by the caller, on this thread) with the buffers they read.
        var waits = 0
        repeat {
            _ = tern_uring_wait(u.ring, orphanedFlights.isEmpty ? 0 : 10_000_000, 1)
            harvest(u)
            waits += 1
        } while !orphanedFlights.isEmpty && waits < 100
        for p in sendBufferPool.joined() { free(p) }
        sendBufferPool = Array(repeating: [], count: Uring.sendBufferSizes)
        pooledSendBytes = 0
    }

    /// Handles every completion waiting in the ring; returns how many there were.
    @discardableResult
    func harvest(_ u: Uring) -> Int {
        var total = 0
        while true {
            let n = Int(tern_uring_harvest(u.ring, u.uds, u.results, u.flags, UInt32(Uring.batch)))
            for k in 0..<n { complete(u, u.uds[k], u.results[k], u.flags[k]) }
            total += n
            if n < Uring.batch { return total }
        }
    }

    func complete(_ u: Uring, _ ud: UInt64, _ res: Int32, _ flags: UInt32) {
        let hasBuffer = flags & UInt32(IORING_CQE_F_BUFFER) != 0
        let bid = flags >> 16
        let more = flags & UInt32(IORING_CQE_F_MORE) != 0
        defer { if hasBuffer { tern_uring_recycle(u.ring, bid) } }
        let op = (ud >> 24) & 0xFF
        guard op != Uring.Op.cancel.rawValue else { return }
        let token = ud & ~(UInt64(0xFF) << 24)
        let kind = token >> 62
        let fd = Int32(truncatingIfNeeded: token & 0xFF_FFFF)
        switch kind {
        case TokenKind.connection.rawValue where op == Uring.Op.send.rawValue:
            if let c = connection(fd: fd, token: token) ?? orphanedFlights[token] { sent(u, c, res, flags) }
        case TokenKind.connection.rawValue:
            guard let c = connection(fd: fd, token: token) else { return }
            if op == Uring.Op.writable.rawValue {
                c.writeArmed = false
                writable(u, c, res)
                return
            }
            if !more { c.receiveArmed = false }
            if res == -ENOBUFS {
                // The ring's buffers ran out (many busy connections, large messages): read this
                // one directly, as epoll would, rather than leave its bytes for another turn.
                if !c.readingPaused, !c.outputBlocked { readFrom(c) }
            } else {
                received(c, res, hasBuffer ? UnsafeRawBufferPointer(start: tern_uring_buffer(u.ring, bid), count: max(Int(res), 0)) : nil)
            }
            // A multishot receive ends (buffers ran out, an error): arm it again unless the
            // connection is closed or held back.
            if !c.isClosed, !c.receiveArmed, !c.receiveHeld { uringRecv(c) }
        case TokenKind.listener.rawValue:
            guard let l = listeners[fd] else {
                if res >= 0 { Sys.close(res) }
                return
            }
            if res >= 0 {
                accepted(l, fd: res)
            } else if res != -ECANCELED {
                l.acceptErrors += 1
                if res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM {
                    // Out of descriptors: the multishot accept ended; try again shortly.
                    noteShortage(l, errno: -res)
                    schedule(after: 100_000_000) { [weak self, l] in
                        guard let self, self.listeners[l.fd] === l else { return }
                        self.uringAccept(l)
                    }
                    return
                }
            }
            if !more, listeners[fd] === l { uringAccept(l) }
        case TokenKind.datagram.rawValue:
            guard let s = datagrams[fd] else { return }
            receiveAll(s)
            if !more, !s.isClosed { uringPollInput(fd: fd, token: Self.token(kind: .datagram, fd: fd, generation: 0)) }
        default:
            var v: UInt64 = 0
            _ = CTernSystem.read(wakeFD, &v, 8)
            if !more { uringPollInput(fd: wakeFD, token: Self.token(kind: .wakeup, fd: wakeFD, generation: 0)) }
        }
    }

    /// A poll for output fired: an outbound connect finished; send what was written meanwhile.
    func writable(_ u: Uring, _ c: Connection, _ res: Int32) {
        if c.connecting {
            let err = tern_socket_error(c.fd)
            if err != 0 || res < 0 {
                c.fail(.syscall("connect", errno: err != 0 ? err : -res))
                return
            }
            c.connecting = false
            c.handler?.connectionActive(c)
            if c.isClosed { return }
            uringRecv(c)
        }
        if c.stagingCount > 0 { queueSend(c) }
    }

    /// Bytes (or the end, or an error) from a multishot receive.
    func received(_ c: Connection, _ res: Int32, _ data: UnsafeRawBufferPointer?) {
        if res == 0 {
            c.pendingInput.removeAll()
            c.inputEnded = true
            if let h = c.handler { h.connectionEndOfInput(c) } else { c.close() }
            return
        }
        if res < 0 {
            switch res {
            case -ECANCELED, -EINTR, -EAGAIN: return  // armed again by the caller (or held)
            case -ECONNRESET: c.fail(.connectionReset)
            default: c.fail(.syscall("recv", errno: -res))
            }
            return
        }
        guard let data else { return }
        if c.movesDeadlineOnRead { c.touch() }
        if c.readingPaused || c.outputBlocked {
            // Not to be read now: keep it (the kernel keeps sending into the ring), and stop
            // receiving once `pausedHold` waits, so TCP pushes back on the peer (a thousand
            // uploads held for a slow disk each keep that much, not a read buffer's worth).
            c.pendingInput.append(contentsOf: data)
            if c.pendingInput.count >= min(readBufferSize, Uring.pausedHold), c.receiveArmed, !c.receiveHeld {
                c.receiveHeld = true
                uringCancel(c.token)
            }
            return
        }
        if c.pendingInput.isEmpty {
            // The common case: parse where the kernel put the bytes.
            _ = offer(c, bytes: data)
            return
        }
        c.pendingInput.append(contentsOf: data)
        offerPending(c)
    }

    /// Offers what a connection kept (it may be more than the receive buffer holds: input that
    /// arrived while it was paused) a receive buffer's worth at a time, as epoll would read it,
    /// and stops as soon as the handler pauses or its output backs up.
    func offerPending(_ c: Connection) {
        guard !c.pendingInput.isEmpty, c.handler != nil else { return }
        var kept: [UInt8] = []
        swap(&kept, &c.pendingInput)
        kept.withUnsafeBytes { all in
            var start = 0
            while start < all.count {
                if c.readingPaused || c.outputBlocked {
                    c.pendingInput.append(contentsOf: UnsafeRawBufferPointer(rebasing: all[start...]))
                    return
                }
                let end = min(all.count, start + readBufferSize)
                // offer() keeps what the handler left in pendingInput (and fails an overflow).
                guard offer(c, bytes: UnsafeRawBufferPointer(rebasing: all[start..<end])), end < all.count else { return }
                // What the handler left is the tail of this chunk: it leads the next one.
                start = end - c.pendingInput.count
                c.pendingInput.removeAll(keepingCapacity: true)
            }
        }
    }

    func accepted(_ l: Listener, fd: Int32) {
        _ = tern_set_nodelay(fd)
        let c: Connection
        do {
            c = try adopt(fd: fd, connecting: false)
        } catch {
            Sys.close(fd)
            return
        }
        l.accepted += 1
        let h = l.makeHandler(c)
        c.handler = h
        h.connectionActive(c)
    }

    /// A connection that may read again (resumed, or its output drained).
    func uringResume(_ c: Connection) {
        offerPending(c)
        guard !c.isClosed, !c.readingPaused, !c.outputBlocked else { return }
        if c.receiveHeld {
            c.receiveHeld = false
            if !c.receiveArmed { uringRecv(c) }
        }
    }
}

