# perpline: `make up` runs the exchange, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UV_VERSION := 0.13.8

.PHONY: up test install matcher browser promtool lint bench notebooks k8s-validate k8s-up schemas clean help

help:
	@echo "make up      install, compile the matcher, run the stack with demo traders"
	@echo "make test    install, compile the matcher, run the whole suite"
	@echo "make lint    ruff + mypy (strict on contracts/ and the matcher core)"
	@echo "make bench   benchmarks (ratios against a baseline measured in the same run)"
	@echo "make notebooks  Jupyter on notebooks/ (audit.ipynb, market.ipynb; PERPLINE_CLICKHOUSE_URL)"
	@echo "make k8s-validate  render and validate the Kubernetes overlays offline; make k8s-up: kind + local overlay"

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process
# of a stack would otherwise compile its imports from source at each start (API 2.4 -> 1.6 s CPU,
# accounts processor 1.8 -> 0.7 s), which every restart after a crash and every test stack pays.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q -j 0 perpline bench >/dev/null
	touch $(STAMP)

install: $(STAMP)

matcher: $(STAMP)
	$(BIN)/python -m perpline.matcher.build

up: matcher
	$(BIN)/perpline up --demo

# Debian's Chromium and ChromeDriver for the browser test (tests/e2e/test_web_terminal.py), when missing
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$(command -v sudo || true); $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium could not be installed: the browser test will be skipped"

# Prometheus' promtool (checks and unit-tests the alert rules): taken out of Debian's prometheus package
# into the venv, without installing the package (no daemon, no service), when missing
promtool: $(STAMP)
	@command -v promtool >/dev/null || test -x $(BIN)/promtool || \
	  { tmp=$$(mktemp -d) && (cd $$tmp && { apt-get download -qq prometheus 2>/dev/null || \
	      { SUDO=$$(command -v sudo || true); $$SUDO apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; }) && \
	    dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/x && cp $$tmp/x/usr/bin/promtool $(BIN)/promtool; rm -rf $$tmp; } || \
	  echo "promtool could not be fetched: the alert rules will not be checked by it"

test: matcher browser promtool
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=12

lint: $(STAMP)
	$(BIN)/ruff check perpline tests bench notebooks
	$(BIN)/mypy --strict perpline/contracts perpline/matcher/core.py

BENCH_VENV := .venv-bench

# PyPI peer engines for bench.matcher, in their own venv (never in the product's environment)
$(BENCH_VENV)/.installed-stamp: bench/requirements-peers.lock
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BIN)/uv pip sync --quiet --python $(BENCH_VENV)/bin/python bench/requirements-peers.lock
	touch $@

bench: matcher $(BENCH_VENV)/.installed-stamp
	$(BIN)/python -m bench.matcher
	$(BIN)/python -m bench.topic
	$(BIN)/python -m bench.settlement
	$(BIN)/python -m bench.risk
	$(BIN)/python -m bench.load --pairs 1 --seconds 20
	$(BIN)/python -m bench.load --pairs 32 --seconds 30
	$(BIN)/python -m bench.streams --subscribers 1,100,1000 --pairs 4 --seconds 20

# Kubernetes: render every overlay and validate it offline, check and unit-test the alert rules with promtool
# (also part of make test)
k8s-validate: $(STAMP) promtool
	@for overlay in local production; do \
	  $(BIN)/kubectl kustomize k8s/overlays/$$overlay > .k8s-$$overlay.yaml && \
	  $(BIN)/kubernetes-validate --strict --quiet .k8s-$$overlay.yaml && echo "k8s/overlays/$$overlay: valid" || exit 1; \
	done; rm -f .k8s-*.yaml
	@promtool=$$(command -v promtool || ls $$PWD/$(BIN)/promtool 2>/dev/null); if [ -n "$$promtool" ]; then \
	  $$promtool check rules k8s/base/alerts/perpline.rules.yaml && \
	  (cd k8s/base/alerts && $$promtool test rules perpline.rules.test.yaml) || exit 1; \
	else echo "promtool not installed: alert rules not checked by it (make promtool fetches it)"; fi

# a kind cluster with the local overlay (needs kind and a Docker engine)
k8s-up: $(STAMP)
	@command -v kind >/dev/null && docker info >/dev/null 2>&1 || { echo "k8s-up needs kind and a running Docker engine"; exit 1; }
	docker build -t perpline:dev .
	kind get clusters | grep -qx perpline || kind create cluster --name perpline
	kind load docker-image perpline:dev --name perpline
	$(BIN)/kubectl apply -k k8s/overlays/local

# Jupyter's UI for the notebooks (the test suite runs them with nbclient, without it)
notebooks: $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python jupyterlab==4.6.6
	$(BIN)/jupyter lab notebooks/

schemas: $(STAMP)
	$(BIN)/perpline schemas

# refresh the lock file from pyproject.toml (needs the registry)
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) $(BENCH_VENV) build .perpline perpline/matcher/*.so
