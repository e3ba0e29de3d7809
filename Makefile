# OmenDB: `make demo` and `make test` work as root on a fresh Debian bookworm machine.
SHELL := /bin/bash
DATA ?=

.PHONY: deps install install-pg18 test test-quick lint demo bench bench-churn bench-inserts bench-ingest bench-stream bench-build bench-profile bench-kernels clean

deps:
	scripts/deps.sh

# What a user installs is the release build (the tests install the dev profile themselves,
# with debug assertions and overflow checks: builds about 15-25% slower, README "Build
# profiles").
install: deps
	scripts/install.sh /usr/bin/pg_config --release

install-pg18: deps
	source scripts/env.sh && scripts/install.sh "$$(pg18_home)/bin/pg_config" --release

# Everything: lint, unit, pgrx and pg_regress tests, then the integration tests (pytest).
# Arguments for pytest: make test PYTEST_ARGS='-k churn'
test: deps
	scripts/test.sh all $(PYTEST_ARGS)

# Lint, omen-core's unit tests and pg_regress on PostgreSQL 15 (a few minutes).
test-quick: deps
	scripts/test.sh quick

# rustfmt, clippy -D warnings, ruff check, ruff format --check.
lint: deps
	scripts/test.sh lint

demo: install
	pg_virtualenv -v 15 scripts/demo.sh $(DATA)

bench: deps
	bench/run.sh $(DATA)

bench-churn: deps
	bench/run.sh $(DATA) --churn

bench-inserts: deps
	bench/run.sh $(DATA) --inserts $(ARGS)

# Merge throughput and queries while rows stream in (bench/ingest.py).
bench-ingest: deps
	bench/run.sh $(DATA) --ingest $(ARGS)

# CREATE INDEX time and WAL under PostgreSQL's maintenance_work_mem (bench/build.py).
bench-build: deps
	bench/run.sh $(DATA) --build $(ARGS)

# A million single-row INSERTs and a bulk load, latency per 10,000 rows (bench/stream.py).
bench-stream: deps
	bench/run.sh $(DATA) --stream $(ARGS)

# A perf profile of omen's query loop (bench/profile.py).
bench-profile: deps
	bench/run.sh $(DATA) --profile $(ARGS)

bench-kernels:
	cargo bench -p omen-core --bench distance

clean:
	cargo clean
