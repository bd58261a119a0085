// The date-time of header fields (Date:, Received:), RFC 5322 §3.3.
import Glibc

/// RFC 5322 date-time in UTC, e.g. "Sun, 22 Nov 2026 05:32:35 +0000".
public func rfc5322Date(_ t: time_t) -> String {
    var tm = tm()
    var t = t
    gmtime_r(&t, &tm)
    var buf = [CChar](repeating: 0, count: 64)
    let n = strftime(&buf, 64, "%a, %d %b %Y %H:%M:%S +0000", &tm)
    return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
