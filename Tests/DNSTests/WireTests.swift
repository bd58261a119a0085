import DNS
import Testing

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = s.startIndex
    while i < s.endIndex {
        let j = s.index(i, offsetBy: 2)
        out.append(UInt8(s[i..<j], radix: 16)!)
        i = j
    }
    return out
}

/// Responses captured from unbound 1.17 (Debian) answering from local data, EDNS0 1232.
enum Captured {
    static let mx = hex("123485800001000200000001076578616d706c65047465737400000f0001c00c000f00010000012c00080014036d7832c00cc00c000f00010000012c0007000a026d78c00c00002904d0000000000000")
    static let txt = hex("234585800001000100000001076578616d706c65047465737400001000" + "01c00c001000010000012c001b15763d73706631206970343a3132372e302e302e3120042d616c6c00002904d0000000000000")
    static let aaaa = hex("345685800001000100000001026d78076578616d706c65047465737400001c0001c00c001c00010000012c00100000000000000000000000000000000100002904d0000000000000")
    static let nxdomain = hex("456785830001000000010001046e6f7065076578616d706c6504746573740000010001c011000600010000003c0026026e73c0110a686f73746d6173746572c0110000000100000e1000000258000151800000003c00002904d0000000000000")
    static let nodata = hex("567885800001000000010001026d78076578616d706c65047465737400000f0001c00f000600010000003c0026026e73c00f0a686f73746d6173746572c00f0000000100000e1000000258000151800000003c00002904d0000000000000")
    static let all = [mx, txt, aaaa, nxdomain, nodata]
}

@Suite("DNS names")
struct NameTests {
    @Test("text forms, case and the trailing dot", arguments: [
        ("mx.example.test", "mx.example.test."), ("MX.Example.TEST.", "mx.example.test."), (".", "."),
        ("a\\.b.test", "a\\.b.test."), ("\\065bc.test", "abc.test."), ("x\\032y.test", "x\\032y.test."),
    ])
    func text(_ input: String, _ printed: String) throws {
        #expect(try DNSName(input).description == printed)
    }

    @Test("invalid names are errors", arguments: ["", "a..b", ".a", String(repeating: "a", count: 64) + ".test", "a\\", "a\\25", "a\\256"])
    func invalid(_ input: String) {
        #expect(throws: DNSNameError.self) { try DNSName(input) }
    }

    @Test("255 bytes is the limit on the wire")
    func length() throws {
        let label = String(repeating: "a", count: 63)
        let ok = [label, label, label, String(repeating: "b", count: 61)].joined(separator: ".")  // 4*64 - 2 + 1 = 255
        #expect(try DNSName(ok).wire.count == 255)
        #expect(throws: DNSNameError.nameTooLong) { try DNSName(ok + "b") }
    }

    @Test("relations: parent, subdomain, prepending; equality ignores case")
    func relations() throws {
        let n = try DNSName("a.B.example.test")
        let b = try DNSName("b.example.test"), upper = try DNSName("EXAMPLE.test"), other = try DNSName("other.test")
        #expect(n.parent == b)
        #expect(n.isSubdomain(of: upper) && !n.isSubdomain(of: other))
        #expect(n.isSubdomain(of: .root) && DNSName.root.parent == .root)
        #expect(try DNSName("example.test").prepending("_dmarc").text == "_dmarc.example.test")
        let x1 = try DNSName("X.test"), x2 = try DNSName("x.TEST.")
        #expect(Set([x1, x2]).count == 1)
    }
}

@Suite("DNS wire format")
struct WireTests {
    @Test("a TXT record with no strings (rdlength 0) is read as an empty record, not a malformed answer")
    func emptyTXT() throws {
        let name = try DNSName("null.example.test")
        var m = DNSMessage(id: 1, flags: 0x8180)
        m.questions = [Question(name: name, type: .txt)]
        m.answers = [
            ResourceRecord(name: name, type: .txt, ttl: 60, data: .txt([Array("v=spf1 ".utf8), Array("-all".utf8)])),
            ResourceRecord(name: name, type: .txt, ttl: 60, data: .txt([])),
        ]
        let back = try DNSMessage.decode(m.encoded())
        #expect(back.answers.map(\.data) == [.txt([Array("v=spf1 ".utf8), Array("-all".utf8)]), .txt([])])
        #expect(DNSAnswer(response: back, question: m.questions[0]).status == .noError)
    }

