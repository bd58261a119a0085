#!/bin/bash
# damage-setup.sh DIR PORT : makes a stopped spool with 5 pending messages (bob, deferred: tmp/ is a
# file) in segment A and 5 more in segment B (a clean restart between), plus 5 delivered to alice.
source /tmp/hostile-findings/lib.sh
D=$1; P=$2; rm -rf $D; mkenv $D $P; mkbox $D alice; mkbox $D bob
rmdir $D/mail/example.test/bob/tmp; echo x > $D/mail/example.test/bob/tmp
start $D >/dev/null
for i in 1 2 3 4 5; do swaks --server 127.0.0.1:$P --from s@example.test --to bob@example.test --header "Message-ID: <run1.$i@x>" --body "run1 $i" 2>&1 | grep -o 'queued as [0-9A-F]*' >> $D/acked-ids; echo "run1.$i@x" >> $D/acked.txt; done
for i in 1 2 3 4 5; do swaks --server 127.0.0.1:$P --from s@example.test --to alice@example.test --header "Message-ID: <alice.$i@x>" --body "alice $i" >/dev/null 2>&1; done
sleep 2; stopd $D; start $D >/dev/null
for i in 1 2 3 4 5; do swaks --server 127.0.0.1:$P --from s@example.test --to bob@example.test --header "Message-ID: <run2.$i@x>" --body "run2 $i" 2>&1 | grep -o 'queued as [0-9A-F]*' >> $D/acked-ids; echo "run2.$i@x" >> $D/acked.txt; done
sleep 2; stopd $D
ls -l $D/spool
