import CTernSystem
import Glibc

/// What a datagram socket reports. All calls happen on the socket's loop.
public protocol DatagramHandler: AnyObject {
    /// One datagram arrived (the bytes are valid during the call only).
    func datagramReceived(_ socket: DatagramSocket, _ bytes: UnsafeRawBufferPointer)
    /// Receiving failed (for instance ECONNREFUSED after an ICMP port unreachable).
    func datagramFailed(_ socket: DatagramSocket, _ error: ReactorError)
}

/// A non-blocking UDP socket connected to one peer (the kernel picks a random source port and
/// drops datagrams from anyone else), owned by one event loop. Used by the DNS stub resolver.
public final class DatagramSocket {
    public let fd: Int32
    public unowned let loop: EventLoop
    /// Held strongly while the socket is open (like a connection's handler); released by `close`.
    public var handler: DatagramHandler?
    public private(set) var isClosed = false

    init(fd: Int32, loop: EventLoop) {
        self.fd = fd
        self.loop = loop
    }

    /// Sends one datagram; false when the kernel refused it (the caller treats it as a lost packet).
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        guard !isClosed else { return false }
        return bytes.withUnsafeBytes { Sys.write(fd, $0.baseAddress!, $0.count) } == bytes.count
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        handler = nil
        loop.remove(self)
    }
}

extension EventLoop {
    /// Opens a UDP socket connected to a numeric `host:port`. Loop thread only.
    public func openDatagram(host: String, port: Int, handler: DatagramHandler) throws(ReactorError) -> DatagramSocket {
        let fd = tern_connect_udp(host, Int32(port))
        guard fd >= 0 else { throw .syscall("udp \(host):\(port)", errno: -fd) }
        let s = DatagramSocket(fd: fd, loop: self)
        s.handler = handler
        if usesUring {
            uringPollInput(fd: fd, token: Self.token(kind: .datagram, fd: fd, generation: 0))
        } else {
            do {
                try backend.registerReadOnly(fd: fd, token: Self.token(kind: .datagram, fd: fd, generation: 0))
            } catch {
                Sys.close(fd)
                throw error
            }
        }
        datagrams[fd] = s
        return s
    }

    func remove(_ s: DatagramSocket) {
        if usesUring { uringCancel(Self.token(kind: .datagram, fd: s.fd, generation: 0)) } else { backend.deregister(fd: s.fd) }
        if datagrams[s.fd] === s { datagrams[s.fd] = nil }
        Sys.close(s.fd)
    }

    /// Receives until EAGAIN, one handler call per datagram.
    func receiveAll(_ s: DatagramSocket) {
        let base = readBuffer.baseAddress!
        while !s.isClosed {
            let n = Sys.read(s.fd, base, readBufferSize)
            if n == -Int(EAGAIN) { return }
            if n < 0 {
                s.handler?.datagramFailed(s, .syscall("recv", errno: Int32(-n)))
                return
            }
            s.handler?.datagramReceived(s, UnsafeRawBufferPointer(start: base, count: n))
        }
    }
}
