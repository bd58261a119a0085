#!/bin/bash
# A message whose final dot was sent and which waits for its 250 when ternd gets SIGTERM is answered
# "421 4.3.2 Service shutting down" - and is then stored anyway and delivered after the restart.
# (Deterministic with a frozen spool disk; also seen without freezing, see t-restarts.sh TERM.)
source /tmp/hostile-findings/lib.sh
D=/tmp/f8; umount /mnt/t 2>/dev/null; rm -rf $D /tmp/img; mkdir -p /mnt/t
truncate -s 256M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt/t
mkenv $D 2616 /mnt/t/spool; mkbox $D rcpt
start $D
fsfreeze -f /mnt/t
(swaks --server 127.0.0.1:2616 --from s@example.test --to rcpt@example.test --header 'Message-ID: <f8.one@x>' --body 'told 421' 2>&1 | grep -E '^<\*\*|^<-  250 2.0.0|^<-  421' | sed "s/^/[client $(date +%T)] /") &
sleep 3
kill -TERM $(cat $D/pid); echo "SIGTERM $(date +%T)"
sleep 12
echo "ternd alive 12 s after SIGTERM (disk frozen): $(kill -0 $(cat $D/pid) 2>/dev/null && echo yes || echo no)"
fsfreeze -u /mnt/t; echo "thawed $(date +%T)"
for i in $(seq 1 50); do kill -0 $(cat $D/pid) 2>/dev/null || break; sleep 0.2; done
sed 's/^ternd\[[0-9]*\]: //' $D/ternd.log | grep -v -E '^info: (io|dns|outbound|dmarc|tls|listening)'
start $D >/dev/null; sleep 3
echo "delivered copies of <f8.one@x>: $(grep -l 'f8.one@x' $D/mail/example.test/rcpt/new/* 2>/dev/null | wc -l)"
stopd $D; umount /mnt/t
