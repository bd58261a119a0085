#!/bin/bash
# While bob's Maildir refuses renames, messages to alice ONLY (other messages) are deferred too when a
# delivery worker batches them with the bob message.
source /tmp/hostile-findings/lib.sh
D=/tmp/f1b; rm -rf $D; mkenv $D 2603; mkbox $D alice; mkbox $D bob
chattr +i $D/mail/example.test/bob/new
start $D
swaks --server 127.0.0.1:2603 --from s@example.test --to bob@example.test --header 'Message-ID: <f1b.bob@x>' --body 'to bob' 2>&1 | grep -E '^<-  250 2.0.0|^<\*\*'
$BIN/ternbench send --server 127.0.0.1:2603 --sessions 4 --duration 8 --size 2000 --to alice@example.test --message-ids $D/acked.txt 2>&1 | grep -E 'accepted|errors'
sleep 5
echo "alice-only deliveries deferred because of bob's Maildir:"
grep 'to=<alice@example.test> deferred' $D/ternd.log | wc -l
grep 'to=<alice@example.test> deferred' $D/ternd.log | head -2
chattr -i $D/mail/example.test/bob/new
waitempty $D 60
check $D alice $D/acked.txt
stopd $D
