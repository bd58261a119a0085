// A private CA and certificates signed by it, made with the openssl command, for TLS tests.
import Foundation

public enum TestCertificates {
    public struct Failed: Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes `DIR/ca.pem` (and its key), then for each (PATH, names): `DIR/PATH.pem` (the leaf,
    /// with the names as SANs, the first as CN) and `DIR/PATH.key`. P-256 keys, valid two days.
    public static func make(in dir: String, _ leaves: [(path: String, names: [String])]) throws {
        var script = """
            set -e
            cd '\(dir)'
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=Tern Test CA' 2>/dev/null

            """
        for (i, leaf) in leaves.enumerated() {
            let sans = leaf.names.map { "DNS:\($0)" }.joined(separator: ",")
            script += """
                mkdir -p "$(dirname '\(leaf.path)')"
                printf 'subjectAltName=\(sans)\\n' > leaf\(i).ext
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '\(leaf.path).key' -out leaf\(i).csr -subj '/CN=\(leaf.names[0])' 2>/dev/null
                openssl x509 -req -in leaf\(i).csr -CA ca.pem -CAkey ca.key -CAcreateserial -out '\(leaf.path).pem' -days 2 -extfile leaf\(i).ext 2>/dev/null

                """
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw Failed(description: "openssl could not make the test certificates in \(dir)") }
    }
}
