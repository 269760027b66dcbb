# Two commands set everything up on a fresh clone: `make run` and `make test`.
# Both create the virtual environment in .venv on first use. `make run` installs what the
# bot needs; `make test` adds the test extra (pytest, hypothesis, ruff, playwright). Each
# install leaves a stamp file, redone only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED_RUN := $(VENV)/.installed-run
INSTALLED_TEST := $(VENV)/.installed-test

.PHONY: run demo playground test chromium test-sqlite lint migrate clean bench bench-quick

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "capacity-bot needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing python3-venv (Debian ships venv separately)"; \
			apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && \
			rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
		else \
			echo "Cannot create a virtual environment: install python3-venv (sudo apt-get install python3-venv)"; \
			exit 1; \
		fi; }
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running the bot needs (`make run`, demo, playground, migrate, benchmarks).
$(INSTALLED_RUN): pyproject.toml tools/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . -e ./tools
	@touch $(INSTALLED_RUN)

# The test extra on top (`make test`, test-sqlite, lint); after it `make run` installs nothing.
$(INSTALLED_TEST): pyproject.toml tools/pyproject.toml $(INSTALLED_RUN)
	$(BIN)/python -m pip install --quiet -e ".[test]" -e ./tools
	@touch $(INSTALLED_TEST)

# The real bot when BOT_TOKEN is set (environment or .env), the offline demo otherwise.
run: $(INSTALLED_RUN)
	@if [ -n "$$BOT_TOKEN" ] || grep -qsE '^BOT_TOKEN=.+' .env; then \
		echo "BOT_TOKEN is set: starting the real bot (long polling)."; \
		exec $(BIN)/capacity-bot run; \
	else \
		echo "BOT_TOKEN is not set: starting the offline demo (no Telegram needed)."; \
		exec $(BIN)/capacity-bot demo; \
	fi

demo: $(INSTALLED_RUN)
	$(BIN)/capacity-bot demo

# The whole bot in a browser page, offline (http://127.0.0.1:8080/; PORT=0 for any free port).
playground: $(INSTALLED_RUN)
	$(BIN)/capacity-bot playground --port $(or $(PORT),8080)

# Every storage and end-to-end test runs on SQLite and on PostgreSQL (TEST_POSTGRES_URL,
# default postgresql+asyncpg://postgres@127.0.0.1:5432/test). With CI=true a missing
# PostgreSQL fails the run.
test: $(INSTALLED_TEST) chromium
	$(BIN)/python -m pytest

# The playground's browser tests drive Debian's chromium: installed here when missing (as root
# with apt-get). Without it they are skipped locally and fail with CI=true.
chromium:
	@[ -x /usr/bin/chromium ] || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing chromium for the browser tests"; \
			{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
				echo "Could not install chromium: the browser tests will not run"; \
		else \
			echo "The browser tests need chromium: sudo apt-get install chromium"; \
		fi; }

test-sqlite: $(INSTALLED_TEST)
	$(BIN)/python -m pytest -k "not postgresql"

# Benchmarks (issue 6, BENCHMARKS.md): figures and ratios against a baseline, JSON results in
# bench/results/. They need PostgreSQL for their PostgreSQL half. bench-quick (CI, under two
# minutes) fails only when a benchmark crashes, never on speed.
bench: $(INSTALLED_RUN)
	$(BIN)/python -m bench

bench-quick: $(INSTALLED_RUN)
	$(BIN)/python -m bench --quick

# The house checks, all four run even when one fails, each failure named on its own line:
# ruff's lint rules and formatting, mypy (strict, [tool.mypy]) and the import contracts
# ([tool.importlinter]). CI (.ci/run) runs them before the tests.
lint: $(INSTALLED_TEST)
	@failed=""; \
	$(BIN)/ruff check . || failed="$$failed, ruff check"; \
	$(BIN)/ruff format --check . || failed="$$failed, ruff format --check"; \
	$(BIN)/mypy || failed="$$failed, mypy"; \
	$(BIN)/lint-imports || failed="$$failed, lint-imports"; \
	if [ -n "$$failed" ]; then echo "lint failed: $${failed#, }"; exit 1; fi; \
	echo "lint: ruff check, ruff format, mypy and lint-imports all pass"

migrate: $(INSTALLED_RUN)
	$(BIN)/capacity-bot migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