    @Test("a query is what a resolver expects: RD and AD set, one question, an EDNS0 OPT of 1232 bytes")
    func query() throws {
        let q = DNSMessage.query(id: 0x1234, name: try DNSName("example.test"), type: .mx)
        #expect(q == hex("123401200001000000000001076578616d706c65047465737400000f00010000290" + "4d0000000000000"))
        let decoded = try DNSMessage.decode(q)
        #expect(decoded.questions == [Question(name: try DNSName("example.test"), type: .mx)])
        #expect(decoded.recursionDesired && !decoded.isResponse)
    }

    @Test("captured MX response: compressed names, preferences, the OPT record")
    func mx() throws {
        let m = try DNSMessage.decode(Captured.mx)
        #expect(m.id == 0x1234 && m.isResponse && m.recursionDesired && m.recursionAvailable && m.rcode == 0)
        #expect(m.answers.count == 2 && m.additional.first?.type == .opt)
        let a = DNSAnswer(response: m, question: m.questions[0])
        #expect(a.status == .noError && a.ttl == 300)
        #expect(a.mx.map { "\($0.preference) \($0.exchange)" } == ["10 mx.example.test.", "20 mx2.example.test."])
    }

    @Test("captured TXT response: strings kept apart, joined without separators")
    func txt() throws {
        let m = try DNSMessage.decode(Captured.txt)
        let a = DNSAnswer(response: m, question: m.questions[0])
        #expect(a.txtStrings == [[Array("v=spf1 ip4:127.0.0.1 ".utf8), Array("-all".utf8)]])
        #expect(a.txt == ["v=spf1 ip4:127.0.0.1 -all"])
    }

    @Test("captured AAAA response")
    func aaaa() throws {
        let m = try DNSMessage.decode(Captured.aaaa)
        #expect(DNSAnswer(response: m, question: m.questions[0]).addresses == ["::1"])
    }

    @Test("captured NXDOMAIN and NODATA: told apart, negative TTL from the SOA (RFC 2308)")
    func negative() throws {
        let nx = try DNSMessage.decode(Captured.nxdomain)
        let a = DNSAnswer(response: nx, question: nx.questions[0])
        #expect(a.status == .nxDomain && a.ttl == 60 && a.records.isEmpty)
        let nd = try DNSMessage.decode(Captured.nodata)
        let b = DNSAnswer(response: nd, question: nd.questions[0])
        #expect(b.status == .noData && b.ttl == 60)
    }

    @Test("encode and decode round-trip every record type")
    func roundTrip() throws {
        let n = try DNSName("x.example.test")
        var m = DNSMessage(id: 7, flags: DNSMessage.flagQR | DNSMessage.flagRD | DNSMessage.flagRA | DNSMessage.flagAD)
        m.questions = [Question(name: n, type: .a)]
        m.answers = [
            ResourceRecord(name: n, type: .a, ttl: 1, data: .a([127, 0, 0, 1])),
            ResourceRecord(name: n, type: .aaaa, ttl: 2, data: .aaaa([UInt8](repeating: 0, count: 15) + [1])),
            ResourceRecord(name: n, type: .mx, ttl: 3, data: .mx(preference: 5, exchange: n)),
            ResourceRecord(name: n, type: .txt, ttl: 4, data: .txt([[], Array("hello".utf8)])),
            ResourceRecord(name: n, type: .cname, ttl: 5, data: .cname(n)),
            ResourceRecord(name: n, type: .ptr, ttl: 6, data: .ptr(n)),
            ResourceRecord(name: n, type: .ns, ttl: 7, data: .ns(n)),
            ResourceRecord(name: n, type: .soa, ttl: 8, data: .soa(mname: n, rname: n, serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5)),
            ResourceRecord(name: n, type: .tlsa, ttl: 9, data: .tlsa(usage: 3, selector: 1, matchingType: 1, data: [0xAB, 0xCD])),
            ResourceRecord(name: n, type: RecordType(rawValue: 99), ttl: 10, data: .other([1, 2, 3])),
        ]
        let d = try DNSMessage.decode(m.encoded())
        #expect(d == m)
        #expect(d.authenticatedData)
    }

