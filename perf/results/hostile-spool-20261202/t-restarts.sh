#!/bin/bash
# t-restarts.sh SIG : load (10 sessions, 1 MB) for 40 s; every 7 s ternd gets SIG and is started again.
source /tmp/hostile-findings/lib.sh
SIG=${1:-TERM}; D=/tmp/trs-$SIG; rm -rf $D; mkenv $D 2615; mkbox $D rcpt
start $D
python3 /tmp/hostile-findings/sender.py 2615 10 1000000 40 $D/replies.txt &
S=$!
for i in 1 2 3 4 5; do sleep 7; stopd $D $SIG; start $D >/dev/null || break; done
wait $S
awk '{sub(/queued_as_.*/,"queued",$3); print $2, $3}' $D/replies.txt | sort | uniq -c
waitempty $D 120
awk '$2==250{print $1}' $D/replies.txt > $D/acked.txt
awk '$2!=250 && $1!="-"{print $1}' $D/replies.txt > $D/notacked.txt
check $D rcpt $D/acked.txt
echo "delivered although refused/unknown: $(comm -12 <(sort -u $D/notacked.txt) <(sort -u $D/deliv.sorted) | wc -l)"
grep -E 'recovered|may be repeated|damage|error' $D/ternd.log | sed 's/^ternd\[[0-9]*\]: //' | cut -c1-220
stopd $D
