import CTernSystem
import Glibc

/// What a connection reports to its protocol code. All calls happen on the connection's loop.
public protocol ConnectionHandler: AnyObject {
    /// The connection is established (accepted, or an outbound connect completed).
    func connectionActive(_ connection: Connection)
    /// Bytes arrived: `bytes` holds what was left unconsumed last time followed by the new bytes.
    /// - Returns: how many bytes were consumed; the rest is presented again with the next bytes.
    func connectionReceived(_ connection: Connection, _ bytes: UnsafeRawBufferPointer) -> Int
    /// The peer closed its sending side (EOF). The default closes the connection.
    func connectionEndOfInput(_ connection: Connection)
    /// The idle deadline (`Connection.timeout`) passed.
    func connectionTimedOut(_ connection: Connection)
    /// Buffered output drained after a write could not complete at once.
    func connectionWritable(_ connection: Connection)
    /// The connection is closed; `error` is nil for a local, orderly close.
    func connectionClosed(_ connection: Connection, error: ReactorError?)
}

extension ConnectionHandler {
    public func connectionEndOfInput(_ connection: Connection) { connection.close() }
    public func connectionWritable(_ connection: Connection) {}
    public func connectionTimedOut(_ connection: Connection) { connection.close() }
}

/// A non-blocking TCP connection owned by one event loop.
///
/// Input: bytes are read into the loop's shared receive buffer; only bytes the handler leaves
/// unconsumed (a partial command) are copied into `pendingInput`, so an idle connection holds no
/// receive buffer. Output: `write` sends at once; what the kernel does not take waits in
/// `pendingOutput` for the next EPOLLOUT edge. While more than `outputHighWater` bytes wait,
/// the connection is not read (backpressure).
public final class Connection {
    public let fd: Int32
    public unowned let loop: EventLoop
    public var handler: ConnectionHandler?
    let generation: UInt32
    var pendingInput: [UInt8] = []
    var pendingOutput: [UInt8] = []
    var outputHead = 0
    var connecting = false
    var onReadyList = false
    var closeAfterFlush = false
    var timerArmed = false
    var hangupSeen = false
    /// The peer closed its side (a read returned 0).
    var inputEnded = false
    /// io_uring: a multishot receive is in flight; it was cancelled to hold input back; a poll for
    /// writability is in flight.
    var receiveArmed = false
    var receiveHeld = false
    var writeArmed = false
    /// io_uring output: writes are copied into `staging`; once a turn the loop sends it through
    /// the ring as `flight`, which stays untouched until its completions are in (with a
    /// zero-copy send, until the kernel's notification). See Uring.swift.
    var staging: UnsafeMutableRawPointer? = nil
    var stagingCount = 0
    var stagingCapacity = 0
    var flight: UnsafeMutableRawPointer? = nil
    var flightCount = 0
    var flightHead = 0
    var flightCapacity = 0
    /// Zero-copy notifications still to come for `flight`.
    var flightNotifications = 0
    /// A send of `flight` is submitted and its completion not in yet.
    var sendOutstanding = false
    var sendQueued = false
    /// Output above this many bytes stops reading until it drains.
    public var outputHighWater = 256 * 1024
    public private(set) var isClosed = false
    /// The handler asked not to be read (for instance while a message is being stored).
    public private(set) var readingPaused = false
    /// Idle timeout in nanoseconds (0: none); the deadline moves on every read.
    public var timeout: UInt64 = 0 {
        didSet { touch() }
    }
    var deadline: UInt64 = .max
    /// The deadline of the timer entry in force (older entries in the heap are stale).
    var armedDeadline: UInt64 = .max
    /// Reads move the deadline to now + timeout (an idle timeout). A handler that keeps its own
    /// deadlines (SMTP: per command, a minimum data rate) turns this off and calls `touch()` or
    /// `expire(at:)` itself.
    public var movesDeadlineOnRead = true
    /// Bytes the kernel took so far (a peer that does not read makes no progress here).
    public internal(set) var bytesSent: UInt64 = 0
    /// Position of this connection's entry in the loop's timer heap, -1 when it has none.
    var heapIndex = -1

    init(fd: Int32, loop: EventLoop, generation: UInt32) {
        self.fd = fd
        self.loop = loop
        self.generation = generation
    }

