#!/bin/bash
# Frozen spool disk under continuous load (deliveries running): is the stall noticed (MAIL -> 451)?
source /tmp/hostile-findings/lib.sh
D=/tmp/f7b; umount /mnt/t 2>/dev/null; rm -rf $D /tmp/img; mkdir -p /mnt/t
truncate -s 256M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt/t
mkenv $D 2614 /mnt/t/spool; mkbox $D rcpt
start $D
python3 /tmp/hostile-findings/sender.py 2614 10 200000 25 $D/replies.txt &
S=$!
sleep 5; fsfreeze -f /mnt/t; echo "frozen $(date +%T)"
sleep 10
PID=$(cat $D/pid)
for t in /proc/$PID/task/*; do n=$(cat $t/comm); [ "$n" = tern-spool ] && { echo "tern-spool kernel stack:"; head -8 $t/stack; }; done
echo "--- new session 10 s into the freeze:"
timeout 8 swaks --server 127.0.0.1:2614 --from s@example.test --to rcpt@example.test --body z 2>&1 | grep -E '^<-  250 2.1.0|^<\*\*|^<-  354' ; echo "$(date +%T)"
sleep 2; fsfreeze -u /mnt/t; echo "thawed $(date +%T)"
wait $S
awk '{sub(/queued_as_.*/,"queued",$3); print $2, $3}' $D/replies.txt | sort | uniq -c
sed 's/^ternd\[[0-9]*\]: //' $D/ternd.log | grep -v -E 'info|queued|delivered='
waitempty $D 60
awk '$2==250{print $1}' $D/replies.txt > $D/acked.txt
check $D rcpt $D/acked.txt
stopd $D; umount /mnt/t
