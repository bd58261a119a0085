// One end of a socketpair between two of ternd's processes, on a reactor loop: frames in through
// `FrameDecoder`, each message checked by `ChannelGuard` before the delegate sees it, frames out
// through the connection. The first broken frame or out-of-order message closes the channel
// with the reason; nothing the peer sent after it reaches the delegate.
import Reactor

public protocol IPCChannelDelegate: AnyObject {
    /// A message from the peer, well-formed and in order. Loop thread.
    func channel(_ channel: IPCChannel, received message: IPCMessage)
    /// The channel is closed: `error` says why when the peer broke the protocol or the socket
    /// failed; nil when it closed in order (between frames) or this side closed it.
    func channelClosed(_ channel: IPCChannel, error: IPCChannelError?)
    /// What was buffered for the peer went out (after a write could not complete at once).
    func channelWritable(_ channel: IPCChannel)
}

extension IPCChannelDelegate {
    public func channelWritable(_ channel: IPCChannel) {}
}

public enum IPCChannelError: Error, Sendable, Equatable, CustomStringConvertible {
    case protocolError(IPCError)
    case io(ReactorError)

    public var description: String {
        switch self {
        case .protocolError(let e): return "protocol error: \(e)"
        case .io(let e): return "\(e)"
        }
    }
}

public final class IPCChannel: ConnectionHandler {
    public private(set) var connection: Connection?
    public private(set) var rules: ChannelGuard
    public weak var delegate: IPCChannelDelegate?
    var decoder = FrameDecoder()
    var closing: IPCChannelError? = nil
    /// Messages taken and handed on (for tests and status output).
    public private(set) var received = 0

    /// Adopts `fd` (a connected stream socket: one end of a socketpair) on `loop` and says
    /// hello as `rules.local`. Loop thread only.
    public init(loop: EventLoop, fd: Int32, rules: ChannelGuard, delegate: IPCChannelDelegate?) throws(ReactorError) {
        self.rules = rules
        self.delegate = delegate
        connection = try loop.adopt(fd: fd, handler: self)
        send(.hello(version: IPCMessage.version, role: rules.local))
    }

    /// Sends a message (buffered by the connection when the peer is slow to read).
    public func send(_ m: IPCMessage) {
        guard let c = connection else { return }
        rules.sent(m)
        c.write(m.encoded())
    }

    /// Closes the channel (what is buffered for the peer is still sent).
    public func close() {
        connection?.close()
    }

    public func connectionActive(_ c: Connection) {}

    public func connectionWritable(_ c: Connection) { delegate?.channelWritable(self) }

    public func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard closing == nil else { return bytes.count }
        decoder.feed(bytes)
        do throws(IPCError) {
            while closing == nil, let m = try decoder.next() {
                try rules.received(m)
                received += 1
                delegate?.channel(self, received: m)
            }
        } catch {
            fail(.protocolError(error))
        }
        return bytes.count
    }

    public func connectionEndOfInput(_ c: Connection) {
        do throws(IPCError) {
            try decoder.finish()
        } catch {
            closing = .protocolError(error)
        }
        c.close()
    }

    /// A broken peer: nothing more is read from it; what we buffered for it is dropped.
    func fail(_ e: IPCChannelError) {
        closing = e
        connection?.abort()
    }

    public func connectionClosed(_ c: Connection, error: ReactorError?) {
        connection = nil
        let why = closing ?? error.map { IPCChannelError.io($0) }
        delegate?.channelClosed(self, error: why)
    }
}
