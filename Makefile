# Two entry points: `make run` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tests/test_rpc_orpc_client.py and tests/test_socketio_client.py run the real @orpc/client and
# socket.io-client under Node (>= 20) from here.
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
# tests/test_reference_browser.py opens /api-reference in Debian's chromium (via Playwright).
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint bench clean engines

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# npm ci again only when the lock file (or package.json) changed; npm ci empties node_modules.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
		{ echo "Node.js/npm missing: installing Debian's nodejs and npm" >&2; \
		  apt-get update -q && apt-get install -y -q nodejs npm; }
	@command -v node >/dev/null && command -v npm >/dev/null || \
		{ echo "make test needs Node.js and npm (the oRPC client tests)" >&2; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

# Installed only when missing (we run as root); Playwright's own browser download is not used.
$(CHROMIUM):
	@echo "chromium missing: installing Debian's chromium" >&2
	apt-get update -q && apt-get install -y -q chromium
	@test -x $(CHROMIUM) || \
		{ echo "make test needs $(CHROMIUM) (the API reference page's browser test)" >&2; exit 1; }

# tests/engines.py starts its own PostgreSQL and Redis (cluster mode, docs/cluster.md) from Debian's
# packages; installed only when missing. Debian's own postgresql service is not used.
engines:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ echo "postgresql missing: installing Debian's postgresql" >&2; \
		  apt-get update -q && apt-get install -y -q postgresql; }
	@command -v redis-server >/dev/null || \
		{ echo "redis-server missing: installing Debian's redis-server" >&2; \
		  apt-get update -q && apt-get install -y -q redis-server; }
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; } && \
		command -v redis-server >/dev/null || \
		{ echo "make test needs postgresql and redis-server (the cluster tests)" >&2; exit 1; }

run: $(STAMP)
	$(BIN)/spectral serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint engines $(NODE_STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q --durations=25

bench: $(STAMP)
	$(BIN)/python bench/actors.py

clean:
	rm -rf $(VENV) build *.egg-info $(NODE_DIR)/node_modules
