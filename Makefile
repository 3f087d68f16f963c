# civicmap: `make run` serves the app with sample data; `make test` runs the suite.
# Both install what is missing first (Debian packages, the venv), as root or with sudo.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PORT ?= 5000

.PHONY: run test install system-deps system-deps-run db bench-intake bench-seed bench-layers bench-export bench-dashboard bench-page-weight clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

service/translations/km/LC_MESSAGES/messages.mo: service/translations/km/LC_MESSAGES/messages.po $(BIN)/.installed
	$(BIN)/pybabel compile -d service/translations

install: $(BIN)/.installed service/translations/km/LC_MESSAGES/messages.mo

system-deps:
	.ci/install-system-deps

system-deps-run:
	.ci/install-system-deps --no-browser

# Create, migrate and seed the database named by DATABASE_URL (default: civicmap on the local server).
db: system-deps-run install
	server=$$(.ci/ensure-postgres); \
	export DATABASE_URL="$${DATABASE_URL:-$${server%/*}/civicmap}"; \
	$(BIN)/civicmap db create && $(BIN)/civicmap db upgrade && $(BIN)/civicmap seed --if-empty

run: db
	server=$$(.ci/ensure-postgres); \
	export DATABASE_URL="$${DATABASE_URL:-$${server%/*}/civicmap}"; \
	echo "civicmap: serving on http://localhost:$(PORT) (API docs at /api/v1/docs)"; \
	exec $(BIN)/civicmap run --port $(PORT)

test: system-deps install
	$(BIN)/ruff check --select F,E9 --quiet service geo sync tests bench
	server=$$(.ci/ensure-postgres); \
	CIVICMAP_TEST_DATABASE_URL="$$server" $(BIN)/pytest $(PYTEST_ARGS)

bench-intake: db
	server=$$(.ci/ensure-postgres); \
	DATABASE_URL="$${DATABASE_URL:-$${server%/*}/civicmap_bench}" $(BIN)/python bench/intake.py $(BENCH_ARGS)

bench-seed: db
	server=$$(.ci/ensure-postgres); \
	DATABASE_URL="$${DATABASE_URL:-$${server%/*}/civicmap_bench}" $(BIN)/python bench/seed.py $(BENCH_ARGS)

# Layers and exports run on 1,000,000 seeded reports in their own database (seeded once, kept).
LAYERS_BENCH_DB = server=$$(.ci/ensure-postgres); \
	export DATABASE_URL="$${DATABASE_URL:-$${server%/*}/civicmap_layers_bench}"; \
	$(BIN)/civicmap db create && $(BIN)/civicmap db upgrade && $(BIN)/civicmap seed --if-empty --count 1000000

bench-layers: system-deps-run install
	$(LAYERS_BENCH_DB) && $(BIN)/python bench/layers.py $(BENCH_ARGS)

bench-export: system-deps-run install
	$(LAYERS_BENCH_DB) && $(BIN)/python bench/export.py $(BENCH_ARGS)

# The staff dashboard on the same 1,000,000 reports: page p50/p95 against the bare rollup reads.
bench-dashboard: system-deps-run install
	$(LAYERS_BENCH_DB) && $(BIN)/python bench/dashboard.py $(BENCH_ARGS)

# The phone form in real Chromium: bytes on the wire and Regular 2G timings (its own small database).
bench-page-weight: system-deps install
	server=$$(.ci/ensure-postgres); \
	DATABASE_URL="$${DATABASE_URL:-$${server%/*}/civicmap_page_bench}" $(BIN)/python bench/page_weight.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
