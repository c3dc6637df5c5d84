# Calyx — build, test, demo, bench.
# `make test` is what CI runs (.ci/run). It installs what the tests need.

GO        ?= go
BIN       := $(CURDIR)/bin
PKGS      := ./...
# Unit and integration tests (root-only ones skip themselves when not root).
TEST_FLAGS ?= -count=1 -timeout 12m
# Seconds each fuzz target runs inside `make test`; `make fuzz` runs longer.
FUZZTIME  ?= 5s
DEB_PKGS  := iproute2 iputils-ping iptables ipset bird2 frr etcd-server iperf3 containernetworking-plugins conntrack
# Commands the Debian packages above provide (checked before calling apt).
DEB_CMDS  := ip ping iptables ipset bird birdc vtysh etcd iperf3 conntrack
# The real Kubernetes API server for the Kubernetes suites, built from its own
# module (tools/kube-apiserver) once per version into a cache outside bin/, so
# that `make clean` does not cost a ten-minute rebuild.
KUBE_VERSION   := v1.37.2
KUBE_APISERVER ?= $(HOME)/.cache/calyx/kube-apiserver-$(KUBE_VERSION)

.PHONY: all build image deps-image test unit e2e fuzz fuzz-quick bench soak demo deps lint generate clean kube-apiserver

all: build

# What every binary reports (calyx-agent --version, calyxctl version,
# calyx_build_info) and the image tag: the VERSION file (not git describe:
# the manifests name the image by it, so it must not change per commit) and
# the commit, with -dirty when the work tree has uncommitted changes.
MODULE  := github.com/calyx-net/calyx
VERSION ?= $(shell cat $(CURDIR)/VERSION)
COMMIT  ?= $(shell c=$$(git -C $(CURDIR) rev-parse --short=12 HEAD 2>/dev/null) || c=unknown; \
	[ "$$c" = unknown ] || git -C $(CURDIR) diff --quiet HEAD 2>/dev/null || c=$$c-dirty; echo $$c)
LDFLAGS := -X $(MODULE)/internal/version.Version=$(VERSION) -X $(MODULE)/internal/version.Commit=$(COMMIT)

# Static binaries (no cgo): they run on any Linux and in the image as they are.
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# The container image, built offline (no engine, no registry): an OCI archive
# that skopeo, docker load and ctr import take. Its binaries are those of
# `make build` (same version stamp, static) without debug information
# (-s -w: 52 MiB instead of 93); the commit's time as creation time makes
# the digest reproducible.
IMAGE     := $(BIN)/calyx-image.tar
IMAGE_BIN := $(BIN)/image
IMAGE_CMDS := ./cmd/calyx-agent ./cmd/calyx ./cmd/calyxctl ./cmd/calyx-kube-controllers
CREATED ?= $(shell git -C $(CURDIR) log -1 --format=%ct 2>/dev/null)
image:
	@mkdir -p $(IMAGE_BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w $(LDFLAGS)" -o $(IMAGE_BIN)/ $(IMAGE_CMDS)
	$(GO) run ./internal/ociimage/mkimage --bin $(IMAGE_BIN) --version $(VERSION) --commit $(COMMIT) \
		--created "$(CREATED)" --out $(IMAGE)

# deps installs missing Debian packages; quiet and quick when all is there.
deps:
	@missing=""; for c in $(DEB_CMDS); do command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing=1; done; \
	[ -x /usr/lib/cni/host-local ] || missing=1; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make deps: missing packages ($(DEB_PKGS)); run as root to install them" >&2; exit 1; fi; \
		echo "make deps: installing $(DEB_PKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PKGS) >/dev/null; \
	fi

# Lint tools are pinned and installed once into a cache outside the tree.
STATICCHECK_VERSION := v0.8.2
TOOLS_DIR   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/calyx-tools
STATICCHECK := $(TOOLS_DIR)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

$(STATICCHECK):
	GOBIN=$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# lint fails on any finding: go.mod as `go mod tidy` would write it, gofmt,
# go vet, staticcheck, and no library package depending on bench/.
# What the image test inspects the archive with: skopeo, and containerd (ctr
# import, then a run with runc).
IMAGE_DEB_PKGS := skopeo containerd runc
deps-image:
	@missing=""; for c in skopeo containerd ctr runc; do command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make deps-image: missing packages ($(IMAGE_DEB_PKGS)); the image test skips those checks" >&2; exit 0; fi; \
		echo "make deps-image: installing $(IMAGE_DEB_PKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_DEB_PKGS) >/dev/null; \
	fi

# promtool (metrics and alert-rule checks) from Debian's prometheus package,
# unpacked into the tool cache: installing the package would start a
# Prometheus server.
PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),$(TOOLS_DIR)/promtool/promtool)
$(TOOLS_DIR)/promtool/promtool:
	@mkdir -p $(dir $@); tmp=$$(mktemp -d); \
	(cd $$tmp && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; }) && \
	dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -x -C $$tmp ./usr/bin/promtool && mv $$tmp/usr/bin/promtool $@; \
	status=$$?; rm -rf $$tmp; exit $$status

