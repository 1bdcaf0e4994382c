# healer — see README.md. `make run` runs the service on embedded defaults;
# `make test` is what CI runs.

GO        ?= go
BIN       := bin
HEALER    := $(BIN)/healer
K8S_VERSION  ?= v1.36.3
ETCD_VERSION ?= v3.6.7
GOLANGCI_LINT_VERSION ?= v2.15.0
export K8S_VERSION ETCD_VERSION

.PHONY: all build run demo test e2e testenv bench lint policy-test fuzz fmt vet clean manifests

all: build

build:
	$(GO) build -o $(HEALER) ./cmd/healer

## run: the service with embedded NATS JetStream, the in-process limiter and the built-in policies.
run:
	$(GO) run ./cmd/healer serve --data-dir ./data

## demo: a local three-member etcd cluster loses a member and healer replaces it (under a minute; leaves nothing behind).
demo: build
	$(HEALER) demo

## testenv: kube-apiserver, kube-controller-manager and etcd built from the Go module proxy into bin/ (cached outside the clone).
testenv:
	@bash hack/testenv/build.sh

## test: vet, Rego tests and every Go test, on real NATS, Redis, etcd and kube-apiserver.
test: testenv vet policy-test
	$(GO) test -count=1 -timeout 20m ./...

vet:
	$(GO) vet ./...

## e2e: only the end-to-end tests.
e2e: testenv
	$(GO) test -count=1 -timeout 20m -v ./test/e2e/...

## policy-test: the Rego unit tests of the built-in policies, the way a policy author runs them.
policy-test:
	$(GO) run ./cmd/healer policy test policies

## bench: Go benchmarks and the webhook load generator; figures go to docs/benchmarks.md.
bench: testenv
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./policies/ ./audit/ ./detectors/alertmanager/ ./bus/
	$(GO) test -run '^$$' -bench . -benchtime 1x ./detectors/nodeproblem/
	$(GO) test -run '^$$' -bench ConditionToCordon -benchtime 120x ./test/e2e/
	$(GO) test -run '^$$' -bench PanicToRestarted -benchtime 20x ./test/e2e/
	$(GO) test -run '^$$' -bench AgentRoundTrip -benchtime 5000x ./internal/app/agent/
	$(GO) test -run '^$$' -bench Failover -benchtime 5x ./remediators/vip/
	$(GO) test -run '^$$' -bench EtcdMemberReplaced -benchtime 5x ./test/e2e/
	$(GO) test -run '^$$' -bench VoteToAnswer -benchtime 1000x ./engine/approval/
	$(GO) test -run '^$$' -bench PipelineDryRun -benchtime 10000x ./engine/
	$(GO) run ./test/load -duration 10s -concurrency 32 -alerts 10
	$(GO) test -run '^$$' -bench ServeMemory -benchtime 1x -timeout 60m ./test/scale/

## fuzz: each fuzz target for FUZZTIME (their seed corpora in testdata/fuzz also run in `make test`).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzWebhookBody -fuzztime $(FUZZTIME) ./detectors/alertmanager/
	$(GO) test -run '^$$' -fuzz FuzzVerifyChain -fuzztime $(FUZZTIME) ./audit/
	$(GO) test -run '^$$' -fuzz FuzzCanonicalJSON -fuzztime $(FUZZTIME) ./audit/
	$(GO) test -run '^$$' -fuzz FuzzDecideDefault -fuzztime $(FUZZTIME) ./policies/
	$(GO) test -run '^$$' -fuzz FuzzAppendJSON -fuzztime $(FUZZTIME) ./bus/
	$(GO) test -run '^$$' -fuzz FuzzInteractionPayload -fuzztime $(FUZZTIME) ./chatops/
	$(GO) test -run '^$$' -fuzz FuzzSlashScope -fuzztime $(FUZZTIME) ./chatops/
	$(GO) test -run '^$$' -fuzz FuzzAgentVerbParams -fuzztime $(FUZZTIME) -parallel 1 ./internal/app/agent/

## manifests: deploy/'s RBAC template from the remediator registry, and deploy/manifests/healer.yaml from the Helm chart.
manifests:
	$(GO) run ./deploy/gen

## lint: golangci-lint with the linters in .golangci.yml.
lint:
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)/healer data