    var token: UInt64 { EventLoop.token(kind: .connection, fd: fd, generation: generation) }

    /// The peer's numeric address, or "unknown".
    public var peerAddress: String {
        var buf = [CChar](repeating: 0, count: 64)
        guard tern_peer_address(fd, &buf, 64) == 0 else { return "unknown" }
        return String(cString: buf)
    }

    /// Bytes waiting to be written.
    public var bufferedOutput: Int { pendingOutput.count - outputHead + stagingCount + flightCount - flightHead }

    var outputBlocked: Bool { bufferedOutput > outputHighWater }

    /// Moves the idle deadline to now + timeout.
    public func touch() {
        guard timeout > 0, !isClosed else { return }
        expire(at: loop.now &+ timeout)
    }

    /// Sets the deadline at which the handler's `connectionTimedOut` is called (the loop's clock,
    /// `EventLoop.now`), earlier or later than the one before.
    public func expire(at when: UInt64) {
        guard !isClosed else { return }
        deadline = when
        // A later deadline: the entry in force fires early and is pushed again. An earlier one
        // needs an entry of its own (the old one goes stale).
        if !timerArmed || when < armedDeadline {
            timerArmed = true
            loop.armTimer(self)
        }
    }

    /// Writes bytes, or buffers what the socket does not take now.
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosed, bytes.count > 0 else { return }
        if loop.usesUring { return loop.uringStage(self, bytes) }
        if bufferedOutput > 0 || connecting {
            pendingOutput.append(contentsOf: bytes)
            return
        }
        guard let rest = sendNow(bytes), !rest.isEmpty else { return }
        pendingOutput.append(contentsOf: rest)
    }

    /// Sends what the socket takes now. Returns the rest (empty when everything went), or nil when
    /// the send failed and the connection is closed.
    func sendNow(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let n = Sys.write(fd, bytes.baseAddress!, bytes.count)
        if n >= 0 {
            bytesSent &+= UInt64(n)
            return UnsafeRawBufferPointer(rebasing: bytes[n...])
        }
        if n == -Int(EAGAIN) { return bytes }
        fail(.syscall("send", errno: Int32(-n)))
        return nil
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Flushes buffered output after an EPOLLOUT edge.
    func flush() {
        while bufferedOutput > 0 {
            let n = pendingOutput.withUnsafeBytes { p in
                Sys.write(fd, p.baseAddress! + outputHead, p.count - outputHead)
            }
            if n > 0 {
                outputHead += n
                bytesSent &+= UInt64(n)
                continue
            }
            if n == -Int(EAGAIN) { return }
            fail(.syscall("send", errno: Int32(-n)))
            return
        }
        let wasBlocked = pendingOutput.count > outputHighWater
        // Drained: release the buffer when it grew large, keep a small one.
        if pendingOutput.capacity > 64 * 1024 {
            pendingOutput = []
        } else {
            pendingOutput.removeAll(keepingCapacity: true)
        }
        outputHead = 0
        if closeAfterFlush {
            closeNow(error: nil)
            return
        }
        handler?.connectionWritable(self)
        if wasBlocked { loop.markReady(self) }
    }

    /// Stops reading (input stays in the kernel: TCP flow control pushes back on the peer).
    public func pauseReading() { readingPaused = true }

    /// Resumes reading, first offering what is already buffered.
    public func resumeReading() {
        guard readingPaused else { return }
        readingPaused = false
        loop.markReady(self)
    }

    /// Closes after the buffered output is written.
    public func close() {
        guard !isClosed else { return }
        if bufferedOutput > 0 {
            closeAfterFlush = true
            readingPaused = true
            return
        }
        closeNow(error: nil)
    }

    func fail(_ error: ReactorError) { closeNow(error: error) }

    /// Closes at once, dropping output the peer has not taken (a peer that reads nothing).
    public func abort() { closeNow(error: nil) }

    func closeNow(error: ReactorError?) {
        guard !isClosed else { return }
        isClosed = true
        loop.remove(self)
        if loop.usesUring { loop.uringReleaseOutput(self) }
        pendingInput = []
        pendingOutput = []
        outputHead = 0
        let h = handler
        handler = nil
        h?.connectionClosed(self, error: error)
    }
}
