# e2ee-chat — one entry point for building, testing, demos and measurements.
# The machine has 2 cores: every cargo call uses -j2 and one shared target/.

CARGO ?= cargo
JOBS ?= 2
CARGO_FLAGS ?= -j$(JOBS)
FUZZ_SECONDS ?= 60

.PHONY: all build release test lint fmt demo cluster demo-cluster relay agent load bench bench-relay evidence fuzz clean

all: build

build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

release:
	$(CARGO) build $(CARGO_FLAGS) --release --bins

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## test: lint, then every unit, property and integration test of the workspace
test: lint
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins
	$(CARGO) test $(CARGO_FLAGS) --workspace --all-targets
	$(CARGO) test $(CARGO_FLAGS) --workspace --doc

## demo: a relay and two scripted agents (Alice and Bob) on loopback
demo: release
	./integration/demo/run-demo.sh

## cluster: a 3-primary Redis Cluster (AOF, appendfsync always; redis-server installed
## from Debian if missing) and three relays on it, on loopback, until Ctrl-C; prints how
## to point agents at them (docs/RELAY.md, "A relay cluster")
cluster: release
	./integration/cluster/run-cluster.sh

## demo-cluster: the cluster, with scripted agents Alice on relay 1, Bob on relay 2 and
## Carol on relay 3
demo-cluster: release
	./integration/cluster/run-demo-cluster.sh

## relay / agent: run one from a shell (see README for flags)
relay: release
	./target/release/e2ee-relay $(ARGS)

agent: release
	./target/release/e2ee-agent $(ARGS)

## load: one e2ee-load run; ARGS replaces the default run, e.g.
##   make load ARGS="run --target relay-sqlite --max --duration 20s"
##   make load ARGS="run --rate 20000 --churn 20%/3s --e2e"
LOAD_ARGS ?= run --target relay-memory --pairs 50 --rate 20000 --duration 10s --json target/load.json --plot target/load.svg
load: release
	./target/release/e2ee-load $(or $(ARGS),$(LOAD_ARGS))

## bench-relay: relay (memory, durable), nats-server and redis-server, same workload,
## one comparison table (installs the servers from Debian if missing); BENCH_ARGS extra
bench-relay: release
	./integration/bench/bench-relay.sh $(BENCH_ARGS)

## evidence: every security property (confidentiality on the wire, adversarial relay,
## forward secrecy, healing, MITM detection, impersonation, availability) against real relay and agent
## processes; writes evidence/report.md and evidence/report.json, fails if a verdict fails.
## The adversarial relay is target/release/e2ee-relay-adversary (e2ee-integration, built
## by `release` with the e2ee-relay feature `adversary`); e2ee-relay has no such mode
## (docs/RELAY.md).
## EVIDENCE_ARGS extra, e.g. EVIDENCE_ARGS="--only adversary,mitm" or "--quick"
evidence: release
	./target/release/e2ee-evidence --out evidence $(EVIDENCE_ARGS)

## bench: criterion benchmarks of the crypto (X3DH, encrypt+decrypt, DH ratchet step)
bench:
	$(CARGO) bench $(CARGO_FLAGS) -p e2ee-protocol --bench crypto

## fuzz: each cargo-fuzz target for FUZZ_SECONDS with the nightly toolchain
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd protocol && for t in frame_decode message_decode session_decrypt; do \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean
