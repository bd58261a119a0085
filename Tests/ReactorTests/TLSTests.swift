import CTernSystem
import Foundation
import TernTestSupport
import Testing

@testable import Reactor

/// A test CA, a certificate for mx.example.test, one for other.example.test and *.wild.example.test,
/// and a key that belongs to neither.
struct TestPKI {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "tern-tls-\(UUID().uuidString)"
        try TestCertificates.make(in: dir, [("mx", ["mx.example.test"]), ("second", ["other.example.test", "*.wild.example.test"])])
        try "not a certificate\n".write(toFile: "\(dir)/san.ext", atomically: true, encoding: .utf8)
        guard FileManager.default.fileExists(atPath: "\(dir)/mx.pem") else { throw TLSError.setup("no test certificates") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = ["genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "\(dir)/other.key"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: dir) }
}

/// Moves ciphertext between two connections until neither has anything more to say.
func pump(_ a: TLSConnection, _ b: TLSConnection) -> (TLSConnection.Progress, TLSConnection.Progress) {
    var pa = a.advance(), pb = b.advance()
    for _ in 0..<50 {
        let outA = a.takeOutput(), outB = b.takeOutput()
        if outA.isEmpty, outB.isEmpty { break }
        b.receive(outA)
        a.receive(outB)
        pa = a.advance()
        pb = b.advance()
    }
    return (pa, pb)
}

@Suite("TLS over memory buffers (OpenSSL)")
struct TLSTests {
    @Test("handshake, data both ways (large too), verification verified / unverified, close")
    func handshake() throws {
        let pki = try TestPKI()
        defer { pki.cleanUp() }
        let server = try TLSContext.server(certificateChain: "\(pki.dir)/mx.pem", privateKey: "\(pki.dir)/mx.key")
        let trusting = try TLSContext.client(caFile: "\(pki.dir)/ca.pem")

        let c = try TLSConnection(trusting, serverName: "mx.example.test")
        let s = try TLSConnection(server)
        let (pc, ps) = pump(c, s)
        #expect(pc == .established && ps == .established, "\(pc) \(ps)")
        #expect(c.protocolVersion == "TLSv1.3" && s.protocolVersion == "TLSv1.3")
        #expect(!c.cipher.isEmpty && c.cipher == s.cipher)
        #expect(c.verification == .verified)
        #expect(s.requestedServerName == "mx.example.test")

        // 200 KB one way, a line the other, through the pump.
        let big = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(c.write(big) == big.count)
        #expect(s.write(Array("250 ok\r\n".utf8)) == 8)
        var atServer: [UInt8] = [], atClient: [UInt8] = []
        for _ in 0..<100 where atServer.count < big.count || atClient.isEmpty {
            s.receive(c.takeOutput())
            c.receive(s.takeOutput())
            _ = s.read(into: &atServer)
            _ = c.read(into: &atClient)
        }
        #expect(atServer == big)
        #expect(atClient == Array("250 ok\r\n".utf8))

        // close_notify: the other side reads "closed"; it is sent once, however often asked.
        var notify: [UInt8] = []
        c.shutdown { notify += $0 }
        #expect(!notify.isEmpty && c.closeNotifySent)
        var again: [UInt8] = []
        c.shutdown { again += $0 }
        #expect(again.isEmpty)
        s.receive(notify)
        var rest: [UInt8] = []
        #expect(s.read(into: &rest) == .closed)
        // The answer to it: the first side reads "closed" too (a clean end both ways).
        var answer: [UInt8] = []
        s.shutdown { answer += $0 }
        c.receive(answer)
        #expect(c.read(into: &rest) == .closed)

        // The wrong name, or no trust in the CA: encrypted, but unverified, with the reason.
        let wrongName = try TLSConnection(trusting, serverName: "other.example.test")
        #expect(pump(wrongName, try TLSConnection(server)).0 == .established)
        #expect(wrongName.verification == .unverified("hostname mismatch"), "\(wrongName.verification)")
        let system = try TLSConnection(try TLSContext.client(), serverName: "mx.example.test")
        #expect(pump(system, try TLSConnection(server)).0 == .established)
        if case .unverified(let why) = system.verification {
            #expect(why.contains("certificate"), "\(why)")
        } else {
            Issue.record("a private CA is not in the system trust store")
        }
    }

    @Test("several certificates: the client's SNI name picks the one that carries it, else the first")
    func sni() throws {
        let pki = try TestPKI()
        defer { pki.cleanUp() }
        let server = try TLSContext.selectingByName([
            try TLSContext.server(certificateChain: "\(pki.dir)/mx.pem", privateKey: "\(pki.dir)/mx.key"),
            try TLSContext.server(certificateChain: "\(pki.dir)/second.pem", privateKey: "\(pki.dir)/second.key"),
        ])
        let client = try TLSContext.client(caFile: "\(pki.dir)/ca.pem")
        for (name, expected) in [
            ("mx.example.test", TLSConnection.Verification.verified),
            ("other.example.test", .verified),
            ("a.wild.example.test", .verified),
            ("nothing.example.test", .unverified("hostname mismatch")),
        ] {
            let c = try TLSConnection(client, serverName: name)
            let s = try TLSConnection(server)
            #expect(pump(c, s) == (.established, .established))
            #expect(c.verification == expected, "\(name)")
            #expect(s.requestedServerName == name)
        }
    }

    @Test("TLS 1.2 still works; TLS 1.1 and older are refused")
    func versions() throws {
        let pki = try TestPKI()
        defer { pki.cleanUp() }
        let server = try TLSContext.server(certificateChain: "\(pki.dir)/mx.pem", privateKey: "\(pki.dir)/mx.key")
        let tls12 = try TLSConnection(try TLSContext.client(caFile: "\(pki.dir)/ca.pem", maxVersion: Int32(TLS1_2_VERSION)), serverName: "mx.example.test")
        let s12 = try TLSConnection(server)
        #expect(pump(tls12, s12) == (.established, .established))
        #expect(s12.protocolVersion == "TLSv1.2")
        #expect(s12.cipher.contains("GCM") || s12.cipher.contains("CHACHA20"), "\(s12.cipher)")
        let tls11 = try TLSConnection(try TLSContext.client(caFile: "\(pki.dir)/ca.pem", maxVersion: Int32(TLS1_1_VERSION)), serverName: "mx.example.test")
        let (pc, ps) = pump(tls11, try TLSConnection(server))
        if case .failed(let why) = ps {
            #expect(why.contains("protocol") || why.contains("version"), "\(why)")
        } else {
            Issue.record("the server accepted TLS 1.1: \(ps)")
        }
        #expect(pc != .established)
    }

    @Test("certificates that cannot be used are refused with the file named")
    func badFiles() throws {
        let pki = try TestPKI()
        defer { pki.cleanUp() }
        #expect(throws: TLSError.self) { try TLSContext.server(certificateChain: "\(pki.dir)/missing.pem", privateKey: "\(pki.dir)/mx.key") }
        do {
            _ = try TLSContext.server(certificateChain: "\(pki.dir)/mx.pem", privateKey: "\(pki.dir)/other.key")
            Issue.record("a key that does not match was accepted")
        } catch {
            #expect(error.description == "\(pki.dir)/other.key: does not match the certificate in \(pki.dir)/mx.pem")
        }
        do {
            _ = try TLSContext.server(certificateChain: "\(pki.dir)/san.ext", privateKey: "\(pki.dir)/mx.key")
            Issue.record("a file that is no certificate was accepted")
        } catch {
            #expect(error.description.hasPrefix("\(pki.dir)/san.ext: not a usable PEM certificate chain"), "\(error)")
        }
        #expect(throws: TLSError.self) { try TLSContext.client(caFile: "\(pki.dir)/nothing.pem") }
        // Garbage instead of a handshake fails cleanly.
        let s = try TLSConnection(try TLSContext.server(certificateChain: "\(pki.dir)/mx.pem", privateKey: "\(pki.dir)/mx.key"))
        s.receive(Array("EHLO not.tls\r\n".utf8))
        if case .failed = s.advance() {} else { Issue.record("plaintext was taken for a handshake") }
    }
}
