// Delivery status notifications (RFC 3464): a multipart/report to the envelope sender when
// deliveries fail for good. Never for the null sender (no bounce of a bounce), never for a
// recipient that asked NOTIFY=NEVER or a NOTIFY without FAILURE.

import Delivery
import Glibc
import SMTP
import Spool

public struct FailedDelivery: Sendable, Equatable {
    /// What the report says of a delivery (RFC 3464 §2.3.3 Action).
    public enum Action: String, Sendable, Equatable {
        case failed
        /// Not a failure yet: still being retried, and the sender is told of the delay.
        case delayed
        /// Delivered here (NOTIFY=SUCCESS).
        case delivered
        /// Handed to a next hop that sends no reports (NOTIFY=SUCCESS, the next hop lacks DSN).
        case relayed
    }

    public var delivery: SpoolDelivery
    /// An enhanced status, e.g. "5.0.0", or "4.4.7" for an expired message.
    public var status: String
    public var diagnostic: String
    public var action: Action
    public var delayed: Bool { action == .delayed }
    var isSuccess: Bool { action == .delivered || action == .relayed }

    public init(delivery: SpoolDelivery, status: String, diagnostic: String, delayed: Bool = false) {
        self.init(delivery: delivery, status: status, diagnostic: diagnostic, action: delayed ? .delayed : .failed)
    }

    public init(delivery: SpoolDelivery, status: String, diagnostic: String, action: Action) {
        self.delivery = delivery
        self.status = status
        self.diagnostic = diagnostic
        self.action = action
    }

    /// Sent on to another address than the one the sender used (an alias or `.forward`-style
    /// expansion to a remote address): the report names that address, expanded from the original.
    var isForwarded: Bool {
        delivery.kind == .remote && delivery.destination.lowercased() != delivery.recipient.lowercased()
    }

    /// The address the report is about: where delivery was tried.
    var finalRecipient: String { isForwarded ? delivery.destination : delivery.recipient }
}

public enum Bounce {
    static let notifyNever: UInt8 = 1
    static let notifyFailure: UInt8 = 4
    static let notifyDelay: UInt8 = 8
    static let notifySuccess: UInt8 = 2

    /// Whether the sender asked to hear of this delivery's success (NOTIFY=SUCCESS, RFC 3461;
    /// never without it: success reports are only ever on request).
    public static func wantsSuccess(_ d: SpoolDelivery) -> Bool {
        d.notify & notifyNever == 0 && d.notify & notifySuccess != 0
    }

    /// Whether a failed delivery should be reported to the sender.
    public static func wanted(_ d: SpoolDelivery) -> Bool {
        if d.notify == 0 { return true }
        return d.notify & notifyNever == 0 && d.notify & notifyFailure != 0
    }

    /// Whether the sender wants to hear of a delay: NOTIFY=DELAY, or no NOTIFY at all (RFC 3461
    /// §4.1 leaves that to the MTA).
    public static func wantsDelay(_ d: SpoolDelivery) -> Bool {
        if d.notify == 0 { return true }
        return d.notify & notifyNever == 0 && d.notify & notifyDelay != 0
    }

    /// The header section of a message (up to the empty line), CRLF-terminated.
    static func headers(_ body: [UInt8]) -> [UInt8] {
        var i = 0
        while i < body.count {
            guard let lf = body[i...].firstIndex(of: 10) else { return body + [13, 10] }
            if lf == i || (lf == i + 1 && body[i] == 13) { return Array(body[..<i]) }
            i = lf + 1
        }
        return body
    }

    /// A report on an internationalised message (RFC 6533): it came with SMTPUTF8, or an address
    /// in it is not ASCII. Its parts are then message/global-*, and it is sent with SMTPUTF8.
    public static func isGlobal(original: SpoolMessage, failed: [FailedDelivery]) -> Bool {
        original.bodyFlags & 0x80 != 0 || !isASCII(original.sender)
            || failed.contains { !isASCII($0.delivery.recipient) || !isASCII($0.finalRecipient) }
    }

    static func isASCII(_ s: String) -> Bool { s.utf8.allSatisfy { $0 < 0x80 } }

