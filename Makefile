# payrelay: `make dev` runs everything against the built-in Chargebee sandbox; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint services install

$(BIN)/payrelay: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/payrelay

services:
	bash .ci/services

dev: install
	PAYRELAY_SKIP_BROWSER=1 PAYRELAY_SKIP_POSTGRES=1 bash .ci/services
	$(BIN)/payrelay dev

test: install services
	$(BIN)/ruff check service consumers tests
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check service consumers tests
	$(BIN)/ruff format --check service consumers
	$(BIN)/mypy
