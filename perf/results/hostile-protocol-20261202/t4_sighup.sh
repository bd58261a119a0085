#!/bin/bash
# SIGHUP: limits for new sessions, restart-only settings named, broken configs refused.
. /tmp/h3-report/lib.sh
D=/tmp/h3t/hup; PORT=2609
mkenv $D $PORT 'certificates certs' 'limits {' '  command-timeout 30s' '}'
cp $D/tern.conf $D/orig.conf
start $D || exit 1
hup() { local n=$(wc -l < $D/log); kill -HUP $(cat $D/pid); sleep 1.5; echo "== $1"; tail -n +$((n+1)) $D/log | grep -v "dmarc: a fail\|auth: no users" | sed 's/^ternd\[[0-9]*\]: /  /'; }
# an old session opened before the change
python3 - $PORT > $D/old.out <<'PY' &
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn(int(sys.argv[1])); rd(s); cmd(s,'EHLO x\r\n'); t0=time.time(); time.sleep(1)
r = rd(s, 40); print('old session (opened with command-timeout 30s): closed after %.0fs %r' % (time.time()-t0, r))
PY
OLD=$!
sleep 0.5
sed -i 's/command-timeout 30s/command-timeout 3s/' $D/tern.conf
hup "command-timeout 30s -> 3s"
python3 - $PORT <<'PY'
import sys, time; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn(int(sys.argv[1])); rd(s); cmd(s,'EHLO x\r\n'); t0=time.time()
r = rd(s, 40); print('  new session: closed after %.0fs %r' % (time.time()-t0, r))
PY
cp $D/orig.conf $D/tern.conf
sed -i "s/^listen smtp 127.0.0.1:$PORT/listen smtp 127.0.0.1:$((PORT+50))/; s/^hostname .*/hostname other.example.test/; s#^spool spool#spool spool2#; s#^deliver maildir .*#deliver maildir mail2/%{domain}/%{user}#; s/^certificates certs//" $D/tern.conf
echo 'io-backend epoll' >> $D/tern.conf
echo 'outbound port 2525' >> $D/tern.conf
hup "listen, hostname, spool, deliver, TLS off, io-backend, outbound port"
python3 -c "
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn($PORT); print('  greeting after the reload (hostname must stay):', rd(s)[:40]); print('  STARTTLS still offered:', b'STARTTLS' in cmd(s,'EHLO x\\r\\n'))"
cp $D/orig.conf $D/tern.conf; sed -i 's%^public-suffix-list .*%public-suffix-list /nonexistent/psl.dat%' $D/tern.conf
hup "a missing public-suffix-list"
cp $D/orig.conf $D/tern.conf; hup "back to the original"
cp $D/orig.conf $D/tern.conf; sed -i 's%^public-suffix-list .*%public-suffix-list /tmp/h3t/hup/psl.dat%' $D/tern.conf; printf 'com\nexample.test\n' > $D/psl.dat
hup "public-suffix-list changed to another (valid) file"
cp $D/orig.conf $D/tern.conf; echo 'limits {' >> $D/tern.conf; echo '  bogus 1' >> $D/tern.conf; echo '}' >> $D/tern.conf
hup "a broken config"
python3 -c "
import sys; sys.path.insert(0,'/tmp/h3-report'); from smtp import *
s=conn($PORT); print('  still serving on the old port:', rd(s)[:40])"
cp $D/orig.conf $D/tern.conf; sed -i 's/command-timeout 30s/command-timeout 99999999999/' $D/tern.conf
echo "  --check says: $(cd $D; $TERND --check --config tern.conf)"
hup "command-timeout 99999999999 (seconds: 317 years)"
if kill -0 $(cat $D/pid) 2>/dev/null; then echo "  ternd still running"; else echo "  ternd DIED"; fi
wait $OLD; cat $D/old.out
stop $D
