# meshtls: automatic mutual TLS for a Kubernetes service mesh.
# `make help` lists the targets.

BIN        := $(CURDIR)/bin
GO         ?= go
# One version for the CLI, the binaries and the images: the tag of a clean
# tagged commit (v0.2.0), else "dev-" and what git describe says
# (dev-e45bc1c, dev-v0.2.0-3-g1a2b3c4-dirty), so an image tag that was never
# published says so.
VERSION    ?= $(shell scripts/version.sh)
LDFLAGS    := -X meshtls/cli.Version=$(VERSION) -X meshtls/internal/version.Version=$(VERSION)
GOLANGCI_LINT_VERSION := v2.15.0

export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@if [ -t 1 ] && [ -z "$${NO_COLOR:-}" ]; then c='\033[36m'; r='\033[0m'; else c=; r=; fi; \
	awk -v c="$$c" -v r="$$r" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-16s%s %s\n", c, $$1, r, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries (linkerd, …) into bin/
	@mkdir -p $(BIN)
	@$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Images: built by tools/images (its own module, go-containerregistry) with
# no Docker: static binaries on an empty base, one index per image for
# IMAGES_PLATFORMS, dated by the commit (SOURCE_DATE_EPOCH) so a commit
# always gives the same digests. IMAGES_REGISTRY is the name the layout and
# the archive carry (what install and inject reference by default).
IMAGES_REGISTRY   ?= ghcr.io/meshtls
IMAGES_PLATFORMS  ?= linux/amd64,linux/arm64
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: images
images: $(BIN)/meshtls-images ## Build the OCI images (controller, proxy, proxy-init, emojivoto; amd64 and arm64) without Docker into bin/images/: oci/ (a layout) and meshtls-VERSION.oci.tar
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(BIN)/meshtls-images build --root $(CURDIR) --out $(BIN)/images \
		--version $(VERSION) --registry $(IMAGES_REGISTRY) --platforms $(IMAGES_PLATFORMS)

.PHONY: images-push
images-push: $(BIN)/meshtls-images ## Push what `make images` built to REGISTRY (make images-push REGISTRY=ghcr.io/you/meshtls); credentials from docker login
	@test -n "$(REGISTRY)" || { echo "images-push: no REGISTRY: make images-push REGISTRY=host[:port]/path" >&2; exit 1; }
	$(BIN)/meshtls-images push --out $(BIN)/images --registry $(REGISTRY)

