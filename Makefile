# mailbeacon - the two commands a newcomer needs:
#   make run     serve the built-in demo directory on http://127.0.0.1:8080
#   make check   install test dependencies (as root on Debian), then gofmt,
#                go vet, staticcheck, every test with the race detector, and
#                the package and image checks (.ci/package-test)
# Installing it (see README.md, "Install"):
#   make deb     dist/mailbeacon_VERSION-1_ARCH.deb (nfpm) and its SBOM
#   make image   dist/mailbeacon-image.tar, an OCI archive (buildah)
#   make dist    static binaries for linux/amd64 and linux/arm64, their
#                SBOMs and SHA256SUMS (signed with SIGN_KEY=an ssh key)
# All three carry the version deploy/version derives from VERSION and the
# commit, and rebuild bit for bit from one commit (SOURCE_DATE_EPOCH).
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
NFPM        ?= github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DIST        ?= dist
GOARCH      ?= $(shell $(GO) env GOARCH)
CYCLONEDX   ?= github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0
# The version of this tree (see deploy/version: X.Y.Z from VERSION on the
# release commit, X.Y.Z+gitDATE.N.COMMIT after it, X.Y.Z~archive outside a
# git checkout), for the binary, the package and the image alike.
# Each is worked out once per make run (and may be given instead).
ifndef PKGVERSION
PKGVERSION  := $(shell bash deploy/version)
endif
ifndef REVISION
REVISION    := $(shell bash deploy/version revision)
endif
# Every time in the artifacts: the commit's (nfpm reads it from the
# environment; buildah gets --timestamp; the image's tar --mtime).
ifndef SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH := $(shell bash deploy/version epoch)
endif
export SOURCE_DATE_EPOCH
SOURCE_URL  ?= https://github.com/mailbeacon/mailbeacon
# An ssh private key (ssh-keygen -t ed25519): make dist signs SHA256SUMS
# with it (SHA256SUMS.sig, namespace "file"); unsigned without.
SIGN_KEY    ?=
# Static binaries without build paths. -buildvcs=auto stamps the commit into
# the build information (`mailbeacon version`) in a git checkout, whatever
# GOFLAGS says; -s -w drop the symbol tables, not the build information;
# -X stamps the version.
GOBUILD      = CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags='-s -w -X main.version=$(PKGVERSION)'
# SBOM FILE BINARY: a CycloneDX SBOM of what went into BINARY (its build
# information: modules, versions, hashes; the Go standard library), without
# the random serial number and the time that would make it differ per build.
SBOM         = GOOS= GOARCH= $(GO) run $(CYCLONEDX) bin -json -std -noserial -notimestamp -version $(PKGVERSION) -output $(1) $(2)
# Stops the build when deploy/version failed (its message is repeated).
VERSIONOK    = @test -n "$(PKGVERSION)" -a -n "$(SOURCE_DATE_EPOCH)" || { bash deploy/version; exit 1; }

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

# TestServiceLockoutSamba sends one request a second for ten minutes (its
# issue's figure) and costs little CPU: it runs beside the rest of the
# suite rather than after it, its output printed when both are done.
LONGTEST = ^TestServiceLockoutSamba$$
test:
	@log=$$(mktemp); \
	$(GO) test -race -count=1 -timeout 30m -run '$(LONGTEST)' ./cmd/mailbeacon >"$$log" 2>&1 & long=$$!; \
	echo "$(GO) test -race -count=1 -timeout 20m -skip '$(LONGTEST)' ./..."; \
	$(GO) test -race -count=1 -timeout 20m -skip '$(LONGTEST)' ./...; rc=$$?; \
	wait $$long; lrc=$$?; \
	echo "$(GO) test -race -count=1 -timeout 30m -run '$(LONGTEST)' ./cmd/mailbeacon (beside the above)"; \
	cat "$$log"; rm -f "$$log"; \
	[ $$rc -eq 0 ] && [ $$lrc -eq 0 ]

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
	$(VERSIONOK)
	$(GO) build -ldflags='-X main.version=$(PKGVERSION)' -o mailbeacon ./cmd/mailbeacon

