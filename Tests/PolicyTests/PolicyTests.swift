// The session's decisions without sockets: every input the relay guard, the sender rule, the
// spool admission, SPF, DMARC and loop detection can see, and the reply each must give.

import Config
@testable import MailAuth
import Policy
import SMTP
import Spool
import Testing

func tables(_ senders: Configuration.SubmissionSenders = .ownDomain) throws -> RecipientResolver {
    var a = Configuration.LocalDomain(name: try Domain("example.test"), line: 1)
    a.submissionSenders = senders
    let b = Configuration.LocalDomain(name: try Domain("other.test"), line: 2)
    return RecipientResolver(domains: [.init(config: a), .init(config: b)]) { user, _ in user == "bob" || user == "alice" }
}

@Suite struct PolicyTests {
    /// The relay guard: nothing outside our domains without AUTH, whatever the resolution.
    @Test func relayGuard() throws {
        let bob = Destination.mailbox(user: "bob", domain: try Domain("example.test"))
        #expect(Policy.recipient(.deliver([bob]), recipient: "bob@example.test", authenticated: false) == .accept([bob]))
        #expect(Policy.recipient(.notLocal, recipient: "x@elsewhere.test", authenticated: true) == .accept([.remote("x@elsewhere.test")]))
        #expect(Policy.recipient(.notLocal, recipient: "x@elsewhere.test", authenticated: false) == .refuse(Reply(554, EnhancedStatus(5, 7, 1), "Relay access denied")))
        // A routing trick is refused even to an authenticated session.
        for auth in [false, true] {
            guard case .refuse(let r) = Policy.recipient(.refused("source route"), recipient: "@a:x@b", authenticated: auth) else {
                Issue.record("a routing trick accepted (authenticated: \(auth))")
                continue
            }
            #expect(r.code == 554 && r.status == EnhancedStatus(5, 7, 1))
            #expect(Policy.recipient(.unknownUser, recipient: "nobody@example.test", authenticated: auth) == .refuse(Reply(550, EnhancedStatus(5, 1, 1), "No such user here")))
            #expect(Policy.recipient(.aliasLoop, recipient: "loop@example.test", authenticated: auth) == .refuse(Reply(554, EnhancedStatus(5, 4, 6), "Alias loop or too deeply nested aliases")))
        }
    }

    /// End to end through the real resolver: a client that is not authenticated relays nowhere,
    /// by any spelling of an address outside our domains.
    @Test func noOpenRelayThroughTheResolver() throws {
        let t = try tables()
        for rcpt in ["x@elsewhere.test", "x@EXAMPLE.test.elsewhere.test", "\"x@example.test\"@elsewhere.test", "x%example.test@elsewhere.test", "@example.test:x@elsewhere.test", "x@[127.0.0.1]", "x@example.test@elsewhere.test"] {
            let d = Policy.recipient(t.resolve(rcpt), recipient: rcpt, authenticated: false)
            guard case .refuse(let r) = d else {
                Issue.record("\(rcpt) accepted without AUTH: \(d)")
                continue
            }
            #expect(r.isPermanent, "\(rcpt): \(r)")
        }
    }

    @Test func admission() {
        #expect(Policy.admission(condition: .ok, declaredSize: nil, fits: nil) == nil)
        #expect(Policy.admission(condition: .ok, declaredSize: 1000, fits: true) == nil)
        #expect(Policy.admission(condition: .ok, declaredSize: 1000, fits: nil) == nil)
        #expect(Policy.admission(condition: .ok, declaredSize: 1 << 30, fits: false) == Policy.storageError)
        #expect(Policy.admission(condition: .full, declaredSize: nil, fits: nil)?.code == 452)
        #expect(Policy.admission(condition: .stalled(12), declaredSize: nil, fits: nil) == Policy.spoolTimedOut)
        #expect(Policy.admission(condition: .failing("EIO"), declaredSize: 10, fits: true) == Policy.localError)
        #expect(Policy.admission(condition: .closed, declaredSize: nil, fits: nil)?.isTransient == true)
        // Every refusal is temporary: the client tries again later.
        for c: SpoolCondition in [.full, .stalled(1), .failing("x"), .closed] {
            #expect(Policy.refusal(for: c).isTransient)
            #expect(Policy.refusal(for: c).status?.klass == 4)
        }
    }

