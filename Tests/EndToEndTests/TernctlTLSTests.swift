import Delivery
import Foundation
import Testing

@Suite("ternctl tls")
struct TernctlTLSTests {
    @Test("show and reset the levels recorded under the configured spool; bad domains are clear errors")
    func showReset() throws {
        let t = try TerndProcess()
        defer { t.cleanUp() }
        let conf = "\(t.dir)/tern.conf"
        let empty = try run(ternctlPath, ["tls", "show", "example.com", "--config", conf])
        #expect(empty.status == 0 && empty.out == "example.com incoming plain\nexample.com outgoing plain\n", "\(empty)")
        // What the courier records (the spool, which ternd creates, is relative to the configuration's folder).
        try FileManager.default.createDirectory(atPath: "\(t.dir)/spool", withIntermediateDirectories: true)
        let history = TLSHistory(directory: TLSHistory.directory(spool: "\(t.dir)/spool"))
        try history.record(.tlsVerified, with: "example.com", .outgoing)
        try history.record(.tlsUnverified, with: "xn--bcher-kva.example", .incoming)
        let shown = try run(ternctlPath, ["tls", "show", "Example.COM", "--config", conf])
        #expect(shown.out == "example.com incoming plain\nexample.com outgoing tls-verified\n", "\(shown)")
        let idn = try run(ternctlPath, ["tls", "show", "bücher.example", "--config", conf])
        #expect(idn.out.contains("xn--bcher-kva.example incoming tls-unverified"), "\(idn)")
        let reset = try run(ternctlPath, ["tls", "reset", "example.com", "--config", conf])
        #expect(reset.status == 0 && reset.out == "example.com: reset to plain\n", "\(reset)")
        #expect(try run(ternctlPath, ["tls", "reset", "example.com", "--config", conf]).out == "example.com: nothing was recorded\n")
        #expect(try run(ternctlPath, ["tls", "show", "example.com", "--config", conf]).out.contains("outgoing plain"))
        let bad = try run(ternctlPath, ["tls", "show", "../etc", "--config", conf])
        #expect(bad.status == 1 && bad.err.contains("ternctl tls show: invalid domain '../etc'"), "\(bad)")
    }
}