    /// A value the client gave (ENVID, ORCPT, decoded from xtext) as it may stand in a report's
    /// field: every control character and space (CR and LF above all: they would add lines or a
    /// whole MIME part) written back as xtext `+XX` (RFC 3461 §4), the rest as it is. The one
    /// place a client's words enter a report.
    static func fieldText(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            if u.value < 0x21 || u.value == 0x7F || (u.value >= 0x80 && u.value < 0xA0) {
                let hex = String(u.value, radix: 16, uppercase: true)
                out += "+" + (hex.count < 2 ? "0" : "") + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// RFC 3464's address type for an address: "rfc822", or "utf-8" (RFC 6533) when it is not ASCII.
    static func addressType(_ address: String) -> String { isASCII(address) ? "rfc822" : "utf-8" }

    /// Builds the DSN for `failed` deliveries of `original`, as a complete message: a failure
    /// report, or a delay warning when they are all `delayed` (`retryUntil`: when Tern gives up).
    public static func message(
        original: SpoolMessage, failed: [FailedDelivery], hostname: String, now: time_t = time(nil), retryUntil: time_t? = nil
    ) -> [UInt8] {
        let delayed = !failed.isEmpty && failed.allSatisfy(\.delayed)
        let success = !failed.isEmpty && failed.allSatisfy(\.isSuccess)
        let kind = success ? "success" : delayed ? "delay" : "bounce"
        let global = isGlobal(original: original, failed: failed)
        let boundary = "\(String(original.id, radix: 16))/\(hostname)"
        let date = rfc5322Date(now)
        var text = """
            From: Mail Delivery System <MAILER-DAEMON@\(hostname)>\r
            To: <\(original.sender)>\r
            Subject: \(success ? "Successful Mail Delivery Report" : delayed ? "Delayed Mail (still being retried)" : "Undelivered Mail Returned to Sender")\r
            Date: \(date)\r
            Message-ID: <\(String(original.id, radix: 16)).\(kind)\(success ? ".\(now)" : "")@\(hostname)>\r
            Auto-Submitted: auto-replied\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=delivery-status;\r
            \tboundary="\(boundary)"\r
            \r
            This is a MIME-encapsulated message.\r
            \r
            --\(boundary)\r
            Content-Type: text/plain; charset=utf-8\r
            \r
            This is the mail system at host \(hostname).\r
            \r
            \(success
                ? "Your message was delivered to the recipients below, as you asked (NOTIFY=SUCCESS);\r\nthose marked relayed went on to a server that sends no delivery reports."
                : delayed
                ? "Your message has not been delivered yet to one or more recipients.\r\nThis is a warning only: delivery is still being retried" + (retryUntil.map { " until \(rfc5322Date($0))" } ?? "") + "."
                : "Your message could not be delivered to one or more recipients.")\r
            \r

            """
        for f in failed {
            let expanded = f.isForwarded ? " (expanded from <\(f.delivery.recipient)>)" : ""
            // A success says so (not where the message went: a mailbox path is not the sender's business).
            let what = f.action == .delivered ? "delivered" : f.action == .relayed ? "relayed to a server that sends no delivery reports" : f.diagnostic
            text += "<\(f.finalRecipient)>\(expanded): \(what)\r\n"
        }
        text += """
            \r
            --\(boundary)\r
            Content-Type: \(global ? "message/global-delivery-status" : "message/delivery-status")\r
            \r
            Reporting-MTA: dns; \(hostname)\r
            X-Tern-Queue-ID: \(QueueID.text(original.id))\r
            Arrival-Date: \(rfc5322Date(time_t(original.arrival)))\r

            """
        if !original.envelopeID.isEmpty { text += "Original-Envelope-Id: \(fieldText(original.envelopeID))\r\n" }
        for f in failed {
            text += "\r\nFinal-Recipient: \(addressType(f.finalRecipient)); \(f.finalRecipient)\r\n"
            if !f.delivery.originalRecipient.isEmpty {
                text += "Original-Recipient: \(fieldText(f.delivery.originalRecipient))\r\n"
            } else if f.isForwarded {
                // The address the sender used, as an ORCPT a forwarding MTA adds (RFC 3461 §4.2).
                text += "Original-Recipient: \(addressType(f.delivery.recipient));\(f.delivery.recipient)\r\n"
            }
            text += "Action: \(f.action.rawValue)\r\nStatus: \(f.status)\r\n"
            let diagnostic = f.diagnostic.filter { $0 != "\r" && $0 != "\n" }
            if f.isSuccess {
                // What the last hop said, when there was one (a remote 250).
                if let remote = RecipientOutcome.remoteReply(in: diagnostic) {
                    text += "Remote-MTA: dns; \(remote.host)\r\nDiagnostic-Code: smtp; \(remote.reply)\r\n"
                }
            } else if let remote = RecipientOutcome.remoteReply(in: diagnostic) {
                // The receiver's own words: RFC 3464's "smtp" diagnostic type, and who said them.
                text += "Remote-MTA: dns; \(remote.host)\r\nDiagnostic-Code: smtp; \(remote.reply)\r\n"
            } else {
                text += "Diagnostic-Code: x-tern; \(diagnostic)\r\n"
            }
            text += "Last-Attempt-Date: \(date)\r\n"
            if f.delayed, let retryUntil { text += "Will-Retry-Until: \(rfc5322Date(retryUntil))\r\n" }
        }
        // RET=FULL returns the whole message with a failure; otherwise (RET=HDRS or none, a delay,
        // a success: RFC 3461 §4.3) the headers only.
        let full = original.ret == 2 && !delayed && !success
        let returned = full ? (global ? "message/global" : "message/rfc822") : (global ? "message/global-headers" : "text/rfc822-headers")
        text += "\r\n--\(boundary)\r\nContent-Type: \(returned)\r\n\r\n"
        var out = Array(text.utf8)
        out += full ? original.body : headers(original.body)
        if out.last != 10 { out += [13, 10] }
        out += Array("\r\n--\(boundary)--\r\n".utf8)
        return out
    }
}
