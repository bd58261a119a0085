#!/bin/bash
# Frozen spool disk: is a new session greeted? Does MAIL get 451 once the writer waited 5 s?
source /tmp/hostile-findings/lib.sh
D=/tmp/f7; umount /mnt/t 2>/dev/null; rm -rf $D /tmp/img; mkdir -p /mnt/t
truncate -s 256M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt/t
mkenv $D 2613 /mnt/t/spool; mkbox $D rcpt
start $D
fsfreeze -f /mnt/t; echo "frozen (idle ternd) $(date +%T.%N)"
timeout 5 swaks --server 127.0.0.1:2613 --from s@example.test --to rcpt@example.test --body x 2>&1 | grep -E '^<|^\*\*\*' | head -8; echo "rc=$? $(date +%T.%N)"
echo "--- a message in flight now (background), then a new session 8 s later"
(timeout 60 swaks --server 127.0.0.1:2613 --from s@example.test --to rcpt@example.test --body y 2>&1 | grep -E '^<|^\*\*\*' | sed 's/^/[bg] /'; echo "[bg] done $(date +%T)") &
sleep 8
timeout 5 swaks --server 127.0.0.1:2613 --from s@example.test --to rcpt@example.test --body z 2>&1 | grep -E '^<|^\*\*\*' | head -8; echo "rc=$? $(date +%T.%N)"
sleep 25
fsfreeze -u /mnt/t; echo "thawed $(date +%T)"
wait
sed 's/^ternd\[[0-9]*\]: //' $D/ternd.log | grep -v info
stopd $D; umount /mnt/t