    @Test func senderRules() throws {
        let own = try tables(.ownAddress)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "bob@example.test", tables: own) == nil)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "Bob+list@EXAMPLE.test", tables: own) == nil)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "alice@example.test", tables: own) == Policy.senderNotOwned)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "", tables: own) == nil)
        let domain = try tables(.ownDomain)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "alice@example.test", tables: domain) == nil)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "bob@other.test", tables: domain) == Policy.senderNotOwned)
        let local = try tables(.localDomains)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "bob@other.test", tables: local) == nil)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "bob@elsewhere.test", tables: local) == Policy.senderNotOwned)
        #expect(Policy.senderRefusal(user: "bob@example.test", sender: "anyone@elsewhere.test", tables: try tables(.any)) == nil)
        // A user of no domain of ours, or not an address at all, may send as nobody.
        #expect(Policy.senderRefusal(user: "bob@stranger.test", sender: "bob@stranger.test", tables: domain) == Policy.senderNotOwned)
        #expect(Policy.senderRefusal(user: "bob", sender: "bob@example.test", tables: domain) == Policy.senderNotOwned)
    }

    @Test func spf() {
        let fail = SPFOutcome(result: .fail, domain: "a.test", decision: .text("matched -all"), explanation: "see https://a.test/spf")
        #expect(Policy.spfRefusal(fail, reject: true) == Reply(550, EnhancedStatus(5, 7, 23), "SPF fail: see https://a.test/spf"))
        #expect(Policy.spfRefusal(fail, reject: false) == nil)
        for r: SPFResult in [.pass, .none, .neutral, .softfail, .temperror, .permerror] {
            #expect(Policy.spfRefusal(SPFOutcome(result: r, domain: "a.test", decision: .text("x"), explanation: nil), reject: true) == nil, "\(r)")
        }
    }

    @Test func dmarc() {
        func outcome(_ result: DMARCResult, _ disposition: DMARCPolicy, published: DMARCPolicy? = nil) -> DMARCOutcome {
            DMARCOutcome(result: result, fromDomain: "a.test", publishedPolicy: published ?? disposition, disposition: disposition, spfAligned: false, dkimAligned: false, reason: "")
        }
        let rejected = Policy.DMARCDisposition.reject(Reply(550, EnhancedStatus(5, 7, 1), "Message rejected by the DMARC policy of a.test"))
        #expect(Policy.dmarc(outcome(.fail, .reject), action: .reject) == rejected)
        #expect(Policy.dmarc(outcome(.fail, .reject), action: .quarantineHeader) == .quarantine(header: "X-Tern-Quarantine: DMARC fail for a.test (p=reject)\r\n"))
        #expect(Policy.dmarc(outcome(.fail, .quarantine), action: .reject) == .quarantine(header: "X-Tern-Quarantine: DMARC fail for a.test (p=quarantine)\r\n"))
        #expect(Policy.dmarc(outcome(.fail, .reject), action: .none) == .accept)
        // pct= sampled it out: published reject, disposition none.
        #expect(Policy.dmarc(outcome(.fail, .none, published: .reject), action: .reject) == .accept)
        #expect(Policy.dmarc(outcome(.pass, .none), action: .reject) == .accept)
        #expect(Policy.dmarc(nil, action: .reject) == .accept)
    }

    @Test func loops() {
        #expect(Policy.loopRefusal(receivedFields: 50) == nil)
        #expect(Policy.loopRefusal(receivedFields: 51) == Policy.loopDetected)
        #expect(Policy.loopDetected.code == 554 && Policy.loopDetected.status == EnhancedStatus(5, 4, 6))
    }
}
