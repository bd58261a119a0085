#!/bin/bash
# Long-deferred messages (bob: tmp/ is a file) with ~400 MB of traffic after them (alice), so their
# segments are compacted; restarts in between; then bob mended: each bob message delivered once,
# attempt counts never go backwards across restarts.
source /tmp/hostile-findings/lib.sh
D=/tmp/tcomp; rm -rf $D; EXTRA_LIMITS="" mkenv $D 2617; mkbox $D alice; mkbox $D bob
sed -i 's/retry-interval 1s/retry-interval 3s/; s/retry-max-interval 1s/retry-max-interval 3s/' $D/tern.conf
rmdir $D/mail/example.test/bob/tmp; echo x > $D/mail/example.test/bob/tmp
start $D
$BIN/ternbench send --server 127.0.0.1:2617 --sessions 2 --messages 20 --size 3000 --to bob@example.test --message-ids $D/bob-acked.txt 2>&1 | grep accepted
attempts() { $BIN/ternctl queue --config $D/tern.conf 2>&1 | grep -o '[0-9]* attempts' | awk '{s+=$1} END {print s+0}'; }
for round in 1 2 3; do
  $BIN/ternbench send --server 127.0.0.1:2617 --sessions 8 --size 1000000 --messages 150 --to alice@example.test --message-ids $D/alice-acked-$round.txt 2>&1 | grep accepted
  sleep 2
  stopd $D; a1=$(attempts); ls $D/spool | tr '\n' ' '; echo
  start $D >/dev/null; a2=$(attempts)
  echo "round $round: bob attempts (sum) before restart $a1, after $a2"
done
grep -E 'recovered|compact' $D/ternd.log | sed 's/^ternd\[[0-9]*\]: //'
rm $D/mail/example.test/bob/tmp; mkdir $D/mail/example.test/bob/tmp
waitempty $D 60
check $D bob $D/bob-acked.txt
check $D alice $D/alice-acked-*.txt
stopd $D
