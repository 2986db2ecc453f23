# fleetdeck: `make demo` runs the demo fleet, `make test` runs the whole suite.
# Each target sets up what it needs: the virtual environment and its packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Versions the suite was last run against (snapshots depend on Textual's exact look).
CONSTRAINTS := constraints.txt

.PHONY: demo demo-land demo-api test lint unit bench screenshots clean ssh-server

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
# --fresh: the demo always shows a whole run, even after one was interrupted (a
# plain `fleetdeck run` would resume it). Exit 1 is the demo's planned failure;
# 130 is the operator quitting (q, Ctrl-C) before the end, a normal way to leave
# a demo, not an error for make to report.
demo: $(VENV)/.runtime
	@$(BIN)/fleetdeck run config/demo.toml --fresh; rc=$$?; \
		[ $$rc -le 1 ] || [ $$rc -eq 130 ] || exit $$rc

# The landing demo: a throwaway repository, agents in worktrees, the merge train.
demo-land: $(VENV)/.runtime
	@command -v git >/dev/null || $(MAKE) -s ssh-server
	@sh config/land-demo.sh .fleetdeck/land-demo/repo
	@$(BIN)/fleetdeck run config/land.toml --fresh

# API agents against the local fake OpenAI/Anthropic server (no key, no network):
# the server runs on 127.0.0.1:8765 for the length of the run.
demo-api: $(VENV)/.runtime
	@$(BIN)/python -m fleetdeck.demo.api --port 8765 --rpm 200 >/dev/null & server=$$!; \
		$(BIN)/python -c 'import time, urllib.request as u; exec("for _ in range(50):\n try: u.urlopen(\"http://127.0.0.1:8765/stats\"); break\n except OSError: time.sleep(0.1)")'; \
		$(BIN)/fleetdeck run config/email-triage.toml --fresh; rc=$$?; kill $$server; \
		[ $$rc -le 1 ] || [ $$rc -eq 130 ] || exit $$rc

test: lint unit

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	@if command -v shellcheck >/dev/null; then shellcheck -s sh src/fleetdeck/executors/wrapper.sh; \
	else echo "shellcheck is not installed: the SSH wrapper is not linted"; fi

unit: $(VENV)/.test ssh-server
	$(BIN)/pytest

# The SSH tests start real sshd servers on 127.0.0.1 (tests/sshd.py) and run the
# remote wrapper with BusyBox's tools, and the landing tests make git repositories;
# CI must run them, so install OpenSSH's server, BusyBox and git when they are
# missing. Quiet when they are there.
ssh-server:
	@{ [ -x /usr/sbin/sshd ] && command -v busybox >/dev/null && command -v git >/dev/null; } || { \
		echo "installing openssh-server, busybox and git for the SSH and landing tests"; \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server busybox git >/dev/null; \
	}

# The performance suite (README, Performance): ~12 min; `make bench BENCH_ARGS=--quick`
# for ~2-3 min, or name sections: `make bench BENCH_ARGS="overhead journal"`. The
# overhead section compares with GNU parallel and the UI section drives tmux: install
# them when missing (the suite skips them, with a note, if that is impossible).
BENCH_ARGS ?=
bench: $(VENV)/.runtime
	@{ command -v parallel >/dev/null && command -v tmux >/dev/null; } || { \
		echo "installing GNU parallel and tmux for the benchmarks"; \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		{ $$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq parallel tmux >/dev/null; } \
		|| echo "could not install GNU parallel and tmux: their columns will be skipped"; \
	}
	@# Bytecode, as an installed wheel has it: where PYTHONDONTWRITEBYTECODE is set
	@# (this machine sets it), every run would otherwise compile fleetdeck again
	@# (about 0.1 s of start-up, measured).
	$(BIN)/python -m compileall -q src
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# SVGs of the demo for the README: main screen, task detail, timeline, help.
screenshots: $(VENV)/.runtime
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .fleetdeck .pytest_cache .mypy_cache .ruff_cache
