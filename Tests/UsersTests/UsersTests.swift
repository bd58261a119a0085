import Config
import Glibc
import Testing

@testable import Users

func hex(_ b: [UInt8]) -> String { b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

@Suite("scrypt and users files")
struct UsersTests {
    /// RFC 7914 §12: the first three vectors (the fourth, N = 2^20, takes a second and 1 GiB).
    @Test("RFC 7914 §12 known-answer vectors", arguments: [
        ("", "", UInt64(16), UInt64(1), UInt64(1),
         "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"),
        ("password", "NaCl", 1024, 8, 16,
         "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"),
        ("pleaseletmein", "SodiumChloride", 16384, 8, 1,
         "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"),
    ])
    func vectors(password: String, salt: String, n: UInt64, r: UInt64, p: UInt64, expected: String) throws {
        let key = try Scrypt.derive(password: Array(password.utf8), salt: Array(salt.utf8), n: n, r: r, p: p, length: 64)
        #expect(hex(key) == expected)
    }

    @Test("hashes: a round trip through the string; the right password matches, others do not")
    func hashes() throws {
        let h = try PasswordHash.make(password: Array("correct horse".utf8), logN: 10)
        let s = h.description
        #expect(s.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        let back = try PasswordHash(parsing: s)
        #expect(back == h)
        #expect(back.matches(Array("correct horse".utf8)))
        #expect(!back.matches(Array("correct horsf".utf8)))
        #expect(!back.matches([]))
        let other = try PasswordHash.make(password: Array("correct horse".utf8), logN: 10)
        #expect(other.salt != h.salt, "a fresh salt each time")
        for bad in ["", "plain", "$scrypt$ln=14,r=8$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==", "$scrypt$ln=40,r=8,p=1$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
                    "$bcrypt$ln=14,r=8,p=1$c2FsdA==$aGFzaA==", "$scrypt$ln=14,r=8,p=1$***$aGFzaGhhc2hoYXNoaGFzaA=="] {
            #expect(throws: PasswordError.self, "\(bad)") { try PasswordHash(parsing: bad) }
        }
    }

    @Test("users files: parse, look up case-insensitively, set, remove; comments kept; errors name file and line")
    func file() throws {
        let h = try PasswordHash.make(password: Array("pw".utf8), logN: 4)
        let text = "# users of example.test\n\nAlice \(h)\nbob\t\(h)\n"
        var f = try UsersFile.parse(text, file: "users.example.test")
        #expect(f.users == ["Alice", "bob"])
        #expect(f.hash(for: "alice") == h && f.hash(for: "ALICE") == h && f.hash(for: "carol") == nil)
        #expect(f.text == "# users of example.test\n\nAlice \(h)\nbob \(h)\n", "user lines are written back with one space")
        #expect(f.set("carol", h) == true)
        #expect(f.set("BOB", h) == false, "a second add replaces the password")
        #expect(f.remove("alice") && !f.remove("alice"))
        #expect(f.users == ["bob", "carol"])
        #expect(f.text == "# users of example.test\n\nbob \(h)\ncarol \(h)\n")

        do {
            _ = try UsersFile.parse("alice \(h)\nbob\nalice \(h)\nx@y \(h)\ncarol $scrypt$junk\n", file: "u.txt")
            Issue.record("accepted a bad file")
        } catch {
            #expect(error.errors.map(\.description) == [
                "u.txt:2: expected LOCALPART HASH (made by `ternctl user add`)",
                "u.txt:3: user 'alice' is listed twice",
                "u.txt:4: invalid user 'x@y': the local part may not contain spaces, control characters, '@', '/', '\"' or '#'",
                "u.txt:5: user 'carol': not a Tern password hash: expected $scrypt$ln=N,r=R,p=P$SALT$HASH",
            ])
        }
    }

    @Test("atomic write: the file is replaced whole, keeps its mode, leaves no temporary file")
    func write() throws {
        let dir = "/tmp/tern-users-\(getpid())"
        mkdir(dir, 0o700)
        defer { _ = system("rm -rf \(dir)") }
        let path = "\(dir)/users"
        var f = try UsersFile.load(path, missingIsEmpty: true)
        #expect(f.users.isEmpty)
        #expect(throws: ConfigErrors.self) { try UsersFile.load(path, missingIsEmpty: false) }
        f.set("alice", try PasswordHash.make(password: Array("pw".utf8), logN: 4))
        try f.write(to: path)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o640)
        chmod(path, 0o600)
        f.set("bob", try PasswordHash.make(password: Array("pw2".utf8), logN: 4))
        try f.write(to: path)
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let back = try UsersFile.load(path, missingIsEmpty: false)
        #expect(back.users == ["alice", "bob"] && back.hash(for: "bob")!.matches(Array("pw2".utf8)))
        #expect(system("ls -a \(dir) | grep -q tmp") != 0)
    }
}
