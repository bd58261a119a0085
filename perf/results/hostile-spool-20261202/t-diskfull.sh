#!/bin/bash
# Disk full during load: spool on a 64 MB ext4, filled by a filler file at t=5s, freed at t=20s.
source /tmp/hostile-findings/lib.sh
D=/tmp/tfull; umount /mnt/t 2>/dev/null; rm -rf $D /tmp/img; mkdir -p /mnt/t
truncate -s 64M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt/t
mkenv $D 2610 /mnt/t/spool; mkbox $D rcpt
start $D
$BIN/ternbench send --server 127.0.0.1:2610 --sessions 10 --size 300000 --duration 35 --to rcpt@example.test --message-ids $D/acked.txt > $D/bench.out 2>&1 &
B=$!
sleep 5; dd if=/dev/zero of=/mnt/t/filler bs=1M 2>/dev/null; sync; df -h /mnt/t | tail -1
sleep 15; rm /mnt/t/filler; sync; df -h /mnt/t | tail -1
wait $B
grep -E 'accepted|errors|^  [0-9]{3}|4[0-9][0-9]' $D/bench.out | head
waitempty $D 60
grep -E 'spool|reserve|refused' $D/ternd.log | grep -v 'queued' | sed 's/^ternd\[[0-9]*\]: //' | sort | uniq -c | sort -rn | head -15
check $D rcpt $D/acked.txt
stopd $D
