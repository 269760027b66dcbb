# Two commands set everything up on a fresh clone: `make run` and `make test`.
# Both create the virtual environment in .venv and install the project on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run demo playground test chromium test-sqlite lint migrate clean bench bench-quick

$(INSTALLED): pyproject.toml
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
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(INSTALLED)

# The real bot when BOT_TOKEN is set (environment or .env), the offline demo otherwise.
run: $(INSTALLED)
	@if [ -n "$$BOT_TOKEN" ] || grep -qsE '^BOT_TOKEN=.+' .env; then \
		echo "BOT_TOKEN is set: starting the real bot (long polling)."; \
		exec $(BIN)/capacity-bot run; \
	else \
		echo "BOT_TOKEN is not set: starting the offline demo (no Telegram needed)."; \
		exec $(BIN)/capacity-bot demo; \
	fi

demo: $(INSTALLED)
	$(BIN)/capacity-bot demo

# The whole bot in a browser page, offline (http://127.0.0.1:8080/; PORT=0 for any free port).
playground: $(INSTALLED)
	$(BIN)/capacity-bot playground --port $(or $(PORT),8080)

# Every storage and end-to-end test runs on SQLite and on PostgreSQL (TEST_POSTGRES_URL,
# default postgresql+asyncpg://postgres@127.0.0.1:5432/test). With CI=true a missing
# PostgreSQL fails the run.
test: $(INSTALLED) chromium
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

test-sqlite: $(INSTALLED)
	$(BIN)/python -m pytest -k "not postgresql"

# Benchmarks (issue 6, BENCHMARKS.md): figures and ratios against a baseline, JSON results in
# bench/results/. They need PostgreSQL for their PostgreSQL half. bench-quick (CI, under two
# minutes) fails only when a benchmark crashes, never on speed.
bench: $(INSTALLED)
	$(BIN)/python -m bench

bench-quick: $(INSTALLED)
	$(BIN)/python -m bench --quick

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrate: $(INSTALLED)
	$(BIN)/capacity-bot migrate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
