#!/bin/bash
# 1500 deferred messages (bob, 60 KB), one flipped bit in segment 1; then kill -9 at 50..400 ms after
# each start, 8 times, then a normal start, mend bob: all but the damaged message delivered once.
source /tmp/hostile-findings/lib.sh
D=/tmp/tkr; rm -rf $D; mkenv $D 2622; mkbox $D bob
rmdir $D/mail/example.test/bob/tmp; echo x > $D/mail/example.test/bob/tmp
start $D
$BIN/ternbench send --server 127.0.0.1:2622 --sessions 5 --messages 1500 --size 60000 --to bob@example.test --message-ids $D/acked.txt 2>&1 | grep accepted
stopd $D; start $D >/dev/null; sleep 1; stopd $D
ls -l $D/spool | head
python3 /tmp/hostile-findings/flip.py $D/spool/$(ls $D/spool | grep seg | head -1) 500000
for ms in 50 100 150 200 250 300 350 400; do
  $BIN/ternd --config $D/tern.conf >>$D/ternd.log 2>&1 & p=$!
  sleep 0.$(printf %03d $ms); kill -9 $p; wait $p 2>/dev/null
done
rm $D/mail/example.test/bob/tmp; mkdir $D/mail/example.test/bob/tmp
start $D >/dev/null; waitempty $D 120
grep -E 'recovered|damage|torn' $D/ternd.log | sed 's/^ternd\[[0-9]*\]: //' | cut -c1-250 | uniq -c | tail -14
check $D bob $D/acked.txt
stopd $D
