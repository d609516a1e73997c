# payrelay: `make dev` runs everything against the built-in Chargebee sandbox; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint services install lock

# What `payrelay` needs to run; the test tools (a browser driver, fuzzers, linters) come on top.
# Dependencies come from the hashed lock files (pip refuses anything whose hash differs), then
# the project itself, without dependencies.
$(VENV)/.runtime: pyproject.toml requirements/runtime.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/runtime.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements/test.lock
	$(BIN)/pip install -q --require-hashes -r requirements/test.lock
	touch $@

# Re-resolve the lock files from pyproject.toml (after changing a dependency), with pip-tools in
# a throwaway virtualenv; review the diff, commit it.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q pip-tools
	.lock-venv/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links -o requirements/runtime.lock pyproject.toml
	.lock-venv/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --extra test -o requirements/test.lock pyproject.toml
	rm -rf .lock-venv

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
