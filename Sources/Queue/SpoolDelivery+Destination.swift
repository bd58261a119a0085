// How a resolved destination is kept in the spool, and read back.
import Config
import Spool

extension SpoolDelivery {
    /// A delivery of `recipient` (the address as given) to a resolved destination.
    public init(_ destination: Destination, recipient: String, notify: UInt8 = 0, originalRecipient: String = "") {
        switch destination {
        case .mailbox(let user, let domain):
            self.init(kind: .mailbox, recipient: recipient, destination: "\(user)@\(domain.unicode)", notify: notify, originalRecipient: originalRecipient)
        case .remote(let address):
            self.init(kind: .remote, recipient: recipient, destination: address, notify: notify, originalRecipient: originalRecipient)
        case .pipe(let argv):
            // An argument vector kept as one string: the arguments joined by NUL, which none can hold.
            self.init(kind: .pipe, recipient: recipient, destination: argv.joined(separator: "\u{0}"), notify: notify, originalRecipient: originalRecipient)
        }
    }

    /// The argument vector of a pipe delivery.
    public var pipeArguments: [String] {
        destination.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
    }
}
