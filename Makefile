# Two commands set up a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
STAMP := $(VENV)/.installed

.PHONY: run test venv migrate lint typecheck pytest browser clean

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
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) chatsite.asgi:application

browser:
	@scripts/ensure-chromium.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy .

pytest: venv browser
	$(VENV)/bin/pytest

# Set everything up and run the whole suite: lint, types, tests.
test: venv browser lint typecheck pytest

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
