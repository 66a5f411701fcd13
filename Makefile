# Nghenhan monitoring: two commands on a fresh machine, `make up` and `make test`.
# `make up` runs Docker Compose when a Docker engine answers. With a Docker client but no
# answering engine it says so and stops; `make up NATIVE=1` (or no Docker client at all)
# runs the same stack as native processes (deploy/native/stack.sh), and says so.
# Everything is installed by these targets; downloads and builds are cached under .cache/.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
STACK := deploy/native/stack.sh
DEPLOY := deploy/vps/deploy.sh
BIN := .cache/bin
RENDERED := .cache/run/check
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

# `make up BINANCE=sim`: the collector talks to the bundled exchange-sim (offline demos).
BINANCE ?= real
export BINANCE
NATIVE ?=
DOCKER_CLIENT := $(shell command -v docker 2>/dev/null)
# yes: Compose; native: the native stack; no-engine: a Docker client whose engine is away.
ifneq ($(NATIVE),)
STACK_KIND := native
else ifeq ($(DOCKER_CLIENT),)
STACK_KIND := native
else
STACK_KIND := $(shell docker info >/dev/null 2>&1 && echo compose || echo no-engine)
endif

# Compose files for `make up`: the base file, the bundled discord-sink while the webhook
# secret names it, and the simulator for BINANCE=sim (deploy/offline/).
COMPOSE_FILES = -f docker-compose.yml \
  $(if $(shell grep -qs '//discord-sink:' secrets/discord_webhook_url && echo y),-f deploy/offline/sink.yml) \
  $(if $(filter sim,$(BINANCE)),-f deploy/offline/sim.yml)
COMPOSE = docker compose $(COMPOSE_FILES)

.PHONY: help up down status install test lint unit check-config compose-check shellcheck rule-test e2e test-cluster bench drill soak deploy deploy-files deploy-test-alert vps-secrets secrets fuzz no-engine

help:
	@echo "make up      start the stack (Docker Compose if an engine answers; NATIVE=1: native processes)"
	@echo "make down    stop it          make status   show each part"
	@echo "make test    everything CI runs: unit, config checks, rule tests, end-to-end"
	@echo "make deploy VPS=user@host [DOMAIN=...]   the stack on a VPS (make deploy alone: usage)"

no-engine:
	@echo "make: a Docker client is installed but no Docker engine answers (docker info: $$( (docker info 2>&1 || true) | grep -m1 -iE 'error|cannot|permission' || echo 'no answer'))."
	@echo "      Start the engine (systemctl start docker; or add yourself to the docker group),"
	@echo "      or run the stack as native processes instead: make $(MAKECMDGOALS) NATIVE=1"
	@exit 1

ifeq ($(STACK_KIND),compose)
up: secrets
	$(COMPOSE) up -d --build --wait
down:
	$(COMPOSE) down --remove-orphans
status:
	$(COMPOSE) ps
else ifeq ($(STACK_KIND),native)
up: secrets
	@echo "make up: the native stack (deploy/native/stack.sh$(if $(NATIVE),, : no Docker client found)); Grafana runs under Compose only"
	$(STACK) up
down:
	$(STACK) down
status:
	$(STACK) status
else
up: no-engine
# Without an engine nothing of Compose's can be running: these act on the native stack.
down:
	$(STACK) down
status:
	$(STACK) status
endif