    @Test("hostile input is refused with the right error", arguments: [
        // a question whose name points at itself
        ("self pointer", "000081800001000000000000c00c00010001", DNSWireError.pointerLoop),
        ("forward pointer", "000081800001000000000000c00e0001000100", .pointerLoop),
        // label "a", then a pointer back to the start of the same name
        ("pointer cycle", "0000818000010000000000000161c00c00010001", .pointerLoop),
        ("pointer out of range", "000081800001000000000000c0ff00010001", .pointerLoop),
        ("label past the end", "0000818000010000000000003f616200010001", .truncated),
        ("extended label type", "000081800001000000000000410000010001", .badLabel),
        ("absurd counts", "00008180ffffffffffffffff00", .badCount),
        ("record data past the end", "00008180000000010000000000000100010000000" + "0ffff7f000001", .truncated),
        ("A record of 3 bytes", "000081800000000100000000000001000100000000000" + "37f0000", .badRData(.a)),
        ("trailing bytes", "00008180000000000000000000", .trailingBytes),
        ("too short", "0000", .truncated),
    ])
    func hostile(_ label: String, _ packet: String, _ expected: DNSWireError) {
        #expect(throws: expected, "\(label)") { try DNSMessage.decode(hex(packet)) }
    }

    @Test("a name longer than 255 bytes through a pointer is refused")
    func longViaPointers() {
        // The question: four 60-byte labels (245 bytes); an answer's owner: one more label, then a
        // pointer to the question's name: 306 bytes expanded.
        var m = hex("000081800001000100000000")
        for _ in 0..<4 { m += [60] + [UInt8](repeating: 0x61, count: 60) }
        m += [0, 0, 1, 0, 1]
        m += [60] + [UInt8](repeating: 0x62, count: 60) + [0xC0, 12]
        m += hex("00010001000000000004" + "7f000001")
        #expect(throws: DNSWireError.nameTooLong) { try DNSMessage.decode(m) }
        // The same with a short label is fine.
        var ok = Array(m[..<(12 + 245 + 4)])
        ok += [1, 0x62, 0xC0, 12] + hex("00010001000000000004" + "7f000001")
        #expect((try? DNSMessage.decode(ok))?.answers.first?.name.wire.count == 247)
    }

    @Test("every prefix and thousands of random mutations of real packets: an error or a message, never a crash")
    func fuzz() {
        var rng = SplitMix(seed: 0x7E57)
        var decoded = 0, refused = 0
        for packet in Captured.all {
            for n in 0..<packet.count {
                if (try? DNSMessage.decode(Array(packet[..<n]))) != nil { decoded += 1 } else { refused += 1 }
            }
            for _ in 0..<20_000 {
                var p = packet
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    let i = Int(rng.next() % UInt64(p.count))
                    switch rng.next() % 3 {
                    case 0: p[i] = UInt8(truncatingIfNeeded: rng.next())
                    case 1: p[i] ^= 1 << UInt8(rng.next() % 8)
                    default: p[i] = [0x00, 0xC0, 0xFF, 0x3F, 0x0C][Int(rng.next() % 5)]
                    }
                }
                if let m = try? DNSMessage.decode(p) {
                    decoded += 1
                    for q in m.questions { _ = DNSAnswer(response: m, question: q) }
                } else {
                    refused += 1
                }
            }
        }
        #expect(refused > 0 && decoded > 0)
    }
}

/// A small deterministic generator so the fuzz cases are the same every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
