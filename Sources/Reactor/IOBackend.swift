// The backend seam: the event loop asks a backend for readiness of file descriptors.
// `EpollBackend` (Selector+Epoll.swift) is the first implementation; an io_uring backend
// plugs in here without the protocol code knowing which one runs.

/// Readiness bits reported by a backend.
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = IOEvents(rawValue: 1)
    public static let writable = IOEvents(rawValue: 2)
    /// The peer closed its side, or the socket has an error/hang-up.
    public static let hangup = IOEvents(rawValue: 4)
    public static let error = IOEvents(rawValue: 8)
}

/// A batch of events filled by `IOBackend.wait`, preallocated once per loop.
public struct EventBatch: ~Copyable {
    public let capacity: Int
    public let tokens: UnsafeMutablePointer<UInt64>
    public let events: UnsafeMutablePointer<UInt32>

    public init(capacity: Int) {
        self.capacity = capacity
        tokens = .allocate(capacity: capacity)
        events = .allocate(capacity: capacity)
    }

    deinit {
        tokens.deallocate()
        events.deallocate()
    }
}

public protocol IOBackend: AnyObject {
    var name: String { get }
    /// Registers `fd` for edge-triggered read and write readiness under `token`.
    func register(fd: Int32, token: UInt64) throws(ReactorError)
    /// Registers `fd` for edge-triggered read readiness only (listeners, eventfds).
    func registerReadOnly(fd: Int32, token: UInt64) throws(ReactorError)
    func deregister(fd: Int32)
    /// Waits up to `timeoutMS` (-1: forever) and fills `batch`; returns the number of events.
    func wait(_ batch: borrowing EventBatch, timeoutMS: Int32) throws(ReactorError) -> Int
    /// Translates a raw event word into `IOEvents`.
    func decode(_ raw: UInt32) -> IOEvents
    func close()
}
