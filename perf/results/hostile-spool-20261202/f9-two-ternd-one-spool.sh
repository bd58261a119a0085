#!/bin/bash
# Two ternd processes on the same spool folder (an operator starting a second one, a restart script
# that does not wait): nothing stops the second; both write and delete segments.
source /tmp/hostile-findings/lib.sh
A=/tmp/f9a; B=/tmp/f9b; rm -rf $A $B; mkenv $A 2618 /tmp/f9a/spool; mkbox $A rcpt
mkdir -p $B; sed 's/2618/2619/' $A/tern.conf > $B/tern.conf; ln -s $A/mail $B/mail
start $A; start $B && echo "second ternd started on the same spool"
$BIN/ternbench send --server 127.0.0.1:2618 --sessions 5 --size 100000 --duration 10 --to rcpt@example.test --message-ids $A/acked-a.txt > $A/bench-a.out 2>&1 & BA=$!
$BIN/ternbench send --server 127.0.0.1:2619 --sessions 5 --size 100000 --duration 10 --to rcpt@example.test --message-ids $A/acked-b.txt > $A/bench-b.out 2>&1 & BB=$!
wait $BA $BB
grep -h accepted $A/bench-*.out
sleep 5
echo "--- A log:"; sed 's/^ternd\[[0-9]*\]: //' $A/ternd.log | grep -v -E 'queued|delivered=|^info' | cut -c1-200 | sort | uniq -c | head
echo "--- B log:"; sed 's/^ternd\[[0-9]*\]: //' $B/ternd.log | grep -v -E 'queued|delivered=|^info' | cut -c1-200 | sort | uniq -c | head
ls $A/spool
stopd $B; stopd $A
echo "--- restart A alone:"; : > $A/ternd.log; start $A >/dev/null; waitempty $A 60
sed 's/^ternd\[[0-9]*\]: //' $A/ternd.log | grep -E 'recovered|damage|lost' | cut -c1-300
check $A rcpt $A/acked-a.txt $A/acked-b.txt
stopd $A
