# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
PORT   ?= 8000

.PHONY: run test frontend deps lint typecheck schema clean bench

# System packages (deploy/system-packages.txt, steering.syspkgs): installed when missing if this
# user can (root, or passwordless sudo, with apt-get); otherwise the one command is printed and
# make carries on DEGRADED. Before the dashboard's build, which needs npm.
run: deps  ## set up and start everything (SQLite + private Redis unless DATABASE_URL/REDIS_URL)
	$(PY) -m steering.syspkgs ensure --for run
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory frontend; else \
	    echo "  dashboard:        NOT BUILT, npm is missing (see the system packages line): DEGRADED, the API runs"; fi
	PORT=$(PORT) STEERING_LOCAL_SECRET_KEY=$${STEERING_LOCAL_SECRET_KEY-1} $(PY) manage.py runstack --setup

test: deps  ## the whole suite on embedded defaults (or DATABASE_URL / REDIS_URL when set)
	$(PY) -m steering.syspkgs ensure --for test
	$(PY) -m config.embedded $(PY) -m pytest $(PYTEST_ARGS)

deps: $(DEPS)

$(DEPS): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

frontend: frontend/dist/index.html

frontend/dist/index.html: frontend/package.json frontend/package-lock.json $(shell find frontend/src frontend/index.html frontend/vite.config.ts -type f 2>/dev/null)
	cd frontend && npm ci --no-audit --no-fund && npm run build

bench: deps  ## probe engine vs HAProxy checks on 2,000 loopback backends (needs haproxy; see bench/README.md)
	$(PY) bench/probe_bench.py --backends 2000 --interval 2 --seconds 30

lint: deps
	$(VENV)/bin/ruff check .

typecheck: deps
	$(VENV)/bin/mypy steering config

schema: deps
	STEERING_LOCAL_SECRET_KEY=1 $(PY) manage.py spectacular --file var/openapi.yaml --validate

clean:
	rm -rf var frontend/dist
