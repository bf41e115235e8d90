# ketnoi: gRPC-native data exchange between agencies.
# `make demo` runs the federation on real data; `make test` runs every test.

GO        ?= go
BIN       := $(CURDIR)/bin
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2

# Packages whose code runs concurrently get the race detector.
RACE_PKGS := ./internal/evidence/... ./internal/gconf/... ./internal/node/... \
	./internal/registry/... ./internal/exchange/... ./internal/proxy/... \
	./internal/mtls/... ./internal/logging/... ./integration/...

.PHONY: help all build demo test unit race integration bench lint generate checkgenerate tools clean conformance

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

all: lint test ## lint and test

build: ## build the binaries into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

demo: build ## run registry, three agency nodes and the dvhc backend on loopback with real data
	$(GO) run ./integration/demo --bin $(BIN)

test: ## unit tests, race detector on concurrent packages, integration tests
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE_PKGS)

integration: ## only the end-to-end tests
	$(GO) test -count=1 -v ./integration/...

bench: build ## Go benchmarks, then direct vs ketnoi vs nginx vs a grpc-go proxy pair on loopback (about 3 minutes)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		{ test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 && \
		  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } || \
		echo "bench: nginx is not installed and could not be installed; its rows are skipped"
	$(GO) run ./integration/bench --bin $(BIN)

lint: tools ## staticcheck, buf lint and format
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code

generate: tools ## regenerate Go code from proto/
	PATH=$(BIN):$$PATH $(BIN)/buf generate

checkgenerate: generate ## fail if generated code is stale
	git diff --exit-code -- proto

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/staticcheck

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean: ## remove built binaries
	rm -rf $(BIN)

conformance: ## grpc-go interop cases and Connect conformance suite's gRPC cases through two nodes, verbose
	$(GO) test -count=1 -run 'Interop|ConnectConformance' -v ./integration/
