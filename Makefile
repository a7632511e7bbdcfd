# Orgdir: the entry points. `make run` and `make test` are the contract (see README.md).
SHELL := /bin/bash
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:/usr/local/go/bin:$(HOME)/go/bin:$(PATH)

.PHONY: install run up down status test test-fast lint typecheck check docs helm-check topology \
        bench bench-bus bench-orgunits bench-registry bench-access bench-notifier clean \
        import bench-import bench-refresh bench-municipality bench-portal catalogue-snapshot chaos

install:  ## uv + the workspace venv (.venv), RabbitMQ and mongo-java-server when missing
	@bash scripts/bootstrap.sh
	@$(PY) -m orgdir_tools.cli install

run: install  ## the whole local stack in the foreground, with demo data; Ctrl-C stops it
	@$(PY) -m orgdir_tools.cli run

up: install  ## the same stack in the background
	@$(PY) -m orgdir_tools.cli up

down:  ## stop the background stack
	@$(PY) -m orgdir_tools.cli down

status:
	@$(PY) -m orgdir_tools.cli status

test: install  ## the whole suite against real servers, then lint, types and the chart
	@$(PY) -m pytest -q --ignore=tests/helm
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory helm-check

test-fast: install
	@$(PY) -m pytest -q -x -m "not slow"

.PHONY: api-check
api-check: install  ## OpenAPI conformance (schemathesis) with more examples; full output in .run/api-check/
	@ORGDIR_API_EXAMPLES=$${ORGDIR_API_EXAMPLES:-200} ORGDIR_API_REPORT_DIR=$${ORGDIR_API_REPORT_DIR:-.run/api-check} \
		$(PY) -m pytest -q tests/api/test_openapi_conformance.py

lint:
	@.venv/bin/ruff check shared tools services tests benchmarks

typecheck:
	@.venv/bin/mypy -p orgdir -p orgdir_tools -p orgunits -p registry -p access_rights -p notifier -p importer -p portal

check: lint typecheck audit

.PHONY: audit
audit:  ## pip-audit of uv.lock; fails on a known vulnerability not in security/pip-audit-exceptions.txt (ORGDIR_AUDIT_STRICT=1: also when unchecked)
	@$(PY) -m orgdir_tools.audit

docs: install  ## the vendor site in docs/events/: event catalogue, the four APIs, the consumer guide (warnings fail)
	@$(PY) -m orgdir_tools.cli docs docs/events

helm-check: install
	@bash scripts/helm-check.sh

chaos: install  ## the chaos scenario at full size: the small preset, two minutes of writes, settled within 600 s (make test runs a scaled one)
	ORGDIR_CHAOS_PRESET=small ORGDIR_CHAOS_WRITE_SECONDS=120 ORGDIR_CHAOS_SETTLE_SECONDS=600 .venv/bin/python -m pytest -s tests/e2e/test_chaos_e2e.py

bench: install  ## every benchmark, one report: bench/results.json + a Markdown table (BENCH_SIZE=small BENCH_QUICK=1: ~15 min)
	@$(PY) benchmarks/report.py

bench-bus: install
	@$(PY) benchmarks/bench_bus.py

bench-orgunits: install
	@$(PY) benchmarks/bench_orgunits.py

bench-registry: install
	@$(PY) benchmarks/bench_registry.py

bench-access: install
	@$(PY) benchmarks/bench_access.py

bench-notifier: install
	@$(PY) benchmarks/bench_notifier.py --matrix

clean: down
	rm -rf .run

topology: install  ## regenerate shared/orgdir/queues.py from the services' consumers.QUEUES
	@$(PY) -m orgdir_tools.topology

import: install  ## import an HR export into the running stack: make import FILE=dir-or.json [ARGS="--dry-run"]
	@test -n "$(FILE)" || { echo "usage: make import FILE=<directory of CSV files or .json> [ARGS=--dry-run]"; exit 2; }
	@.venv/bin/orgdir-import "$(FILE)" $(ARGS)

catalogue-snapshot: install  ## commit the event catalogue's compatibility baseline (refused on a breaking change)
	@$(PY) -m orgdir_tools.compat --write

bench-refresh: install  ## refresh of N persons (default 30000) to one consumer queue: events/s
	@$(PY) benchmarks/bench_refresh.py $(ARGS)

bench-municipality: install  ## import a preset (ARGS="--size small"), then time the reads, peak RSS, database size
	@$(PY) benchmarks/bench_municipality.py $(ARGS)

bench-import: install  ## generate the municipality preset, import it into an empty stack, print the rates
	@$(PY) benchmarks/bench_import.py

bench-portal: install  ## browser-measured time to a usable portal page (p50/p99): demo data, then a 3,000-unit tree
	@$(PY) benchmarks/bench_portal.py $(ARGS)
