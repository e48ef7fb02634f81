# localkube.mk: build and test the local Kubernetes (see localkube/README.md).
# Included from the root Makefile; also works alone:
#   make -f localkube/localkube.mk localkube

BIN ?= bin
GO ?= go
LOCALKUBE_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
LOCALKUBE_BIN := $(abspath $(BIN))
# The pinned versions: a change to either rebuilds the upstream binaries.
LOCALKUBE_PINS := $(LOCALKUBE_DIR)/go.mod $(LOCALKUBE_DIR)/go.sum
LOCALKUBE_SOURCES := $(shell find $(LOCALKUBE_DIR)/cmd/localkube $(LOCALKUBE_DIR)/internal -name '*.go' -not -name '*_test.go' 2>/dev/null)
# Stamp the upstream binaries with the pinned release, as its own build does,
# so `kubectl version` and the API server's /version tell the truth.
LOCALKUBE_K8S_VERSION := $(shell sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[^ ]*\).*/\1/p' $(LOCALKUBE_DIR)/go.mod)
LOCALKUBE_VERSION_VARS := gitVersion=$(LOCALKUBE_K8S_VERSION) gitMajor=$(word 2,$(subst ., ,$(subst v,v ,$(LOCALKUBE_K8S_VERSION)))) gitMinor=$(word 2,$(subst ., ,$(LOCALKUBE_K8S_VERSION))) gitTreeState=clean
LOCALKUBE_LDFLAGS := $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version,$(foreach v,$(LOCALKUBE_VERSION_VARS),-X $(pkg).$(v)))
LOCALKUBE_TEST_FLAGS ?= -race -count=1 -timeout=15m
# CoreDNS is its own module (cmd/coredns/go.mod): its release's requirements
# (etcd client, grpc, otel) are newer than the ones Kubernetes v1.36.3 and
# etcd v3.6.8 pin, and one module would build those binaries with them.
LOCALKUBE_COREDNS := $(LOCALKUBE_DIR)/cmd/coredns

.PHONY: localkube test-localkube

localkube: $(BIN)/etcd $(BIN)/kube-apiserver $(BIN)/kube-controller-manager $(BIN)/kube-proxy $(BIN)/kubectl $(BIN)/coredns $(BIN)/localkube ## Build etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl, coredns and localkube into bin/ (only when pins or sources change)

# The upstream binaries and localkube in one `go build`: Go compiles their
# shared packages once and links the six binaries side by side instead of
# one after another. Make reruns it only when the pins or sources change;
# the Go build cache keeps a rebuild after a pin change incremental. (The
# version -X flags name packages localkube and etcd do not link: ignored.)
LOCALKUBE_UPSTREAM := etcd kube-apiserver kube-controller-manager kube-proxy kubectl
$(addprefix $(BIN)/,$(LOCALKUBE_UPSTREAM) localkube) &: $(LOCALKUBE_PINS) $(foreach c,$(LOCALKUBE_UPSTREAM),$(LOCALKUBE_DIR)/cmd/$(c)/main.go) $(LOCALKUBE_SOURCES)
	@mkdir -p $(LOCALKUBE_BIN)
	cd $(LOCALKUBE_DIR) && $(GO) build -ldflags '$(LOCALKUBE_LDFLAGS)' -o $(LOCALKUBE_BIN)/ $(foreach c,$(LOCALKUBE_UPSTREAM) localkube,./cmd/$(c))

$(BIN)/coredns: $(LOCALKUBE_COREDNS)/go.mod $(LOCALKUBE_COREDNS)/go.sum $(LOCALKUBE_COREDNS)/main.go
	@mkdir -p $(LOCALKUBE_BIN)
	cd $(LOCALKUBE_COREDNS) && $(GO) build -o $(LOCALKUBE_BIN)/coredns .

test-localkube: localkube ## Run localkube's tests against a real cluster (unit tests, then e2e on bin/localkube)
	cd $(LOCALKUBE_DIR) && LOCALKUBE_BIN_DIR= LOCALKUBE_BINARY=$(LOCALKUBE_BIN)/localkube $(GO) test $(LOCALKUBE_TEST_FLAGS) ./internal/... ./e2e/...