lint: $(STATICCHECK)
	$(GO) mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)
	@mod=$$($(GO) list -m); \
	bad=$$($(GO) list -f '{{.ImportPath}}:{{range .Deps}} {{.}}{{end}}' $$($(GO) list ./... | grep -v -e "^$$mod/bench" -e "^$$mod/cmd/calyx-bench$$") \
		| grep -E " $$mod/bench(/| |$$)" | cut -d: -f1); \
	if [ -n "$$bad" ]; then echo "library packages must not import $$mod/bench:"; echo "$$bad"; exit 1; fi

generate:
	$(GO) run ./cni/internal/protogen

test: deps deps-image $(PROMTOOL) lint build unit fuzz-quick e2e

unit: kube-apiserver
	CALYX_BIN_DIR=$(BIN) PROMTOOL=$(PROMTOOL) CALYX_KUBE_APISERVER=$(KUBE_APISERVER) $(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v /e2e)

# The end-to-end suites drive the lab with the real binaries in bin/.
e2e: build kube-apiserver
	@if [ "$$(id -u)" != 0 ]; then echo "e2e: skipped (needs root for network namespaces)"; \
	elif [ -z "$$($(GO) list ./e2e/... 2>/dev/null)" ]; then echo "e2e: no suites yet"; \
	else CALYX_BIN_DIR=$(BIN) CALYX_KUBE_APISERVER=$(KUBE_APISERVER) $(GO) test $(TEST_FLAGS) -p 1 ./e2e/...; fi

# kube-apiserver: built when missing (cold: ~10 minutes on 2 cores, niced so
# the machine stays usable), else nothing to do. The cache is keyed by the
# version alone (a fresh clone's file times must not trigger a rebuild):
# change KUBE_VERSION with tools/kube-apiserver/go.mod.
kube-apiserver: $(KUBE_APISERVER)
$(KUBE_APISERVER):
	@mkdir -p $(dir $@)
	@echo "building kube-apiserver $(KUBE_VERSION) into $@ (once; ~10 minutes cold)"
	cd tools/kube-apiserver && nice -n 10 $(GO) build -trimpath -ldflags='-s -w' -o $@.tmp . && mv $@.tmp $@

# Each fuzz target for a few seconds (go test -fuzz takes one target at a time).
fuzz-quick:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "fuzz $$t $$f ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$t >/dev/null || { $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$t; exit 1; }; \
		done; \
	done

fuzz:
	$(MAKE) fuzz-quick FUZZTIME=2m

# Benchmarks: each figure beside its peer, written to bench/results.json.
# QUICK=1 runs a short version.
bench: deps build kube-apiserver
	CALYX_KUBE_APISERVER=$(KUBE_APISERVER) $(GO) run ./cmd/calyx-bench $(if $(QUICK),-quick) -out bench/results.json

soak: deps build
	CALYX_SOAK=1 CALYX_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 2h -run Soak -v ./e2e/...

demo: deps build
	@$(BIN)/calyx-lab demo

clean:
	rm -rf $(BIN)
