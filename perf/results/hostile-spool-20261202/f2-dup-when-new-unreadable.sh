#!/bin/bash
# ternd running as an ordinary user (here: nobody). bob's new/ is mode 0300 (write+search, no read):
# the rename into new/ succeeds, then fsync of new/ fails to open (EACCES), the whole batch is
# treated as failed and retried -> alice (and bob) get the message again on every retry.
source /tmp/hostile-findings/lib.sh
D=/tmp/f2; rm -rf $D; mkenv $D 2604; mkbox $D alice; mkbox $D bob
chown -R nobody $D
chmod 0300 $D/mail/example.test/bob/new
su -s /bin/bash nobody -c "$BIN/ternd --config $D/tern.conf >>$D/ternd.log 2>&1 & echo \$! > $D/pid"
sleep 1.5
swaks --server 127.0.0.1:2604 --from s@example.test --to alice@example.test,bob@example.test --header 'Message-ID: <f2.both@x>' --body 'to alice and bob' 2>&1 | grep -E '^<-  250 2.0.0|^<\*\*'
sleep 5
echo "alice has $(ls $D/mail/example.test/alice/new | wc -l) copies, bob has $(ls $D/mail/example.test/bob/new 2>/dev/null| wc -l; ) (listing as root)"
grep -E 'deferred' $D/ternd.log | head -3
chmod 0700 $D/mail/example.test/bob/new
sleep 3
echo "after fixing: alice $(ls $D/mail/example.test/alice/new | wc -l) copies, bob $(ls $D/mail/example.test/bob/new | wc -l) copies"
$BIN/ternctl queue --config $D/tern.conf
stopd $D
