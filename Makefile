# Tern — two commands: `make run` and `make test`. Everything else is a helper they call.
# Missing system packages are installed with apt-get when running as root; otherwise the exact
# command to run is printed.

SHELL        := /bin/bash
SWIFT        ?= swift
BUILD_PKGS   := liburing-dev libssl-dev pkg-config
TEST_PKGS    := swaks python3 unbound python3-dkim python3-aiosmtpd publicsuffix openssl testssl.sh postfix e2fsprogs util-linux
PERF_PKGS    := util-linux iproute2 procps bc unbound bind9-dnsutils
# Release binaries link the Swift runtime statically (idle RSS 12 MiB instead of 15) and build in
# their own folder so debug, test and benchmark builds are not invalidated.
RELEASE      := -c release --static-swift-stdlib --scratch-path .build-release
TERNBENCH     = $$($(SWIFT) build $(RELEASE) --show-bin-path)/ternbench
RUN_MESSAGES ?= 2000

.PHONY: run test soak system-users deps deps-test deps-perf build build-release build-tests bench bench-check bench-update perf clean

define ensure_packages
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)) \
	      || { echo "apt-get install$$missing failed"; exit 1; }; \
	  else \
	    echo "missing packages:$$missing"; echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

deps:
	$(call ensure_packages,$(BUILD_PKGS))

## The system users ternd's processes run as (`user` and `queue-user`, docs/security.md), each
## with its own group, no home and no shell, as a package would create them.
TERN_USERS := _tern _ternq
system-users:
	@for u in $(TERN_USERS); do 	  getent passwd $$u >/dev/null && continue; 	  if [ "$$(id -u)" = 0 ]; then 	    echo "creating system user $$u"; 	    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $$u || exit 1; 	  else 	    echo "missing system user $$u; run: sudo useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $$u"; 	  fi; 	done

deps-test: deps
	$(call ensure_packages,$(TEST_PKGS))

deps-perf: deps-test
	$(call ensure_packages,$(PERF_PKGS))

build: deps
	$(SWIFT) build

build-release: deps
	$(SWIFT) build $(RELEASE) --product ternbench
	$(SWIFT) build $(RELEASE) --product ternd
	$(SWIFT) build $(RELEASE) --product spoolfill
	$(SWIFT) build $(RELEASE) --product dnsload
	$(SWIFT) build $(RELEASE) --product dkimload
	$(SWIFT) build $(RELEASE) --product ternctl

build-tests: deps-test
	$(SWIFT) build --build-tests

## make run: start ternd with its embedded default configuration (127.0.0.1:2525, domain localhost,
## spool and Maildirs under ./var/), send it a short demo load with ternbench, show where the
## mail landed, and keep serving in the foreground until Ctrl-C (which drains first).
## RUN_FOR=S stops it (SIGTERM, drain) S seconds after the demo instead; RUN_MESSAGES=0 skips the demo.
RUN_FOR ?=
run: system-users build-release
	@bindir=$$($(SWIFT) build $(RELEASE) --show-bin-path); \
	mkdir -p var/mail/localhost/postmaster/new var/mail/localhost/postmaster/cur var/mail/localhost/postmaster/tmp; \
	before=$$(ls var/mail/localhost/postmaster/new | wc -l); \
	$$bindir/ternd & ternd=$$!; \
	trap 'kill -TERM $$ternd 2>/dev/null; wait $$ternd' INT TERM; \
	for i in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/2525) 2>/dev/null && break; sleep 0.1; done; \
	if [ "$(RUN_MESSAGES)" != 0 ]; then \
	  echo "make run: demo: $(RUN_MESSAGES) messages to postmaster@localhost"; \
	  report=$$($$bindir/ternbench send --server 127.0.0.1:2525 --sessions 50 --messages $(RUN_MESSAGES) --size 1000 --to postmaster@localhost); \
	  for i in $$(seq 100); do [ $$(( $$(ls var/mail/localhost/postmaster/new | wc -l) - before )) -ge $(RUN_MESSAGES) ] && break; sleep 0.2; done; \
	  echo "$$report"; \
	  echo "make run: delivered $$(( $$(ls var/mail/localhost/postmaster/new | wc -l) - before )) into ./var/mail/localhost/postmaster/new"; \
	fi; \
	echo "make run: ternd serves 127.0.0.1:2525 (domain localhost; mail for <user>@localhost needs ./var/mail/localhost/<user>/)."; \
	echo "make run: try: swaks --server 127.0.0.1:2525 --to postmaster@localhost     Ctrl-C stops it."; \
	if [ -n "$(RUN_FOR)" ]; then sleep $(RUN_FOR); kill -TERM $$ternd; fi; \
	wait $$ternd

