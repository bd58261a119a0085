#!/bin/bash
# One recipient's Maildir whose new/ refuses the rename (chattr +i, as root) blocks delivery of the
# same message to the other recipient (and of other messages batched with it).
source /tmp/hostile-findings/lib.sh
D=/tmp/f1; rm -rf $D; mkenv $D 2602; mkbox $D alice; mkbox $D bob
chattr +i $D/mail/example.test/bob/new
start $D
swaks --server 127.0.0.1:2602 --from s@example.test --to alice@example.test,bob@example.test --header 'Message-ID: <f1.both@x>' --body 'to alice and bob' 2>&1 | grep -E '^<-  250 2.0.0|^<\*\*'
swaks --server 127.0.0.1:2602 --from s@example.test --to alice@example.test --header 'Message-ID: <f1.alice-only@x>' --body 'only alice' 2>&1 | grep -E '^<-  250 2.0.0|^<\*\*'
sleep 6
echo "--- alice new/ after 6 s:"; ls $D/mail/example.test/alice/new | wc -l
grep -a -h Message-ID $D/mail/example.test/alice/new/* 2>/dev/null
echo "--- log:"; grep -E 'deferred|delivered' $D/ternd.log | head -8
$BIN/ternctl queue --config $D/tern.conf | head -12
chattr -i $D/mail/example.test/bob/new
sleep 4
echo "--- after fixing bob:"; grep -a -h Message-ID $D/mail/example.test/{alice,bob}/new/* 2>/dev/null
stopd $D
