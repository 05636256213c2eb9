# ClawdBot: `make run` and `make test` are all a new machine needs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BIN := $(TARGET_DIR)/debug

.PHONY: help run build test test-tools lint test-rust test-python test-browser bench fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## Build and start bot-runtime on embedded defaults (http://127.0.0.1:18789)
	$(CARGO) build --release -p bot-runtime
	exec $(TARGET_DIR)/release/bot-runtime $(if $(CONFIG),--config $(CONFIG),)

build: ## Debug build of every binary
	$(CARGO) build --workspace --bins

test: test-tools lint test-rust test-python test-browser ## Install pinned tools, then run every test
	@echo "make test: all suites passed"

test-tools: ## Install pinned test tools (Python venv, playwright-core, Chromium)
	scripts/install-test-tools.sh

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust: ## Unit, black-box HTTP, process and property tests
	$(CARGO) test --workspace

test-python: build ## The official openai Python client against bot-runtime
	MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream BOT_RUNTIME_BIN=$(BIN)/bot-runtime \
		.cache/venv/bin/pytest -q tests/python

test-browser: build ## Headless Chromium drives the web chat page
	MOCK_UPSTREAM_BIN=$(BIN)/mock-upstream BOT_RUNTIME_BIN=$(BIN)/bot-runtime \
		node --test tests/browser/

bench: ## Load benchmarks (mock direct, bot-runtime, LiteLLM); writes docs/benchmarks.md
	bash bench/run.sh

fmt: ## Format the Rust code
	$(CARGO) fmt --all
