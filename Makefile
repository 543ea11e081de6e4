# Everything runs from a virtual environment in .venv, made on first use.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo serve test lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
