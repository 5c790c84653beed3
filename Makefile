# Convergio: the two commands that matter are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find proto -name '*.proto' | sort)

.DEFAULT_GOAL := help

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml sdk/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ./sdk -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned dependencies

run: $(STAMP) ## start the server on 127.0.0.1:50051 (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set)
	$(BIN)/convergio serve

test: $(STAMP) ## run the test suite against real PostgreSQL, Redis and gRPC servers
	$(BIN)/pytest

lint: $(STAMP) ## ruff, mypy and buf lint
	$(BIN)/ruff check server sdk tests tools benchmarks
	$(BIN)/ruff format --check server sdk/convergio/*.py tests tools benchmarks
	$(BIN)/mypy
	$(BIN)/buf lint

fmt: $(STAMP) ## format the Python sources
	$(BIN)/ruff check --fix server sdk tests tools benchmarks
	$(BIN)/ruff format server sdk/convergio/*.py tests tools benchmarks

gen: $(STAMP) ## regenerate the SDK's protobuf, gRPC and typing code from proto/
	$(BIN)/python tools/gen.py

breaking: $(STAMP) ## check proto/ for breaking changes against the main branch
	$(BIN)/buf breaking --against '.git#branch=main'

bench: $(STAMP) ## run the benchmarks; prints ratios against in-run baselines and saves JSON under bench-results/
	$(BIN)/python -m benchmarks $(BENCH)

clean: ## remove the virtualenv and caches (keeps .convergio data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install run test lint fmt gen breaking bench clean
