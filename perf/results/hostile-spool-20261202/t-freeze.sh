#!/bin/bash
# Freeze the spool's file system during load for 40 s.
source /tmp/hostile-findings/lib.sh
D=/tmp/tfreeze; umount /mnt/t 2>/dev/null; rm -rf $D /tmp/img; mkdir -p /mnt/t
truncate -s 256M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt/t
mkenv $D 2612 /mnt/t/spool; mkbox $D rcpt
start $D
python3 /tmp/hostile-findings/sender.py 2612 10 200000 60 $D/replies.txt &
S=$!
sleep 5; fsfreeze -f /mnt/t; echo "frozen at $(date +%T)"
# a new session during the freeze: greeted?
sleep 10; timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2612; head -c 60 <&3' ; echo " <- greeting during freeze"
sleep 30; fsfreeze -u /mnt/t; echo "thawed at $(date +%T)"
wait $S
awk '{sub(/queued_as_.*/,"queued",$3); print $2, $3}' $D/replies.txt | sort | uniq -c
waitempty $D 90
awk '$2==250{print $1}' $D/replies.txt > $D/acked.txt
awk '$2!=250 && $1!="-"{print $1}' $D/replies.txt > $D/refused.txt
check $D rcpt $D/acked.txt
echo "refused but delivered: $(comm -12 <(sort -u $D/refused.txt) <(sort -u $D/deliv.sorted) | wc -l)"
grep -v -E 'queued|delivered=' $D/ternd.log | sed 's/^ternd\[[0-9]*\]: //' | cut -c1-160 | sort | uniq -c | sort -rn | head -20
stopd $D
