# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: install tools run test test-busy test-unit validate lint dashboard manifests bench compare scale deflate history-bench keys-bench vendor hotpath loadtest soak clean

install: $(STAMP)

# Re-installs only when the project's dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Validators for the deploy artefacts (checkov, hadolint, kubernetes-validate,
# check-jsonschema), in their own venv.
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r requirements-tools.txt
	touch $(TOOLS_STAMP)

run: install
	$(BIN)/crypto-service

test: install tools
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole suite RUNS times in a row (default 5) with both cores kept busy: the check
# that the suite does not depend on timing.
test-busy:
	.ci/busy-check

test-unit: install
	$(BIN)/pytest -m "not integration"

# Only the deploy validations (Dockerfile, manifests, compose, workflows).
validate: install tools
	$(BIN)/pytest tests/deploy

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Regenerate the Grafana dashboard JSON from grafana/dashboard.py.
dashboard: install
	$(BIN)/python -m grafana.dashboard

# Regenerate the Kubernetes PrometheusRule from deploy/prometheus/rules.
manifests: install
	$(BIN)/python -m deploy.prometheusrule

# The side-by-side benchmark (needs Debian's wrk and redis-server); writes bench/RESULTS.md.
bench: install
	$(BIN)/python -m bench.bench

# Polling or push: every transport at 10, 100 and 1,000 clients, then 1,000 streams and
# 100 pollers at once; writes bench/COMPARE.md, bench/compare.json and bench/compare.png.
compare: install
	$(BIN)/python -m bench.compare

# The push path at scale: 10,000 SSE streams, 5,000 WebSockets, far-behind clients, a
# restart under 5,000 streams; the clients in their own process. Writes bench/scale.json.
scale: install
	$(BIN)/python -m bench.scale

# The price history at 30 days of 3 s ticks for 4 symbols (3.5 million rows) in SQLite and
# PostgreSQL: backfill time, size per million ticks, every history query timed. Writes
# bench/history.json and bench/HISTORY.md (about 20 minutes).
history-bench: install
	$(BIN)/python -m bench.history

# permessage-deflate on and off for the pushed documents: bytes and CPU per message.
# Writes bench/deflate.json.
deflate: install
	$(BIN)/python -m bench.deflate

# Refresh the page's chart library from its npm package (pinned in service/page.py), with
# its licence: `make vendor` (UPLOT_VERSION=x.y.z to move the pin, then update page.py).
UPLOT_VERSION ?= $(shell sed -n 's/^UPLOT_VERSION = "\(.*\)".*/\1/p' service/page.py)
vendor:
	rm -rf .vendor-tmp && mkdir .vendor-tmp
	cd .vendor-tmp && npm pack --silent uplot@$(UPLOT_VERSION) && tar xzf uplot-$(UPLOT_VERSION).tgz
	cp .vendor-tmp/package/dist/uPlot.iife.min.js .vendor-tmp/package/dist/uPlot.min.css \
		.vendor-tmp/package/LICENSE service/static/vendor/uplot/
	rm -rf .vendor-tmp

# Microseconds per request in-process, service against bare Flask; TARGET=service profiles.
# What an API key costs a request, in-process (bench/keys.json).
keys-bench: install
	$(BIN)/python -m bench.keycost

hotpath: install
	$(BIN)/python -m bench.hotpath $(if $(TARGET),--profile $(TARGET))

# A locust polling load against URL; summary on stdout, CSV and HTML in loadtest/results/.
URL ?= http://localhost:5000
USERS ?= 50
SPAWN_RATE ?= 10
DURATION ?= 1m
loadtest: install
	mkdir -p loadtest/results
	$(BIN)/locust -f loadtest/locustfile.py --headless --host $(URL) --users $(USERS) \
		--spawn-rate $(SPAWN_RATE) --run-time $(DURATION) --only-summary \
		--csv loadtest/results/run --html loadtest/results/report.html

# 10 minutes at half the measured capacity; memory and file descriptors must stay flat.
soak: install
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
