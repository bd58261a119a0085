# helpers: source this
BIN=/tmp/hostile/.build-release/x86_64-unknown-linux-gnu/release
# mkenv DIR PORT [SPOOL] [extra-limits]
mkenv() {
  local d=$1 port=$2 spool=${3:-spool}
  mkdir -p $d
  cat > $d/tern.conf <<CONF
hostname mx.example.test
spool $spool
listen smtp 127.0.0.1:$port
domain example.test {
}
deliver maildir mail/%{domain}/%{user}
limits {
retry-interval 1s
retry-max-interval 1s
${EXTRA_LIMITS:-}
}
CONF
}
mkbox() { mkdir -p $1/mail/example.test/$2/{new,cur,tmp}; }
start() { # start DIR -> writes DIR/pid, log appended to DIR/ternd.log
  local d=$1
  $BIN/ternd --config $d/tern.conf >>$d/ternd.log 2>&1 &
  echo $! > $d/pid
  local port=$(awk '/^listen/{split($3,a,":");print a[2]}' $d/tern.conf)
  for i in $(seq 1 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then return 0; fi
    kill -0 $(cat $d/pid) 2>/dev/null || { echo "ternd died"; tail -5 $d/ternd.log; return 1; }
    sleep 0.1
  done
  echo "start timeout"; return 1
}
stopd() { # stopd DIR [SIG]
  local d=$1 sig=${2:-TERM} p=$(cat $1/pid)
  kill -$sig $p 2>/dev/null
  for i in $(seq 1 600); do kill -0 $p 2>/dev/null || return 0; sleep 0.1; done
  echo "ternd $p did not exit after 60s"; return 1
}
# ids delivered in a box: prints counts of Message-ID
delivered_ids() { cat $1/mail/example.test/$2/new/* $1/mail/example.test/$2/cur/* 2>/dev/null | grep -a -i '^Message-ID:' | grep -v '@vm>' | sed 's/^Message-ID: <\(.*\)>\r*$/\1/I' ; }
# check DIR BOX ACKFILE...
check() {
  local d=$1 box=$2; shift 2
  cat "$@" | sort > $d/acked.sorted
  delivered_ids $d $box | sort > $d/deliv.sorted
  echo "acked: $(wc -l < $d/acked.sorted) delivered(total files w/ id): $(wc -l < $d/deliv.sorted) unique: $(sort -u $d/deliv.sorted | wc -l)"
  echo "lost (acked, not delivered): $(comm -23 <(sort -u $d/acked.sorted) <(sort -u $d/deliv.sorted) | wc -l)"
  echo "dups: $(uniq -d $d/deliv.sorted | wc -l)"
  echo "delivered-not-acked: $(comm -13 <(sort -u $d/acked.sorted) <(sort -u $d/deliv.sorted) | wc -l)"
}
waitempty() { # waitempty DIR [timeout s]
  local t=${2:-120}
  for i in $(seq 1 $((t*2))); do
    if $BIN/ternctl queue --config $1/tern.conf 2>/dev/null | grep -q 'queue is empty'; then return 0; fi
    sleep 0.5
  done
  echo "queue not empty after $t s"; $BIN/ternctl queue --config $1/tern.conf 2>&1 | tail -3; return 1
}
