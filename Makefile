# fleetdeck: `make demo` runs the demo fleet, `make test` runs the whole suite.
# Each target sets up what it needs: the virtual environment and its packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Versions the suite was last run against (snapshots depend on Textual's exact look).
CONSTRAINTS := constraints.txt

.PHONY: demo test lint unit bench screenshots clean ssh-server

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "fleetdeck needs Python 3.11 or newer ($(PYTHON) is older)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e .
	@touch $@

$(VENV)/.test: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	@touch $@ $(VENV)/.runtime

# The demo fleet shows a task that fails on purpose, so exit code 1 is expected.
demo: $(VENV)/.runtime
	@$(BIN)/fleetdeck run config/demo.toml; rc=$$?; [ $$rc -le 1 ] || exit $$rc

test: lint unit

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(VENV)/.test ssh-server
	$(BIN)/pytest

# The SSH tests start real sshd servers on 127.0.0.1 (tests/sshd.py); CI must run
# them, so install OpenSSH's server when it is missing. Quiet when it is there.
ssh-server:
	@[ -x /usr/sbin/sshd ] || { \
		echo "installing openssh-server for the SSH tests"; \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server >/dev/null; \
	}

bench: $(VENV)/.runtime
	$(BIN)/python benchmarks/run.py

# SVGs of the demo for the README: main screen, task detail, timeline, help.
screenshots: $(VENV)/.runtime
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .fleetdeck .pytest_cache .mypy_cache .ruff_cache
