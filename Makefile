# Two commands set up a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
STAMP := $(VENV)/.installed

.PHONY: run run-full bench test venv migrate lint typecheck pytest browser services-up services-down services-status clean

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@echo "==> creating $(VENV) and installing requirements"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

migrate: venv
	@mkdir -p var
	$(PY) manage.py migrate --noinput

# Set everything up and serve the embedded default on PORT.
run: migrate
	@if [ ! -f var/.demo-seeded ]; then $(PY) manage.py seed_demo && touch var/.demo-seeded; fi
	@echo "==> serving on http://$(HOST):$(PORT)/  (demo logins: alice, bob, carol / chat-demo-2026)"
	$(PY) manage.py chatserver --host $(HOST) --port $(PORT)

# The real engines: Kafka, Cassandra, Redis, PostgreSQL (see docs/services.md).
services-up:
	scripts/services/services.sh up

services-down:
	scripts/services/services.sh down

services-status:
	scripts/services/services.sh status

# The full pipeline on the real engines: two chat servers (PORT, PORT+1),
# two Kafka dispatchers and a notification worker.
FULL_ENV := CHAT_MODE=full DATABASE_URL=$${DATABASE_URL:-postgres://chat:chat@127.0.0.1:5432/chat}
run-full: venv services-up
	@mkdir -p var
	$(FULL_ENV) $(PY) manage.py migrate --noinput
	$(FULL_ENV) $(PY) manage.py chat_setup
	@if [ ! -f var/.demo-seeded-full ]; then $(FULL_ENV) $(PY) manage.py seed_demo && touch var/.demo-seeded-full; fi
	$(FULL_ENV) $(PY) manage.py run_full --host $(HOST) --port $(PORT)

# Benchmarks: this project against a raw relay and the Channels tutorial design
# (about 22 minutes on 2 cores); figures in bench/results/<date>.json.
bench: venv services-up
	$(PY) -m bench.run

browser:
	@scripts/ensure-chromium.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy .

pytest: venv browser services-up
	$(VENV)/bin/pytest

# Set everything up and run the whole suite: lint, types, tests.
test: venv browser lint typecheck pytest

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