## make test: every test target (unit, reactor, end-to-end with real peers) on epoll, then the
## suites that do I/O (reactor, DNS, the IPC channel, end to end with ternd and real peers) again on io_uring —
## the same tests, parameterised by TERN_IO_BACKEND — and the allocation check.
URING_SUITES := ReactorTests|DNSTests|EndToEndTests|IPCChannelTests
test: system-users build-tests
	@set -o pipefail; echo "=== pass 1: every test, io backend epoll ==="; \
	TERN_IO_BACKEND=epoll $(SWIFT) test --skip-build 2>&1 | tee .build/test-output.txt \
	  || { echo; echo "=== failures on epoll (from .build/test-output.txt) ==="; grep -E -A6 '✘|error:|Fatal|fatal error' .build/test-output.txt | cut -c1-400 | head -150; exit 1; }
	@set -o pipefail; echo "=== pass 2: reactor, DNS, IPC channel and end-to-end suites, io backend io_uring ==="; \
	TERN_IO_BACKEND=io_uring $(SWIFT) test --skip-build --filter '$(URING_SUITES)' 2>&1 | tee .build/test-output-uring.txt \
	  || { echo; echo "=== failures on io_uring (from .build/test-output-uring.txt) ==="; grep -E -A6 '✘|error:|Fatal|fatal error' .build/test-output-uring.txt | cut -c1-400 | head -150; exit 1; }
	@$(MAKE) --no-print-directory bench-check
	@n=$$(grep -Eo 'Test run with [0-9]+ tests' .build/test-output.txt | tail -1 | grep -Eo '[0-9]+'); \
	u=$$(grep -Eo 'Test run with [0-9]+ tests' .build/test-output-uring.txt | tail -1 | grep -Eo '[0-9]+'); \
	echo "tests: $$n passed on epoll, $$u passed again on io_uring, 0 failed"

## make soak: the spool's promise over a long run (SOAK_SECONDS, default 1800): the model-based
## randomized test on both file systems, then ternd under load with clean restarts and kill -9,
## every acknowledged Message-ID checked. Results in perf/results/soak-spool-*.md (perf/README.md).
SOAK_SECONDS ?= 1800
soak: deps-perf build-release build-tests
	SOAK_SECONDS=$(SOAK_SECONDS) BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/soak-spool.sh

## Benchmarks (package-benchmark): `make bench` prints them; `make bench-check` fails when a
## threshold (zero allocations in steady state) is exceeded.
bench: deps
	$(SWIFT) package --allow-writing-to-package-directory benchmark --no-progress

bench-check: deps
	@TERN_BENCH_ALLOCATIONS_ONLY=1 $(SWIFT) package --allow-writing-to-package-directory benchmark thresholds check --path $(CURDIR)/Thresholds --no-progress; \
	rc=$$?; if [ $$rc = 0 ] || [ $$rc = 4 ]; then echo "bench-check: allocation thresholds met"; else echo "bench-check: allocation thresholds exceeded (exit $$rc)"; exit 1; fi

## Records the current allocation counts as the thresholds (after an intended change).
bench-update: deps
	TERN_BENCH_ALLOCATIONS_ONLY=1 $(SWIFT) package --allow-writing-to-package-directory benchmark thresholds update --path $(CURDIR)/Thresholds --no-progress

## Same-run comparisons against Postfix's smtp-source / smtp-sink (see perf/README.md).
perf: deps-perf build-release
	TERNBENCH=$(TERNBENCH) perf/compare-sink.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/compare-durable.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/compare-queue.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/crash-ternd.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/compare-dns.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/compare-dkim.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/compare-tls.sh
	TERNBENCH=$(TERNBENCH) perf/compare-backends.sh
	BINDIR=$$($(SWIFT) build $(RELEASE) --show-bin-path) perf/compare-relay.sh

clean:
	rm -rf .build
