# mailbeacon - the two commands a newcomer needs:
#   make run     serve the built-in demo directory on http://127.0.0.1:8080
#   make check   install test dependencies (as root on Debian), then gofmt,
#                go vet, staticcheck and every test with the race detector
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s

.PHONY: check deps fmt-check vet lint test run fuzz build bench bench-domains

check: deps fmt-check vet lint test

# Debian packages the integration tests need (slapd, ldap-utils, ...).
deps:
	@bash .ci/deps

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(GO) run $(STATICCHECK) ./...

test:
	$(GO) test -race -count=1 -timeout 15m ./...

run:
	$(GO) run ./cmd/mailbeacon serve --demo

build:
	$(GO) build -o mailbeacon ./cmd/mailbeacon

# Every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Load benchmark: mailbeacon against nginx and a bare Go handler in one run,
# then the memory of 100,000 cached accounts and the Go benchmarks (as root
# on Debian it installs nginx and wrk when missing). See bench/run.sh.
bench:
	@bash bench/run.sh

# Scale benchmark of directory domains: 100,000 domains and 1,000,000 users
# in slapd, mailbeacon against the raw go-ldap rate. See bench/domains.sh.
bench-domains:
	@bash bench/domains.sh
