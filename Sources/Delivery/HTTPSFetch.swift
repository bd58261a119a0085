// One HTTPS GET on the reactor, for MTA-STS policies (RFC 8461 §3.3): TLS with a certificate
// that must verify for the host name, HTTP/1.1 with `Connection: close`, no redirects (any
// status but 200 is a failure), a size cap, Content-Length or chunked bodies. Runs on the
// loop of the task that awaits it (see OutboundSession for the continuation discipline).

import Reactor

public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    /// Header names in lower case.
    public var headers: [String: String]
    public var body: [UInt8]
}

public struct HTTPFetchError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

final class HTTPSFetch: ConnectionHandler, @unchecked Sendable {
    let host: String
    let path: String
    let limit: Int
    let context: TLSContext
    var tls: TLSConnection? = nil
    var received: [UInt8] = []
    var result: Result<HTTPResponse, HTTPFetchError>? = nil
    var waiter: UnsafeContinuation<Result<HTTPResponse, HTTPFetchError>, Never>? = nil
    var connection: Connection? = nil

    init(host: String, path: String, context: TLSContext, limit: Int) {
        self.host = host
        self.path = path
        self.context = context
        self.limit = limit
    }

    /// GETs `https://host/path` from `address:port`; the answer, or why there is none.
    static func get(
        loop: EventLoop, address: String, port: Int, host: String, path: String, context: TLSContext, limit: Int = 64 * 1024,
        timeout: UInt64 = 20_000_000_000
    ) async -> Result<HTTPResponse, HTTPFetchError> {
        let f = HTTPSFetch(host: host, path: path, context: context, limit: limit)
        do {
            let c = try loop.connect(host: address, port: port, handler: f)
            if f.result == nil {
                f.connection = c
                c.timeout = timeout
            }
        } catch {
            return .failure(HTTPFetchError("connect to \(host)[\(address)]:\(port): \(error)"))
        }
        if let r = f.result { return r }
        return await withUnsafeContinuation { c in
            // The body runs as a job of its own: the fetch may have ended already.
            if let r = f.result { c.resume(returning: r) } else { f.waiter = c }
        }
    }

    func finish(_ r: Result<HTTPResponse, HTTPFetchError>) {
        guard result == nil else { return }
        result = r
        let c = connection
        connection = nil
        if let c { tls?.shutdown { c.write($0) } }
        c?.close()
        if let w = waiter {
            waiter = nil
            w.resume(returning: r)
        }
    }

    func connectionActive(_ c: Connection) {
        connection = c
        guard let t = try? TLSConnection(context, serverName: host) else { return finish(.failure(HTTPFetchError("cannot start TLS"))) }
        tls = t
        _ = t.advance()
        t.drainOutput { c.write($0) }
    }

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let tls else { return bytes.count }
        tls.receive(bytes)
        if !tls.isEstablished {
            let progress = tls.advance()
            tls.drainOutput { c.write($0) }
            switch progress {
            case .needMore: return bytes.count
            case .closed: finish(.failure(HTTPFetchError("TLS handshake with \(host) failed: connection closed"))); return bytes.count
            case .failed(let why): finish(.failure(HTTPFetchError("TLS handshake with \(host) failed: \(why)"))); return bytes.count
            case .established:
                if case .unverified(let why) = tls.verification {
                    finish(.failure(HTTPFetchError("the certificate of \(host) does not verify: \(why)")))
                    return bytes.count
                }
                _ = tls.write(Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: Tern\r\nAccept: text/plain\r\nConnection: close\r\n\r\n".utf8))
                tls.drainOutput { c.write($0) }
            }
        }
        let progress = tls.read(into: &received)
        if received.count > limit + 16 * 1024 { finish(.failure(HTTPFetchError("the answer of \(host) exceeds \(limit) bytes"))) }
        if let r = Self.parse(received, limit: limit, complete: false) { finish(r) }
        if progress == .closed { finish(Self.parse(received, limit: limit, complete: true)!) }
        if case .failed(let why) = progress { finish(.failure(HTTPFetchError("TLS with \(host) failed: \(why)"))) }
        return bytes.count
    }

    func connectionEndOfInput(_ c: Connection) {
        finish(Self.parse(received, limit: limit, complete: true)!)
    }

    func connectionTimedOut(_ c: Connection) {
        finish(.failure(HTTPFetchError("\(host) did not answer in time")))
    }

    func connectionClosed(_ c: Connection, error: ReactorError?) {
        finish(error.map { .failure(HTTPFetchError("connection to \(host): \($0)")) } ?? Self.parse(received, limit: limit, complete: true)!)
    }

    /// The response in `bytes`: nil while more is needed (`complete`: the peer has closed).
    static func parse(_ bytes: [UInt8], limit: Int, complete: Bool) -> Result<HTTPResponse, HTTPFetchError>? {
        guard let end = headerEnd(bytes) else {
            return complete ? .failure(HTTPFetchError(bytes.isEmpty ? "no answer" : "a truncated HTTP answer")) : nil
        }
        let head = String(decoding: bytes[..<end], as: UTF8.self)
        var lines = head.split(whereSeparator: { $0 == "\r\n" || $0 == "\n" })
        guard !lines.isEmpty else { return .failure(HTTPFetchError("an empty HTTP answer")) }
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else {
            return .failure(HTTPFetchError("not an HTTP answer"))
        }
        var headers: [String: String] = [:]
        for l in lines {
            guard let colon = l.firstIndex(of: ":") else { continue }
            headers[l[..<colon].lowercased()] = String(l[l.index(after: colon)...].drop { $0 == " " || $0 == "\t" })
        }
        let rest = Array(bytes[(end + 4)...])
        var body: [UInt8]
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            switch dechunk(rest) {
            case .none: return complete ? .failure(HTTPFetchError("a truncated chunked body")) : nil
            case .some(.failure(let e)): return .failure(e)
            case .some(.success(let b)): body = b
            }
        } else if let lengthText = headers["content-length"] {
            guard let length = Int(lengthText), length >= 0 else { return .failure(HTTPFetchError("bad Content-Length")) }
            if length > limit { return .failure(HTTPFetchError("the body exceeds \(limit) bytes")) }
            if rest.count < length { return complete ? .failure(HTTPFetchError("a truncated body")) : nil }
            body = Array(rest[..<length])
        } else {
            guard complete else { return nil }
            body = rest
        }
        if body.count > limit { return .failure(HTTPFetchError("the body exceeds \(limit) bytes")) }
        return .success(HTTPResponse(status: status, headers: headers, body: body))
    }

    static func headerEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }

    /// A chunked body (RFC 9112 §7.1): nil while incomplete.
    static func dechunk(_ b: [UInt8]) -> Result<[UInt8], HTTPFetchError>? {
        var out: [UInt8] = []
        var i = 0
        while true {
            guard let lf = b[i...].firstIndex(of: 10) else { return nil }
            let line = String(decoding: b[i..<lf], as: UTF8.self).split(separator: ";").first.map { $0.trimmingCharacters() } ?? ""
            guard let size = Int(line, radix: 16), size >= 0 else { return .failure(HTTPFetchError("a bad chunk size")) }
            i = lf + 1
            if size == 0 { return .success(out) }
            guard b.count >= i + size + 2 else { return nil }
            out += b[i..<(i + size)]
            i += size + 2
        }
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\r" }.reversed())
    }
}
