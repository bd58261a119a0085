import CTernSystem
import Glibc

/// Edge-triggered epoll. Each fd is registered once for IN|OUT|RDHUP so that no epoll_ctl
/// is needed per write: EPOLLOUT edges arrive when the send buffer frees up.
public final class EpollBackend: IOBackend {
    let epfd: Int32
    public let name = "epoll"

    public init() throws(ReactorError) {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw .last("epoll_create1") }
    }

    public func register(fd: Int32, token: UInt64) throws(ReactorError) {
        let ev = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        guard tern_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev, token) == 0 else { throw .last("epoll_ctl(ADD)") }
    }

    public func registerReadOnly(fd: Int32, token: UInt64) throws(ReactorError) {
        let ev = EPOLLIN.rawValue | EPOLLET.rawValue
        guard tern_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev, token) == 0 else { throw .last("epoll_ctl(ADD)") }
    }

    public func deregister(fd: Int32) {
        _ = tern_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, 0, 0)
    }

    public func wait(_ batch: borrowing EventBatch, timeoutMS: Int32) throws(ReactorError) -> Int {
        while true {
            let n = tern_epoll_wait(epfd, batch.tokens, batch.events, Int32(min(batch.capacity, 256)), timeoutMS)
            if n >= 0 { return Int(n) }
            if errno == EINTR { return 0 }
            throw .last("epoll_wait")
        }
    }

    @inline(__always)
    public func decode(_ raw: UInt32) -> IOEvents {
        var e: IOEvents = []
        if raw & EPOLLIN.rawValue != 0 { e.insert(.readable) }
        if raw & EPOLLOUT.rawValue != 0 { e.insert(.writable) }
        if raw & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 { e.insert(.hangup) }
        if raw & EPOLLERR.rawValue != 0 { e.insert(.error) }
        return e
    }

    public func close() { Sys.close(epfd) }
}
