# The two set-up commands of the README are `make demo` and `make test`; both create the
# virtual environment from the pinned constraints on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast test-integration test-faults lint typecheck bench clean tools

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit("streamguard needs Python 3.11, found " + sys.version.split()[0]) if sys.version_info[:2] != (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamguard demo

# Pure tests run on every core (a file's tests stay on one worker, to share module fixtures).
# Tests that start brokers and workers spend most of their time waiting for them: three at a
# time used 1.5 of 2 cores and took 5:46 against 14-15 min one at a time (2026-11-24). None
# asserts a duration; each listens on ports it checks are its own (EmbeddedBroker.start).
INTEGRATION_WORKERS ?= 3
test: $(STAMP) tools lint typecheck
	$(BIN)/pytest -n auto --dist loadfile -m "not integration"
	$(BIN)/pytest -n $(INTEGRATION_WORKERS) --dist loadfile -m "integration"

test-fast: $(STAMP)
	$(BIN)/pytest -n auto --dist loadfile -m "not integration and not slow and not faults"

test-integration: $(STAMP)
	$(BIN)/pytest -n $(INTEGRATION_WORKERS) --dist loadfile -m "integration"

test-faults: $(STAMP)
	$(BIN)/pytest -n $(INTEGRATION_WORKERS) --dist loadfile -m "faults"

# promtool tests the Prometheus alerting rules and headless Chromium renders the HTML report;
# Debian's prometheus and chromium packages ship them. Installed where missing and possible
# (root with apt); otherwise the test that needs one says why it is skipped.
SYSTEM_TOOLS := promtool:prometheus chromium:chromium
tools:
	@for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; package=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 && continue; \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	    && { apt-get install -y -qq --no-install-recommends $$package >/dev/null 2>&1 \
	         || { apt-get update -qq >/dev/null 2>&1 \
	              && apt-get install -y -qq --no-install-recommends $$package >/dev/null 2>&1; }; }; } \
	  || echo "note: $$tool could not be installed; the test that needs it will be skipped"; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
