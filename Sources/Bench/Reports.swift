// Text and JSON renderings of the ternbench reports (no Foundation needed).

func fixed(_ v: Double, _ digits: Int = 1) -> String {
    guard v.isFinite else { return "0" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (v * scale).rounded() / scale
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
        if digits == 0 { s = String(s[..<dot]) }
    }
    return s
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

extension LatencySummary {
    func text(_ name: String) -> String {
        "  \(name.padding(11))  p50 \(ms(p50))  p90 \(ms(p90))  p99 \(ms(p99))  max \(ms(max))  (n=\(count))"
    }

    func ms(_ us: UInt64) -> String { fixed(Double(us) / 1000, 3) + " ms" }

    var json: String {
        "{\"count\":\(count),\"p50_ms\":\(fixed(Double(p50) / 1000, 3)),\"p90_ms\":\(fixed(Double(p90) / 1000, 3)),\"p99_ms\":\(fixed(Double(p99) / 1000, 3)),\"max_ms\":\(fixed(Double(max) / 1000, 3))}"
    }
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

extension SendReport {
    public var cpuMicrosecondsPerMessage: (user: Double, system: Double) {
        let n = Double(max(accepted, 1))
        return (userCPU * 1e6 / n, systemCPU * 1e6 / n)
    }

    public var text: String {
        let cpu = cpuMicrosecondsPerMessage
        var lines = [
            "ternbench send: \(accepted)/\(messages) messages accepted in \(fixed(elapsed, 3)) s",
            "  throughput   \(fixed(messagesPerSecond, 1)) msg/s, \(fixed(megabytesPerSecond, 2)) MB/s (\(size) bytes/message)",
            "  client CPU   \(fixed(cpu.user, 2)) µs user + \(fixed(cpu.system, 2)) µs system per message",
            "latency (connect = TCP connect to 220 greeting; transaction = MAIL to final reply;",
            "         end of data = final dot or last BDAT chunk written to final reply):",
            connect.text("connect"),
            transaction.text("transaction"),
            dataEnd.text("end of data"),
        ]
        if handshakes > 0 { lines.insert("  tls          \(handshakes) handshakes, \(verified) with a verified certificate", at: 3) }
        if errors.isEmpty {
            lines.append("errors: none")
        } else {
            lines.append("errors:")
            for (k, v) in errors.sorted(by: { $0.key < $1.key }) { lines.append("  \(k): \(v)") }
        }
        return lines.joined(separator: "\n")
    }

    public var json: String {
        let cpu = cpuMicrosecondsPerMessage
        let errs = errors.sorted(by: { $0.key < $1.key }).map { "\(jsonString($0.key)):\($0.value)" }.joined(separator: ",")
        return "{\"messages\":\(messages),\"accepted\":\(accepted),\"size\":\(size),\"elapsed_s\":\(fixed(elapsed, 4)),"
            + "\"messages_per_s\":\(fixed(messagesPerSecond, 1)),\"mb_per_s\":\(fixed(megabytesPerSecond, 3)),"
            + "\"client_cpu_us_per_msg\":{\"user\":\(fixed(cpu.user, 3)),\"system\":\(fixed(cpu.system, 3))},"
            + "\"latency\":{\"connect\":\(connect.json),\"transaction\":\(transaction.json),\"end_of_data\":\(dataEnd.json)},"
            + "\"tls\":{\"handshakes\":\(handshakes),\"verified\":\(verified)},"
            + "\"errors\":{\(errs)}}"
    }
}

extension SinkCounts {
    public func text(elapsed: Double, since previous: SinkCounts? = nil, interval: Double? = nil) -> String {
        var s = "ternbench sink: \(messages) messages, \(recipients) recipients, \(bytes) bytes, \(sessions) sessions (\(open) open)"
        if tempfailed + permfailed > 0 { s += ", \(tempfailed) tempfailed, \(permfailed) permfailed" }
        if let p = previous, let i = interval, i > 0 {
            s += ", \(fixed(Double(messages - p.messages) / i, 1)) msg/s"
        } else if elapsed > 0 {
            s += ", \(fixed(Double(messages) / elapsed, 1)) msg/s average over \(fixed(elapsed, 1)) s"
            if firstToLast > 0 { s += "; \(fixed(Double(messages - 1) / firstToLast, 1)) msg/s from the first message to the last (\(fixed(firstToLast, 3)) s)" }
        }
        return s
    }

    public var json: String {
        "{\"messages\":\(messages),\"recipients\":\(recipients),\"bytes\":\(bytes),\"sessions\":\(sessions),\"open\":\(open),\"tempfailed\":\(tempfailed),\"permfailed\":\(permfailed),"
            + "\"first_to_last_s\":\(fixed(firstToLast, 4)),\"messages_per_s_first_to_last\":\(fixed(firstToLast > 0 ? Double(messages - 1) / firstToLast : 0, 1))}"
    }
}
