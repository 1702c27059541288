# mailbeacon - the two commands a newcomer needs:
#   make run     serve the built-in demo directory on http://127.0.0.1:8080
#   make check   install test dependencies (as root on Debian), then gofmt,
#                go vet, staticcheck, every test with the race detector, and
#                the package and image checks (.ci/package-test)
# Installing it (see README.md, "Install"):
#   make deb     dist/mailbeacon_VERSION_ARCH.deb (nfpm)
#   make image   dist/mailbeacon-image.tar, an OCI archive (buildah)
#   make dist    static binaries for linux/amd64 and linux/arm64 + SHA256SUMS
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
NFPM        ?= github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DIST        ?= dist
GOARCH      ?= $(shell $(GO) env GOARCH)
# Static binaries without build paths. -buildvcs=auto stamps the commit into
# the build information (`mailbeacon version`) in a git checkout, whatever
# GOFLAGS says; -s -w drop the symbol tables, not the build information.
GOBUILD      = CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags='-s -w'
# The module version the build information holds, for the package's.
BINVERSION   = $$($(GO) version -m $(1) | awk '$$1 == "mod" { v = $$3 } END { print (v == "(devel)" || v == "") ? "v0.0.0-devel" : v }')

.PHONY: check deps fmt-check vet lint test deploy-check package-test run fuzz build bench bench-domains dist deb image

check: deps fmt-check vet lint test deploy-check package-test

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
	$(GO) test -race -count=1 -timeout 30m ./...

# deploy/kubernetes (built with kustomize's Go API, every object decoded
# strictly by the Kubernetes API types) and deploy/compose.yaml (loaded by
# the Compose loader): offline, in a module of its own (deploy/check) that
# keeps those out of go.mod.
deploy-check:
	cd deploy/check && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./... && $(GO) test -count=1 ./...

# Builds the .deb and the image, installs and removes the package, and
# runs the image's binary (as root on Debian; see the script).
package-test:
	@bash .ci/package-test

run:
	$(GO) run ./cmd/mailbeacon serve --demo

build:
	$(GO) build -o mailbeacon ./cmd/mailbeacon

dist:
	@mkdir -p $(DIST)
	@set -e; for arch in amd64 arm64; do \
	  GOOS=linux GOARCH=$$arch $(GOBUILD) -o $(DIST)/mailbeacon-linux-$$arch ./cmd/mailbeacon; \
	done
	cd $(DIST) && sha256sum mailbeacon-linux-amd64 mailbeacon-linux-arm64 > SHA256SUMS && cat SHA256SUMS

deb:
	@mkdir -p $(DIST)/deb
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(DIST)/deb/mailbeacon ./cmd/mailbeacon
	PKG_ARCH=$(GOARCH) BINARY=$(DIST)/deb/mailbeacon VERSION=$(call BINVERSION,$(DIST)/deb/mailbeacon) \
	  GOOS= GOARCH= $(GO) run $(NFPM) package --config deploy/nfpm.yaml --packager deb --target $(DIST)/

# The image from deploy/Containerfile, built by buildah in storage of its
# own under $(DIST) (the vfs driver works in containers and needs no
# daemon), saved as an OCI archive.
BUILDAH      = buildah --root $(abspath $(DIST))/containers/storage --runroot $(abspath $(DIST))/containers/run --storage-driver vfs
image:
	@rm -rf $(DIST)/image-context && mkdir -p $(DIST)/image-context
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(DIST)/image-context/mailbeacon ./cmd/mailbeacon
	cp /etc/ssl/certs/ca-certificates.crt deploy/container/passwd deploy/container/group $(DIST)/image-context/
	$(BUILDAH) build --quiet --layers=false --arch $(GOARCH) -f deploy/Containerfile -t localhost/mailbeacon:latest $(DIST)/image-context
	rm -f $(DIST)/mailbeacon-image.tar
	$(BUILDAH) push --quiet localhost/mailbeacon:latest oci-archive:$(DIST)/mailbeacon-image.tar:localhost/mailbeacon:latest

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
