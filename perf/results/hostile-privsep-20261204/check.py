#!/usr/bin/env python3
# every Message-ID in acked.txt delivered exactly once under mail/
import os, re, collections, sys
cnt = collections.Counter()
for root, _, files in os.walk(sys.argv[2] if len(sys.argv) > 2 else "/var/tmp/hostile-run/mail"):
    for f in files:
        with open(os.path.join(root, f), "rb") as fh:
            head = fh.read(8192)
        m = re.search(rb"Message-ID: <([^>]+)>", head, re.I)
        if m: cnt[m.group(1).decode()] += 1
import sys
acked = [l.strip() for l in open(sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/hostile-run/acked.txt") if l.strip()]
lost = [a for a in acked if cnt[a] == 0]; dup = [a for a in acked if cnt[a] > 1]
print("acked", len(acked), "lost", len(lost), "dup", len(dup), lost[:3], dup[:3])
