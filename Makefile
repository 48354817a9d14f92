# pushwire — `make help` lists the targets.

GO       ?= go
ENGINE   ?= std
TRANSPORT ?= tcp
CONNS    ?= 10000
RATE     ?= 2000
IDLE     ?= 10s
PUSH_RATE ?= 2000
PUSH_DURATION ?= 10s
PUSH_SENDERS ?= 64
INSTANCES ?= 1
ROUTE    ?= memory
MODE     ?= registry
WORKERS  ?= 0
ROUNDS   ?= 3
CPUS     ?=
PROFILE  ?=
PHASES   ?= ramp,idle,upstream,push,group,group-all,broadcast
BIN      := bin/pushwire
COMMIT   := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell test -n "$$(git status --porcelain 2>/dev/null)" && echo -dirty)
VERSION  := $(shell git describe --tags --always 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS     := ./...
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := bin/golangci-lint
THIRDPARTY := test/thirdparty

.PHONY: help build deps vet fmt-check lint lint-tool tidy-check test unit race integration smoke-bench bench bench-redis bench-all fuzz gobench clean tools tui-e2e

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

deps: ## download the Go modules
	$(GO) mod download

build: deps ## build bin/pushwire
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pushwire

vet: deps ## go vet
	$(GO) vet $(PKGS)

fmt-check: ## fail on files gofmt would change
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint-tool: ## install golangci-lint $(GOLANGCI_LINT_VERSION) into bin/, unless that version is already there
	@if ! $(GOLANGCI_LINT) version 2>/dev/null | grep -qF 'has version $(GOLANGCI_LINT_VERSION:v%=%) '; then \
	  echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into bin/"; rm -f $(GOLANGCI_LINT); \
	  GOBIN=$(CURDIR)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	fi

lint: lint-tool tidy-check ## golangci-lint with .golangci.yml (pinned version, in bin/), and go.mod/go.sum tidy
	$(GOLANGCI_LINT) run $(PKGS)

tidy-check: ## fail when go mod tidy would change go.mod or go.sum (prints the diff, changes nothing)
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy and commit the result"; exit 1; }

test: tools build vet fmt-check lint race smoke-bench smoke-capacity smoke-report ## everything CI runs: tools (tmux, redis-server, chromium, node), build, vet, gofmt, lint, tidy, tests with -race, a small bench checked, a small capacity search checked, a small report drawn

# Under make test a missing chromium, node or npm package fails the third-party client tests
# (cmd/pushwire/thirdparty_integration_test.go) instead of skipping them.
test: export PUSHWIRE_THIRDPARTY := 1

unit: deps ## tests without the race detector
	$(GO) test -shuffle=on -count=1 $(PKGS)

race: deps ## tests with the race detector (every package: all of them run goroutines)
	$(GO) test -race -shuffle=on -count=1 -timeout 10m $(PKGS)

integration: build ## only the multi-process integration tests
	$(GO) test -count=1 -run Integration -v ./cmd/pushwire/

smoke-bench: build ## a small bench (a few hundred connections) whose result file must pass its checks
	@dir=$$(mktemp -d); \
	$(BIN) bench --engine $(ENGINE) --conns 300 --rate 600 --idle 2s --push-rate 300 --push-duration 3s --request-rate 300 --group-size 100 --group-rate 10 --fanout-pushes 3 --out $$dir --check \
	  && $(BIN) bench --engine $(ENGINE) --conns 600 --workers 2 --rate 600 --idle 1s --push-rate 300 --push-duration 2s --request-rate 300 --group-size 100 --group-rate 10 --fanout-pushes 2 --out $$dir --check \
	  && $(BIN) results check $$dir/*.json; st=$$?; rm -rf $$dir; exit $$st

bench: bench-redis build ## measured run: make bench ENGINE=gnet TRANSPORT=ws INSTANCES=6 CONNS=100000 ROUTE=redis MODE=registry (writes results/<id>.json; TRANSPORT=tcp|tls|ws|wss|quic); TUI=1 watches it live; CPUS=gateway=1,loadgen=0 places the processes; PROFILE=1 saves CPU and heap profiles per phase
	$(BIN) bench --engine $(ENGINE) --transport $(TRANSPORT) --instances $(INSTANCES) --conns $(CONNS) --rate $(RATE) --idle $(IDLE) \
	  --push-rate $(PUSH_RATE) --push-duration $(PUSH_DURATION) --push-senders $(PUSH_SENDERS) --phases $(PHASES) --route $(ROUTE) --mode $(MODE) --workers $(WORKERS) \
	  --out results$(if $(filter 1 yes true,$(TUI)), --tui)$(if $(CPUS), --cpus $(CPUS))$(if $(filter 1 yes true,$(PROFILE)), --profile)

bench-redis: ## with ROUTE=redis: install redis-server when missing (the bench starts its own on a free port)
	@case "$(ROUTE)" in memory) ;; redis) command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server) ;; \
	  *) echo "ROUTE=$(ROUTE): want memory or redis"; exit 2 ;; esac
	@case "$(MODE)" in registry|broadcast) ;; *) echo "MODE=$(MODE): want registry or broadcast"; exit 2 ;; esac
	@if [ "$(INSTANCES)" -gt 1 ] 2>/dev/null && [ "$(ROUTE)" = memory ]; then \
	  echo "INSTANCES=$(INSTANCES) with ROUTE=memory: gateways on the memory route cannot reach each other's devices; use ROUTE=redis"; exit 2; fi
	@case "$(TRANSPORT)" in tcp|tls|ws|wss|quic) ;; *) echo "TRANSPORT=$(TRANSPORT): want tcp, tls, ws, wss or quic"; exit 2 ;; esac

bench-all: bench-redis build ## every engine and the floor in one sitting over TRANSPORT, interleaved ROUNDS times (default 3) into results/<time>-engines-<transport>/: medians with min–max side by side, ratios against std and the floor (TRANSPORT=quic: the quic engine only; the floor serves tcp only); CPUS=, PROFILE=1 as for bench
	$(BIN) bench --engines all --transport $(TRANSPORT) --rounds $(ROUNDS) --instances $(INSTANCES) --conns $(CONNS) --rate $(RATE) \
	  --idle $(IDLE) --push-rate $(PUSH_RATE) --push-duration $(PUSH_DURATION) --push-senders $(PUSH_SENDERS) --phases $(PHASES) --route $(ROUTE) --mode $(MODE) \
	  --workers $(WORKERS) --out results --check$(if $(CPUS), --cpus $(CPUS))$(if $(filter 1 yes true,$(PROFILE)), --profile)

.PHONY: capacity smoke-capacity

capacity: build ## capacity search: each workload's highest sustained rate (p99 within P99, default 50ms, broadcast within BROADCAST_P99, default 500ms; steps of STEP_DURATION, default 5s) over CONNS connections: make capacity ENGINE=gnet, or ENGINES=all (std,gnet,netpoll,nbio,floor in one sitting); WORKLOADS=push,group … to narrow it; CPUS=gateway=LIST,loadgen=LIST to place the processes; writes results/<time>-capacity/ with ceilings.txt
	$(BIN) capacity $(if $(ENGINES),--engines $(ENGINES),--engine $(ENGINE)) --transport $(TRANSPORT) --conns $(CONNS) --rate $(RATE) --instances $(INSTANCES) \
	  --route $(ROUTE) --workers $(WORKERS) --p99-limit $(or $(P99),50ms) --broadcast-p99-limit $(or $(BROADCAST_P99),500ms) \
	  --step-duration $(or $(STEP_DURATION),5s)$(if $(WORKLOADS), --workloads $(WORKLOADS))$(if $(CPUS), --cpus $(CPUS)) --out results

smoke-capacity: build ## a small capacity search CI can afford (gnet, 300 connections, push and broadcast, low maxima) that must pass --check
	@dir=$$(mktemp -d); \
	$(BIN) capacity --engine gnet --conns 300 --rate 600 --step-duration 2s --workloads connect,push,broadcast --refine 1 \
	  --start-rates connect=100,push=200 --max-rates connect=400,push=800,broadcast=4 --out $$dir --check; st=$$?; rm -rf $$dir; exit $$st

tools: ## install the tools the tests need (tmux, for the dashboard end-to-end test; redis-server, for the route store and cluster tests; chromium, nodejs, npm and the npm packages of test/thirdparty, for the third-party client tests)
	command -v tmux >/dev/null || (apt-get update && apt-get install -y tmux)
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	command -v node >/dev/null || (apt-get update && apt-get install -y nodejs)
	command -v npm >/dev/null || (apt-get update && apt-get install -y npm)
	@# npm ci installs exactly package-lock.json; it runs again only when the lock file changed.
	cmp -s $(THIRDPARTY)/package-lock.json $(THIRDPARTY)/node_modules/.pushwire-lock \
	  || (cd $(THIRDPARTY) && npm ci --no-audit --no-fund && cp package-lock.json node_modules/.pushwire-lock)
	@# The package may start a system service on 6379; the tests run their own servers on free ports.
	-@if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then systemctl stop redis-server; systemctl disable redis-server; fi

tui-e2e: build tools ## the dashboard end-to-end test: pushwire tui in tmux against a live deployment
	PUSHWIRE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -run TestE2ETmux -v ./tui/

fuzz: deps ## run every fuzz target (decoders of outside input) for FUZZTIME each (default 30s)
	$(GO) test -run=none -fuzz='^FuzzDecode$$' -fuzztime=$${FUZZTIME:-30s} ./core/frame/
	$(GO) test -run=none -fuzz='^FuzzReader$$' -fuzztime=$${FUZZTIME:-30s} ./core/frame/
	$(GO) test -run=none -fuzz='^FuzzPushAPI$$' -fuzztime=$${FUZZTIME:-30s} ./core/gateway/
	$(GO) test -run=none -fuzz='^FuzzOnData$$' -fuzztime=$${FUZZTIME:-30s} ./core/gateway/
	$(GO) test -run=none -fuzz='^FuzzBusMessage$$' -fuzztime=$${FUZZTIME:-30s} ./core/gateway/
	$(GO) test -run=none -fuzz='^FuzzMetaHeaders$$' -fuzztime=$${FUZZTIME:-30s} ./core/forward/
	$(GO) test -run=none -fuzz='^FuzzVerify$$' -fuzztime=$${FUZZTIME:-30s} ./control/token/
	$(GO) test -run=none -fuzz='^FuzzConnect$$' -fuzztime=$${FUZZTIME:-30s} ./control/
	$(GO) test -run=none -fuzz='^FuzzDecodeBatch$$' -fuzztime=$${FUZZTIME:-30s} ./backend/
	$(GO) test -run=none -fuzz='^FuzzParseRequest$$' -fuzztime=$${FUZZTIME:-30s} ./internal/wsproto/
	$(GO) test -run=none -fuzz='^FuzzParseHeader$$' -fuzztime=$${FUZZTIME:-30s} ./internal/wsproto/
	$(GO) test -run=none -fuzz='^FuzzDecoder$$' -fuzztime=$${FUZZTIME:-30s} ./engines/ws/
	$(GO) test -run=none -fuzz='^FuzzUpgradeBytes$$' -fuzztime=$${FUZZTIME:-30s} ./engines/ws/
	$(GO) test -run=none -fuzz='^FuzzHandshakeInput$$' -fuzztime=$${FUZZTIME:-30s} ./engines/tlslayer/
	$(GO) test -run=none -fuzz='^FuzzFloorRead$$' -fuzztime=$${FUZZTIME:-30s} ./floor/
	$(GO) test -run=none -fuzz='^FuzzParsePayload$$' -fuzztime=$${FUZZTIME:-30s} ./loadgen/

gobench: deps ## Go micro-benchmarks (allocations reported)
	$(GO) test -run=none -bench=. -benchmem ./core/... ./control/... ./engines/ws/ ./internal/wsproto/ ./floor/

.PHONY: benchstat-tool smoke-report

benchstat-tool: ## install benchstat (golang.org/x/perf, pinned) into bin/, for pushwire results benchstat
	GOBIN=$(CURDIR)/bin $(GO) install golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

smoke-report: build ## a report CI can afford: two small bench runs (std, then the floor) into one directory, pushwire results report over it, its charts checked
	@dir=$$(mktemp -d); st=0; \
	for e in std floor; do \
	  $(BIN) bench --engine $$e --conns 300 --rate 600 --idle 2s --push-rate 300 --push-duration 2s --request-rate 300 --group-size 100 --group-rate 10 \
	    --fanout-pushes 2 --phases ramp,idle,push,group-all,broadcast --out $$dir >$$dir/bench-$$e.log 2>&1 || { echo "smoke-report: bench $$e failed:"; tail -20 $$dir/bench-$$e.log; st=1; }; \
	done; \
	if [ $$st = 0 ]; then \
	  md=$$($(BIN) results report $$dir) && echo "$$md" && \
	  for c in connections memory-per-conn rss-over-time deliveries-push deliveries-broadcast latency-push latency-broadcast gc-pause-max; do \
	    test -s $$dir/charts/$$c.png || { echo "smoke-report: charts/$$c.png missing"; st=1; }; \
	    grep -qF "(charts/$$c.png)" "$$md" || { echo "smoke-report: report.md does not show $$c.png"; st=1; }; \
	  done || st=1; \
	fi; rm -rf $$dir; exit $$st

clean: ## remove build outputs
	rm -rf bin
