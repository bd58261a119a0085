// A Swift 6.3 (Linux, -Onone) miscompile found building the courier link (issue 17): a tuple that
// holds a closure, captured by an escaping closure inside a generic `let` box and destructured
// there, is released once too often — an element of the struct beside it is freed while still
// in use (here `recipients`; in ternd the queue process died with SIGSEGV in a deinit).
//
//   swiftc docs/platform/swift-tuple-closure-transfer.swift -o /tmp/r && /tmp/r   # crashes
//
// The same without the closure in the tuple, or with a 2-tuple, or reading `box.value.1` instead
// of destructuring, runs fine. Ternd's rule: never put a closure in a tuple handed through
// `Transfer`; box a class holding them instead (CourierLink.Submission).
struct Transfer<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
struct Msg { var id: UInt64; var sender: String; var recipients: [String]; var body: [UInt8] }
final class Holder { let m: Msg; init(_ m: Msg) { self.m = m } }
var held: [Holder] = []
var queue: [@Sendable () -> Void] = []
func submit(_ domain: String, _ message: Msg, done: @escaping @Sendable ([Int]) -> Void) {
    let box = Transfer((domain, message, done))
    queue.append { let (_, m, dn) = box.value; held.append(Holder(m)); dn([1]) }
}
for i in 0..<3 {
    submit("x.example", Msg(id: UInt64(i), sender: "s\(i)@example.test", recipients: ["a\(i)@remote.example", "b@remote.example"], body: Array(repeating: 1, count: 100))) { _ in }
}
for w in queue { w() }
queue.removeAll()
for h in held { print(h.m.recipients) }