$(BIN)/meshtls-images: $(wildcard tools/images/*.go) tools/images/go.mod tools/images/go.sum
	@mkdir -p $(BIN)
	cd tools/images && $(GO) build -o $@ .

.PHONY: demo
demo: ## Start the live demo: installs what it needs (iptables), then local cluster, control plane, emojivoto meshed, `linkerd stat authority -n emojivoto`; fails where the mesh cannot run (no root)
	@scripts/demo.sh up

.PHONY: demo-offline
demo-offline: ## Print the table of a capture recorded from the live demo (`linkerd stat --capture builtin:emojivoto-live`): no root, no cluster
	@scripts/demo.sh offline

.PHONY: demo-down
demo-down: ## Stop the live demo's cluster and delete its state (.localkube/demo)
	@scripts/demo.sh down

.PHONY: deps
deps: ## Install the Debian packages the tests use and this machine lacks (scripts/tools.txt: iptables, iproute2, openssl, tmux, chromium, …)
	@scripts/deps.sh test

.PHONY: test
test: deps $(BIN)/testsum ## Run every test: unit, golden, integration (real Prometheus, real local Kubernetes), then a summary of every skip
	@$(MAKE) --no-print-directory -j3 build localkube prometheus
	@scripts/test.sh

.PHONY: test-unit
test-unit: ## Run the unit tests only: no root, no cluster (what a plain `go test ./...` runs)
	$(GO) test -race -count=1 ./...

$(BIN)/testsum: internal/cmd/testsum/main.go
	@mkdir -p $(BIN)
	$(GO) build -o $@ ./internal/cmd/testsum

FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (30s); FUZZ=regexp picks targets, `scripts/fuzz.sh -l` lists them
	@FUZZTIME='$(FUZZTIME)' FUZZ='$(FUZZ)' GO='$(GO)' scripts/fuzz.sh

.PHONY: generate
generate: ## Regenerate the gRPC code (proto/), fixtures (captures) and golden files
	@scripts/deps.sh generate
	$(GO) generate ./...
	$(GO) test ./... -run Golden -update

# Debian's prometheus and promtool are built without Kubernetes service
# discovery, which install's Prometheus config uses; build Prometheus's own
# from the pinned module (install/prometheus, own go.mod). bin/prometheus is
# the launcher the local cluster runs for the control plane's Prometheus
# image; it execs bin/prometheus-server (see install/prometheus/README.md).
PROM_PINS := install/prometheus/go.mod install/prometheus/go.sum
# Upstream's build tags: remove_all_sd drops every service discovery but
# file, http and static, and enable_kubernetes_sd adds back the one install's
# config uses (internal/testprom uses file). Without the cloud discoveries'
# SDKs a cold build takes about a third less CPU and 1.5 GB instead of 4.1 GB
# at its peak (BENCHMARKS.md).
PROM_TAGS  := remove_all_sd,enable_kubernetes_sd
PROM_STAGE := $(BIN)/.prometheus

.PHONY: prometheus
prometheus: $(BIN)/prometheus-server $(BIN)/prometheus $(BIN)/promtool ## Build Prometheus (server, launcher, promtool) from its Go module into bin/

# One go build for the three, so their compiles share one scheduler and the
# links overlap. It writes to a staging dir because go names each binary
# after its package dir (cmd/prometheus would be bin/prometheus, the
# launcher's name). The staged files stay as hard links, so the next go build
# finds them up to date and relinks only what changed; touch, because an
# up-to-date binary keeps its old mtime. `&:` (one recipe makes all three)
# needs GNU make 4.3 or later.
$(BIN)/prometheus-server $(BIN)/prometheus $(BIN)/promtool &: $(PROM_PINS) install/prometheus/launcher/main.go
	@mkdir -p $(PROM_STAGE)
	cd install/prometheus && $(GO) build -tags $(PROM_TAGS) -o $(PROM_STAGE)/ \
		github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool ./launcher
	ln -f $(PROM_STAGE)/prometheus $(BIN)/prometheus-server
	ln -f $(PROM_STAGE)/launcher $(BIN)/prometheus
	ln -f $(PROM_STAGE)/promtool $(BIN)/promtool
	@touch $(BIN)/prometheus-server $(BIN)/prometheus $(BIN)/promtool

.PHONY: bench
bench: localkube ## Run the benchmarks: stat over 1,000 pods, parsers, CA signing, a 1,000-owner burst, check --tls over 1,000 pods, the tap TUI at 10k and 20k events/s, the tap API at 50k events/s from 100 proxies, the dashboard's 100-deployment page and its live list at 1,000 events/s in chromium
	@scripts/deps.sh bench
	$(GO) test -run '^$$' -bench Aggregate1000Pods -benchtime 3x -count 5 ./stat/ | tee bench/stat-aggregate.txt
	$(GO) test -run '^$$' -bench Parse -count 5 ./stat/ | tee bench/stat-parse.txt
	bench/stat-rss.sh | tee bench/stat-rss.txt
	$(GO) test -run '^$$' -bench Issue -benchmem -count 5 ./ca/pki/ | tee bench/ca-pki.txt
	$(GO) run ./bench/ca-burst | tee bench/ca-burst.txt
	$(GO) test -run '^$$' -bench Model10k -benchtime 5x -count 5 ./tui/ | tee bench/tui.txt
	$(GO) test -run '^$$' -bench Sustained -benchtime 1x -count 3 ./tui/ | tee -a bench/tui.txt
	$(GO) test -run '^$$' -bench CheckTLS1000Pods -benchtime 5x -count 5 ./check/ | tee bench/check-tls.txt
	$(GO) test -run '^$$' -bench NamespacePage100Deployments -benchtime 5x -count 5 ./dashboard/ | tee bench/dashboard-page.txt
	DASHBOARD_TAP_BENCH=1 $(GO) test -count=1 -v -run TestDashboardTapMemory1000PerSecond ./cli/ | tee bench/dashboard-tap.txt
	$(GO) test -run '^$$' -bench Fanout100Proxies -benchtime 1x -count 3 ./tapapi/ | tee bench/tapapi.txt
	$(MAKE) bench-proxy

.PHONY: bench-proxy
bench-proxy: ## Benchmark the proxy pair (plain, mTLS) against nginx and haproxy pairs, HTTP/1.1 and gRPC (PROXY_BENCH_FLAGS, e.g. -rounds 5 -baseline OLD_BUILD)
	@scripts/deps.sh bench
	$(GO) run ./bench/proxy $(PROXY_BENCH_FLAGS) | tee bench/proxy.txt

.PHONY: lint
lint: $(BIN)/golangci-lint ## Run golangci-lint (gofmt, vet, staticcheck, …) on both modules
	$(BIN)/golangci-lint run ./...
	cd localkube && $(BIN)/golangci-lint run --config ../.golangci.yml ./...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

include localkube/localkube.mk

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
