# OmenDB: `make demo` and `make test` work as root on a fresh Debian bookworm machine.
SHELL := /bin/bash
DATA ?=

.PHONY: deps install install-pg18 test demo bench bench-churn bench-inserts bench-kernels clean

deps:
	scripts/deps.sh

install: deps
	cargo pgrx install --pg-config /usr/bin/pg_config

install-pg18: deps
	source scripts/env.sh && cargo pgrx install --pg-config "$$(pg18_home)/bin/pg_config"

test: deps
	scripts/test.sh

demo: install
	pg_virtualenv -v 15 scripts/demo.sh $(DATA)

bench: deps
	bench/run.sh $(DATA)

bench-churn: deps
	bench/run.sh $(DATA) --churn

bench-inserts: deps
	bench/run.sh $(DATA) --inserts $(ARGS)

bench-kernels:
	cargo bench -p omen-core --bench distance

clean:
	cargo clean
