#!/usr/bin/env python3
"""N sessions at once, each uploading one message of SIZE bytes to HOST:PORT (asyncio, pipelined
MAIL/RCPT/DATA, the body generated as it is sent so the client holds none of it). Each body is
lines that name the message and the line number; its SHA-256 is printed with its Message-ID so
the delivered copies can be checked byte for byte.
Usage: uploads.py HOST PORT N SIZE RCPT   (prints "ID SHA256 REPLY" per message, then a summary)"""
import asyncio
import hashlib
import resource
import sys

host, port, n, size, rcpt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


connected = [0]


async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise EOFError("server closed")
        if line[3:4] != b"-":
            return line.decode().strip()


async def one(i, start):
    mid = f"<upload-{i}@uploads.test>"
    header = f"From: u{i}@uploads.test\r\nTo: {rcpt}\r\nSubject: upload {i}\r\nMessage-ID: {mid}\r\n\r\n".encode()
    h = hashlib.sha256()
    r, w = await asyncio.open_connection(host, port, limit=1 << 20)
    await reply(r)
    w.write(b"EHLO uploads.test\r\n")
    await reply(r)
    connected[0] += 1
    await start.wait()
    w.write(f"MAIL FROM:<u{i}@uploads.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
    for _ in range(3):
        await reply(r)
    w.write(header)
    h.update(header)
    sent = len(header)
    line_no = 0
    while sent < size:
        chunk = bytearray()
        while len(chunk) < 65536 and sent + len(chunk) < size:
            chunk += f"message {i:06d} line {line_no:09d} ".encode() + b"x" * 40 + b"\r\n"
            line_no += 1
        h.update(chunk)
        w.write(bytes(chunk))
        sent += len(chunk)
        await w.drain()
        # Yield after every chunk: all sessions are in the middle of their bodies at once (a
        # socket that takes everything would otherwise let one session send all of its body).
        await asyncio.sleep(0)
    w.write(b".\r\n")
    await w.drain()
    final = await reply(r)
    w.write(b"QUIT\r\n")
    try:
        await reply(r)
    except EOFError:
        pass
    w.close()
    return mid, h.hexdigest(), final


async def main():
    start = asyncio.Event()
    sem = asyncio.Semaphore(200)  # connect in waves (the listen backlog), upload all at once

    async def guarded(i):
        async with sem:
            pass
        return await one(i, start)

    tasks = [asyncio.create_task(guarded(i)) for i in range(n)]
    # Every session connected and greeted before any upload starts (or one failed).
    while connected[0] < n and not any(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = 0
    for res in results:
        if isinstance(res, Exception):
            print(f"error {res!r}")
            continue
        mid, digest, final = res
        print(mid, digest, final)
        ok += final.startswith("250")
    print(f"summary accepted={ok} of {n}", flush=True)


asyncio.run(main())
