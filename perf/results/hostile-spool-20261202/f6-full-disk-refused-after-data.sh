#!/bin/bash
# Spool disk full (filler file), nothing being delivered: MAIL is answered 250 every time and each
# message is refused only after its whole body was sent (452 at end of DATA), indefinitely.
source /tmp/hostile-findings/lib.sh
D=/tmp/f6; umount /mnt/t 2>/dev/null; rm -rf $D /tmp/img; mkdir -p /mnt/t
truncate -s 64M /tmp/img && mkfs.ext4 -q /tmp/img && mount -o loop /tmp/img /mnt/t
mkenv $D 2611 /mnt/t/spool; mkbox $D rcpt
start $D
dd if=/dev/zero of=/mnt/t/filler bs=1M 2>/dev/null; sync; df -h /mnt/t | tail -1
head -c 2000000 /dev/urandom | base64 > $D/body.txt
for i in 1 2 3; do
  swaks --server 127.0.0.1:2611 --from s@example.test --to rcpt@example.test --body @$D/body.txt 2>&1 | grep -E '^<-  (250 2.1.0|250 2.1.5|354|452|451)|^<\*\*' 
  echo ---
done
grep -v -E 'info' $D/ternd.log | sed 's/^ternd\[[0-9]*\]: //'
rm /mnt/t/filler; sync
swaks --server 127.0.0.1:2611 --from s@example.test --to rcpt@example.test --body 'after freeing' 2>&1 | grep -E '^<-  250 2.0.0|^<\*\*'
stopd $D; umount /mnt/t
