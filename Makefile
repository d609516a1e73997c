# payrelay: `make dev` runs everything against the built-in Chargebee sandbox; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint services install

# What `payrelay` needs to run; the test tools (a browser driver, fuzzers, linters) come on top.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.runtime

services:
	bash .ci/services

# Starts RabbitMQ if it is stopped, and enables its management plugin if it is off: a lasting
# change to the machine's RabbitMQ (the plugin stays on, and listens on port 15672 on all
# interfaces; `rabbitmq-plugins disable rabbitmq_management` undoes it).
dev: $(VENV)/.runtime
	@echo "make dev: starts RabbitMQ if it is stopped and enables its management plugin if it is off;"
	@echo "  that lasts (the plugin stays on, listening on :15672 on all interfaces);"
	@echo "  'rabbitmq-plugins disable rabbitmq_management' undoes it"
	PAYRELAY_SKIP_BROWSER=1 PAYRELAY_SKIP_POSTGRES=1 bash .ci/services
	$(BIN)/payrelay dev

test: $(VENV)/.test services
	$(BIN)/ruff check service consumers tests
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.test
	$(BIN)/ruff check service consumers tests
	$(BIN)/ruff format --check service consumers
	$(BIN)/mypy