# SHA256SUMS covers the binaries and their SBOMs; with SIGN_KEY, signed by
# ssh-keygen -Y sign (README.md, "Install", says how to verify it).
dist:
	$(VERSIONOK)
	@mkdir -p $(DIST)
	@set -e; for arch in amd64 arm64; do \
	  GOOS=linux GOARCH=$$arch $(GOBUILD) -o $(DIST)/mailbeacon-linux-$$arch ./cmd/mailbeacon; \
	  $(call SBOM,$(DIST)/mailbeacon-linux-$$arch.cdx.json,$(DIST)/mailbeacon-linux-$$arch); \
	done
	cd $(DIST) && sha256sum mailbeacon-linux-amd64 mailbeacon-linux-amd64.cdx.json \
	  mailbeacon-linux-arm64 mailbeacon-linux-arm64.cdx.json > SHA256SUMS && cat SHA256SUMS
	@rm -f $(DIST)/SHA256SUMS.sig
	@if [ -n "$(SIGN_KEY)" ]; then \
	  ssh-keygen -q -Y sign -f "$(SIGN_KEY)" -n file $(DIST)/SHA256SUMS && echo "signed: $(DIST)/SHA256SUMS.sig"; \
	else echo "SHA256SUMS not signed (SIGN_KEY=path to an ssh private key signs it)"; fi

# dist/mailbeacon_VERSION-1_ARCH.deb and its SBOM (...deb.cdx.json).
deb:
	$(VERSIONOK)
	@mkdir -p $(DIST)/deb
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(DIST)/deb/mailbeacon ./cmd/mailbeacon
	PKG_ARCH=$(GOARCH) BINARY=$(DIST)/deb/mailbeacon VERSION=$(PKGVERSION) \
	  GOOS= GOARCH= $(GO) run $(NFPM) package --config deploy/nfpm.yaml --packager deb --target $(DIST)/
	$(call SBOM,$(DIST)/mailbeacon_$(PKGVERSION)-1_$(GOARCH).deb.cdx.json,$(DIST)/deb/mailbeacon)

# The image from deploy/Containerfile, built by buildah in storage of its
# own under $(DIST) (the vfs driver works in containers and needs no
# daemon), saved as an OCI archive.
BUILDAH      = buildah --root $(abspath $(DIST))/containers/storage --runroot $(abspath $(DIST))/containers/run --storage-driver vfs
# Reproducible: every time in the image (files, config, history) is
# SOURCE_DATE_EPOCH (--timestamp), and the archive is written by tar from
# the OCI layout with sorted names, fixed times and owners, as
# oci-archive: would record the times of its temporary files. The OCI
# labels name the version, the commit, the source and that time.
IMAGE_CREATED = $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
image:
	$(VERSIONOK)
	@rm -rf $(DIST)/image-context $(DIST)/image-layout && mkdir -p $(DIST)/image-context
	GOOS=linux GOARCH=$(GOARCH) $(GOBUILD) -o $(DIST)/image-context/mailbeacon ./cmd/mailbeacon
	cp /etc/ssl/certs/ca-certificates.crt deploy/container/passwd deploy/container/group $(DIST)/image-context/
	$(BUILDAH) build --quiet --layers=false --arch $(GOARCH) --timestamp $(SOURCE_DATE_EPOCH) \
	  --label org.opencontainers.image.version=$(PKGVERSION) \
	  $(if $(REVISION),--label org.opencontainers.image.revision=$(REVISION)) \
	  --label org.opencontainers.image.source=$(SOURCE_URL) \
	  --label org.opencontainers.image.created=$(IMAGE_CREATED) \
	  -f deploy/Containerfile -t localhost/mailbeacon:latest $(DIST)/image-context
	$(BUILDAH) push --quiet localhost/mailbeacon:latest oci:$(DIST)/image-layout:localhost/mailbeacon:latest
	rm -f $(DIST)/mailbeacon-image.tar
	tar -C $(DIST)/image-layout --sort=name --mtime=@$(SOURCE_DATE_EPOCH) --owner=0 --group=0 --numeric-owner \
	  --mode=a+rX,u+w,go-w --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
	  -cf $(DIST)/mailbeacon-image.tar oci-layout index.json blobs
	rm -rf $(DIST)/image-layout
	$(call SBOM,$(DIST)/mailbeacon-image.cdx.json,$(DIST)/image-context/mailbeacon)

# Every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Load benchmark: mailbeacon against nginx and a bare Go handler in one run
# (req/s, latency, CPU per request, the count of each status: a run with a
# status other than 200 is INVALID and fails), then the memory of 100,000
# cached accounts and the Go benchmarks (as root on Debian it installs nginx
# and wrk when missing). See bench/run.sh.
bench:
	@bash bench/run.sh

# Scale benchmark of directory domains: 100,000 domains and 1,000,000 users
# in slapd, mailbeacon against the raw go-ldap rate, with the CPU per request
# of mailbeacon, slapd and the raw client; fails on any status but 200. See
# bench/domains.sh.
bench-domains:
	@bash bench/domains.sh