# Compose reads secrets from files; create missing ones (never committed). The URLs written
# here name the bundled discord-sink by its Compose host; the native stack renders that to
# 127.0.0.1 (stack.sh), and uses a real URL you put in one of these files as it is.
SINK_URL := http://discord-sink:9199
secrets:
	@mkdir -p secrets
	@[ -s secrets/discord_webhook_url ] || { echo "$(SINK_URL)/api/webhooks/0/local-sink" > secrets/discord_webhook_url; \
	  echo "secrets/discord_webhook_url: none set, alerts go to the local discord-sink (see README)"; }
	@[ -s secrets/deadmans_switch_url ] || { echo "$(SINK_URL)/watchdog" > secrets/deadmans_switch_url; \
	  echo "secrets/deadmans_switch_url: none set, the Watchdog pings the local discord-sink (see README)"; }
	@[ -s secrets/deadmans_switch_fail_url ] || { ping=$$(head -n1 secrets/deadmans_switch_url); \
	  case $$ping in $(SINK_URL)/*) echo "$(SINK_URL)/watchdog/fail" ;; *) echo "$${ping%/}/fail" ;; esac > secrets/deadmans_switch_fail_url; \
	  echo "secrets/deadmans_switch_fail_url: none set, failed deliveries go to $$(cat secrets/deadmans_switch_fail_url)"; }
	@[ -s secrets/grafana_admin_password ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' > secrets/grafana_admin_password; \
	  echo "secrets/grafana_admin_password: generated"; }
	@[ -s secrets/postgres_password ] || { (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > secrets/postgres_password); \
	  echo "secrets/postgres_password: generated (Compose's PostgreSQL; the native one is local-only)"; }

install:
	$(STACK) install

# ---- tests ------------------------------------------------------------------------------

test: lint install shellcheck check-config rule-test e2e
# The test stack's PostgreSQL: with DATABASE_URL set when it builds, sync-verifier's
# database tests (tests/store.rs, a fresh database each) run instead of being ignored.
test e2e: export DATABASE_URL := postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan
# Tests run the services as cargo test builds them (debug); `make up` runs release builds.
test e2e: export PROFILE := debug

# First, before anything slow: formatting (rustfmt.toml) and every clippy warning an error.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

# promtool and amtool on the committed files and on the native renderings of them (the
# renderings resolve the rule and template globs, so the rules are checked as loaded).
# Which receivers each alert reaches; inhibitions are checked on a real Alertmanager by
# crates/e2e/tests/alert_routing.rs.
AMROUTE = $(BIN)/amtool config routes test --config.file=alertmanager/alertmanager.yml
check-config: compose-check
	$(STACK) render prometheus/prometheus.yml $(RENDERED)/prometheus.yml
	$(STACK) render alertmanager/alertmanager.yml $(RENDERED)/alertmanager.yml
	$(BIN)/promtool check config --syntax-only prometheus/prometheus.yml
	$(BIN)/promtool check config $(RENDERED)/prometheus.yml
	$(BIN)/promtool check rules prometheus/rules/*.yml
	$(BIN)/amtool check-config alertmanager/alertmanager.yml $(RENDERED)/alertmanager.yml
	$(AMROUTE) --verify.receivers=watchdog alertname=Watchdog severity=warning
	$(AMROUTE) --verify.receivers=delivery-failing,discord alertname=AlertDeliveryFailing severity=warning integration=discord
	$(AMROUTE) --verify.receivers=discord alertname=DataGapOpen severity=critical
	$(AMROUTE) --verify.receivers=discord alertname=ServiceRestarted severity=warning service=collector
	$(AMROUTE) --verify.receivers=discord alertname=ServiceBackoffRestarting severity=critical service=collector
	$(AMROUTE) --verify.receivers=discord alertname=TargetDown severity=critical service=node-exporter
	$(AMROUTE) --verify.receivers=discord alertname=DiskSpaceLow severity=critical service=host
	$(AMROUTE) --verify.receivers=discord alertname=DiskFillingUp severity=warning service=host
	$(AMROUTE) --verify.receivers=discord alertname=BinanceRateLimitNearLimit severity=warning

rule-test:
	$(BIN)/promtool test rules prometheus/tests/*.yml

# Every shell script the project runs, here or on a VPS.
SHELL_SCRIPTS := deploy/native/stack.sh deploy/vps/deploy.sh deploy/vps/install-secrets.sh .ci/run
shellcheck:
	shellcheck $(SHELL_SCRIPTS)

# The real Compose loader (built by `stack.sh install`; no engine needed) on the base file
# and on every override combination that runs: make up (with the sink, with the simulator)
# and the VPS profile. crates/e2e/tests/compose_files.rs checks what they resolve to.
COMPOSE_CHECK = $(BIN)/docker-compose --project-directory . -f docker-compose.yml
VPS_ENV = SITE_ADDRESS=https://monitor.example.com SITE_HOST=monitor.example.com GRAFANA_URL=https://monitor.example.com/
compose-check: secrets
	$(COMPOSE_CHECK) config --quiet
	$(COMPOSE_CHECK) -f deploy/offline/sink.yml config --quiet
	$(COMPOSE_CHECK) -f deploy/offline/sink.yml -f deploy/offline/sim.yml config --quiet
	$(COMPOSE_CHECK) -f deploy/cluster/compose.yml config --quiet
	$(VPS_ENV) $(COMPOSE_CHECK) -f deploy/vps/compose.yml config --quiet
	$(VPS_ENV) $(COMPOSE_CHECK) -f deploy/vps/compose.yml -f deploy/vps/admin-auth.yml config --quiet

# Unit tests (with the database tests: DATABASE_URL above), then the tests that need the
# real Kafka/PostgreSQL/Prometheus/Alertmanager (#[ignore]d in plain `cargo test`), all
# against a native stack of their own (state in
# .cache/test-run, wiped first, so neither run sees the other's symbols, gaps or restarts),
# started with the collector pointed at exchange-sim and always stopped. Both stacks use the
# same ports: the one of `make up` must be down.
TEST_RUN := $(CURDIR)/.cache/test-run
e2e:
	@if $(STACK) status 2>/dev/null | grep -qE ' (healthy|unhealthy) '; then \
	  echo "make test: the stack of 'make up' is running and holds the ports the tests need; 'make down' first"; exit 1; fi
	@export BINANCE=sim NGH_RUN=$(TEST_RUN); rm -rf $(TEST_RUN); trap '$(STACK) down' EXIT; \
	  $(STACK) up && cargo test --workspace --no-fail-fast && cargo test --workspace --no-fail-fast -- --ignored

# Speed and memory goals: each bench prints ratios against a baseline measured in the same run.
bench:
	$(STACK) install
	$(STACK) start kafka
	$(STACK) start postgres
	cargo bench -p exchange-sim --bench throughput
	cargo bench -p collector --bench publish
	cargo bench -p collector --bench heads
	cargo bench -p e2e --bench scale
	cargo bench -p sync-verifier --bench persist

# cargo fuzz (nightly) on every parser of outside input, FUZZ_SECS seconds a target, from
# the local corpus (fuzz/corpus/<target>) and, for the text targets, committed seeds
# (fuzz/seeds/<target>); the structured targets build their inputs with `arbitrary`.
# A crash leaves its input in fuzz/artifacts/<target>/; the run goes on to the other
# targets and fails at the end, naming them. Both directories are git-ignored.
FUZZ_SECS ?= 30
FUZZ_TARGETS ?= market_frame market_agg_rows market_kline_rows verifier_decode sim_control sim_rest docker_events
fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cargo +nightly fuzz build
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t: $(FUZZ_SECS) s"; mkdir -p fuzz/corpus/$$t; \
	  seeds=fuzz/seeds/$$t; [ -d $$seeds ] || seeds=""; \
	  cargo +nightly fuzz run $$t fuzz/corpus/$$t $$seeds -- \
	    -max_total_time=$(FUZZ_SECS) -timeout=10 -dict=fuzz/json.dict -print_final_stats=1 || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in$$failed (inputs in fuzz/artifacts/<target>/)"; exit 1; fi; \
	echo "fuzz: no crash in $(FUZZ_TARGETS)"

# On the running native stack (make up BINANCE=sim): cause the fault behind every alert a
# fault can cause and time fault -> Discord -> RESOLVED (crates/e2e/src/bin/drill.rs).
drill:
	cargo run -q -p e2e --bin drill

# Three Kafka brokers on loopback ports (deploy/native/cluster.sh), 400 symbols flowing,
# one broker killed and started again: nothing lost, nothing stored twice. Slow (about
# 5 min) and heavy, so not part of `make test`. Needs the native stack's PostgreSQL.
test-cluster: export PROFILE := debug
test-cluster:
	$(STACK) install
	$(STACK) start postgres
	@trap 'deploy/native/cluster.sh down' EXIT; \
	  cargo test -p e2e --features cluster --test cluster -- --nocapture

# A clean native stack left alone for MINUTES must send Discord nothing but keep pinging
# the dead man's switch. It restarts the stack first (a fresh simulated market).
MINUTES ?= 30
soak:
	$(STACK) down
	BINANCE=sim $(STACK) up
	cargo run -q -p e2e --bin drill -- soak $(MINUTES)

# ---- VPS ---------------------------------------------------------------------------------
# deploy/vps/deploy.sh; without VPS=... each prints its usage and exits 2.
export VPS DOMAIN ACME_EMAIL ADMIN_ACCESS IMAGES SSH_PORT REMOTE_DIR MIN_FREE_GB DEPLOY_SSH_OPTS
deploy:
	@$(DEPLOY) deploy
deploy-files:
	@$(DEPLOY) files
deploy-test-alert:
	@$(DEPLOY) test-alert
vps-secrets: secrets
	@$(DEPLOY) secrets
