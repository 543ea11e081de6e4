# Everything runs from a virtual environment in .venv, made on first use, with the exact
# versions in requirements.lock (the ones the whole suite last passed with).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
LOCK := requirements.lock

.PHONY: demo serve test lint format bench lock clean

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[test,bench]'
	touch $@

demo: $(BIN)/.installed  ## start the service on a fresh data dir with demo data
	$(BIN)/agnes-activity demo

serve: $(BIN)/.installed  ## start the service on ./data
	$(BIN)/agnes-activity serve

# The dashboard tests drive Debian's Chromium (or the one AGNES_CHROMIUM names).
test: $(BIN)/.installed  ## run the whole test suite (browser tests included)
	@[ -n "$$AGNES_CHROMIUM" ] || [ -x /usr/bin/chromium ] || \
		{ apt-get update -qq && apt-get install -y -qq chromium; }
	$(BIN)/pytest

lint: $(BIN)/.installed  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The quick benchmarks, on small generated trees (about a minute, bench/out/ caches the
# trees); the README's Benchmarks table gives each one's full-size command.
bench: $(BIN)/.installed  ## parsing, an append to a transcript, a backfill, each at small size
	$(BIN)/python bench/parse_throughput.py --size-mb 30 --runs 3 --rss-size-mb 50
	$(BIN)/python bench/incremental.py --size-mb 20 --appends 10 --rss-size-mb 0
	$(BIN)/python bench/backfill.py --size-mb 30 --runs 3 --skip-ccusage

# Re-lock: the newest versions pyproject.toml allows, in a venv of their own, must pass the
# whole suite before requirements.lock names them.
lock:  ## upgrade every dependency to its newest allowed version, test, and re-lock
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet --upgrade -e '.[test,bench]'
	@[ -n "$$AGNES_CHROMIUM" ] || [ -x /usr/bin/chromium ] || \
		{ apt-get update -qq && apt-get install -y -qq chromium; }
	.venv-lock/bin/pytest
	{ sed -n '1,3p' $(LOCK); echo "pip==$$(.venv-lock/bin/pip --version | cut -d' ' -f2)"; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock
	@echo "requirements.lock now names the versions the suite just passed with"

clean:
	rm -rf $(VENV) .venv-lock build *.egg-info .pytest_cache .mypy_cache .ruff_cache
