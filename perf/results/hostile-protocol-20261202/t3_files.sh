#!/bin/bash
# Config and data files: FIFOs, devices, folders, symlinks to devices, huge sparse files, CRLF, lone CR.
# Each case runs `ternd --check` with a 10 s timeout (a hang prints TIMEOUT).
. /tmp/h3-report/lib.sh
D=/tmp/h3t/files; PORT=2603
chk() { # label
  local out rc
  out=$(cd $D && timeout 10 $TERND --check --config ${CONF:-tern.conf} 2>&1); rc=$?
  [ $rc = 124 ] && out="TIMEOUT (hung)"
  printf '%-36s rc=%s %s\n' "$1" "$rc" "$(printf '%s' "$out" | head -3 | cat -v | tr '\n' '|')"
}
reset() {
  mkenv $D $PORT 'certificates certs' "relay relayed.example via smtps://u@127.0.0.1:2999 auth relaypw"
  sed -i 's#aliases aliases#aliases aliases\n    users users\n    dkim sel dkim.pem#' $D/tern.conf
  printf 'secret\n' | $TERNCTL user add alice@example.test --config $D/tern.conf >/dev/null
  (cd $D && $TERNCTL dkim keygen example.test sel --config tern.conf > /dev/null 2>&1 || openssl genpkey -algorithm ed25519 -out dkim.pem 2>/dev/null)
  [ -f $D/dkim.pem ] || openssl genpkey -algorithm ed25519 -out $D/dkim.pem
  echo pw > $D/relaypw
}
reset; chk baseline
for f in tern.conf aliases users test.zone dkim.pem relaypw certs/mx.example.test/fullchain.pem certs/mx.example.test/privkey.pem; do
  for kind in fifo devzero devnull dir sparse; do
    reset
    if [ $f = tern.conf ]; then cp $D/tern.conf $D/real.conf; sed -i 's#^spool spool#spool '$D'/spool#' $D/real.conf; fi
    rm -rf $D/$f
    case $kind in
      fifo) mkfifo $D/$f ;;
      devzero) ln -s /dev/zero $D/$f ;;
      devnull) ln -s /dev/null $D/$f ;;
      dir) mkdir $D/$f ;;
      sparse) truncate -s 65M $D/$f ;;
    esac
    chk "$f as $kind"
  done
done
echo "--- line endings"
reset; sed -i 's/$/\r/' $D/tern.conf; chk "tern.conf all CRLF"
reset; sed -i '2s/$/\r/' $D/tern.conf; chk "tern.conf one CRLF line"
reset; printf 'hostname mx.example.test\rspool spool\n' > $D/x.conf; tail -n +3 $D/tern.conf >> $D/x.conf; CONF=x.conf chk "tern.conf lone CR between statements"
reset; sed -i '1s/$/\r\r/' $D/tern.conf; chk "tern.conf CR CR LF"
reset; sed -i 's/$/\r/' $D/aliases; chk "aliases CRLF"
reset; printf 'zed: bob\rmallory: bob\n' >> $D/aliases; chk "aliases lone CR"
reset; sed -i 's/$/\r/' $D/test.zone; chk "zone CRLF"
reset; printf 'a.test. TXT "x\ry"\n' >> $D/test.zone; chk "zone lone CR in a TXT string"
reset; sed -i 's/$/\r/' $D/users; chk "users CRLF"
reset; printf 'pw\r\n' > $D/relaypw; chk "relay password CRLF"
reset; sed -i 's/$/\r/' $D/dkim.pem; chk "dkim key CRLF"
reset; printf 'hostname mx.\x1b[31mexample.test\n' > $D/x.conf; tail -n +2 $D/tern.conf >> $D/x.conf; CONF=x.conf chk "ESC in a config value"
reset; printf 'bogus\x1b]0;pwned\x07 statement\n' >> $D/tern.conf; out=$(cd $D; $TERND --check --config tern.conf); printf 'ESC/BEL in an unknown statement, --check prints: %q\n' "$out"
