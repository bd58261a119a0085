#!/usr/bin/env python3
"""Drives a Tern server with Python's smtplib: plain, SMTPUTF8, BDAT by hand, pipelining by hand.
Usage: smtplib_client.py PORT CASE. Exits non-zero with a message on any failure."""
import smtplib
import socket
import sys

port = int(sys.argv[1])
case = sys.argv[2]


def check(cond, msg):
    if not cond:
        print("FAIL:", msg)
        sys.exit(1)


if case == "plain":
    with smtplib.SMTP("127.0.0.1", port, local_hostname="py.test") as s:
        code, _ = s.ehlo()
        check(code == 250, "ehlo")
        for ext in ("pipelining", "8bitmime", "smtputf8", "size", "enhancedstatuscodes", "chunking"):
            check(s.has_extn(ext), "extension " + ext)
        refused = s.sendmail("alice@example.org", ["bob@example.test", "carol@example.test"],
                             b"Subject: smtplib\r\n\r\n.dot line\r\nline two\r\n")
        check(refused == {}, "refused %r" % refused)
    print("OK")
elif case == "utf8":
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo()
        msg = "Subject: grüße\r\n\r\nHallo Jöran\r\n".encode()
        s.sendmail("jöran@bücher.example", ["用户@例子.广告"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    print("OK")
elif case == "utf8-refused":
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo()
        s.command_encoding = "utf-8"
        code, resp = s.docmd("MAIL", "FROM:<jöran@bücher.example>")
        check(code == 553 and resp.startswith(b"5.6.7"), "got %d %r" % (code, resp))
    print("OK")
elif case == "bdat":
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo()
        check(s.docmd("MAIL", "FROM:<alice@example.org> BODY=BINARYMIME")[0] == 250, "mail")
        check(s.docmd("RCPT", "TO:<bob@example.test>")[0] == 250, "rcpt")
        part1 = b"Subject: bdat\r\n\r\n"
        part2 = b"binary \x00\xff\r\n.\r\nnot the end\n"
        s.send(b"BDAT %d\r\n" % len(part1) + part1)
        code, resp = s.getreply()
        check(code == 250, "chunk 1: %d %r" % (code, resp))
        s.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        code, resp = s.getreply()
        check(code == 250, "chunk 2: %d %r" % (code, resp))
    print("OK")
elif case == "pipeline":
    # Everything in one write; all replies must come back, in order.
    sock = socket.create_connection(("127.0.0.1", port))
    f = sock.makefile("rb")
    check(f.readline().startswith(b"220"), "greeting")
    sock.sendall(b"EHLO py.test\r\n")
    while True:
        line = f.readline()
        if line[3:4] == b" ":
            break
    sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n")
    codes = [f.readline()[:3] for _ in range(4)]
    check(codes == [b"250", b"250", b"250", b"354"], "codes %r" % codes)
    sock.sendall(b"pipelined\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
    codes = [f.readline()[:3] for _ in range(4)]
    check(codes == [b"250", b"250", b"250", b"354"], "codes %r" % codes)
    sock.sendall(b"second\r\n.\r\nQUIT\r\n")
    codes = [f.readline()[:3] for _ in range(2)]
    check(codes == [b"250", b"221"], "codes %r" % codes)
    print("OK")
else:
    print("unknown case", case)
    sys.exit(2)
