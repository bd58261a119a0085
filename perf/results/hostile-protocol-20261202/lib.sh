# Common helpers for the h3 hostile-test scripts. Source it: . /tmp/h3-report/lib.sh
BIN=/tmp/h3/.build/release
TERND=$BIN/ternd
TERNCTL=$BIN/ternctl
# mkenv DIR PORT [extra config lines...]: a fresh config dir with a zone, a test CA/cert, users.
mkenv() {
  local d=$1 port=$2; shift 2
  rm -rf "$d"; mkdir -p "$d"/mail/example.test/{bob,alice,postmaster}/{new,cur,tmp} "$d"/certs/mx.example.test
  cat > "$d/aliases" <<'A'
postmaster: bob
team: bob, alice
tubo: | /bin/cat
A
  cat > "$d/test.zone" <<'Z'
$TTL 300
$ORIGIN test.
example.test.  MX 10 mx.example.test.
mx.example.test. A 127.0.0.1
sender.test.   TXT "v=spf1 ip4:127.0.0.0/8 -all"
other.test.    TXT "v=spf1 ip4:127.0.0.0/8 -all"
fail.test.     TXT "v=spf1 -all"
softfail.test. TXT "v=spf1 ~all"
xn--bcher-kva.test. TXT "v=spf1 ip4:127.0.0.0/8 -all"
Z
  if [ ! -f /tmp/h3-report/ca/ca.pem ]; then
    mkdir -p /tmp/h3-report/ca && ( cd /tmp/h3-report/ca &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=h3-test-ca 2>/dev/null &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout mx.key -out mx.csr -subj /CN=mx.example.test 2>/dev/null &&
    printf 'subjectAltName=DNS:mx.example.test,DNS:localhost,IP:127.0.0.1\n' > ext &&
    openssl x509 -req -in mx.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out mx.pem -days 30 -extfile ext 2>/dev/null )
  fi
  cat /tmp/h3-report/ca/mx.pem /tmp/h3-report/ca/ca.pem > "$d/certs/mx.example.test/fullchain.pem"
  cp /tmp/h3-report/ca/mx.key "$d/certs/mx.example.test/privkey.pem"
  cat > "$d/tern.conf" <<C
hostname mx.example.test
spool spool
listen smtp 127.0.0.1:$port
domain example.test {
    aliases aliases
}
deliver maildir mail/%{domain}/%{user}
resolver zone test.zone
public-suffix-list /usr/share/publicsuffix/public_suffix_list.dat
C
  for l in "$@"; do printf '%s\n' "$l" >> "$d/tern.conf"; done
}
# start DIR: runs ternd in the background, log in DIR/log, pid in DIR/pid; waits for "listening".
start() {
  local d=$1
  ( cd "$d" && exec "$TERND" --config tern.conf --loops 1 ) > "$d/log" 2>&1 &
  echo $! > "$d/pid"
  for i in $(seq 1 100); do grep -q "listening" "$d/log" 2>/dev/null && return 0; sleep 0.1; done
  echo "ternd did not start:"; cat "$d/log"; return 1
}
stop() { local d=$1; [ -f "$d/pid" ] && kill "$(cat "$d/pid")" 2>/dev/null; sleep 0.5; }
