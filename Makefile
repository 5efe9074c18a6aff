# The whole pipeline as named steps. `make demo` and `make test` are the two set-up commands of
# the README: each creates the virtual environment and installs the pinned packages first.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARTIFACTS := artifacts
DEMO_DATA := $(ARTIFACTS)/data/marketplace-small
DEMO_MODELS := mostpop itemknn bprmf lightgcn sasrec gat
comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: demo test test-slow lint format install browser data train evaluate clean

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/lock.txt -e '.[serve,train,dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium through Playwright (Playwright's own browser
# downloads are never used): install the distribution package when it is missing.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

test: install browser
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# --- the demo pipeline: data -> train -> evaluate -> serve -------------------------------------
# A small synthetic marketplace; the baselines, two graph models and a sequence model; one
# full-ranking table comparing them; then the storefront.

$(DEMO_DATA)/dataset.json: $(STAMP)
	$(PY) -m trainer generate --scale small --seed 7 --out $(DEMO_DATA)

data: $(DEMO_DATA)/dataset.json

train: data
	for model in $(DEMO_MODELS); do \
		$(PY) -m trainer train --model $$model --dataset $(DEMO_DATA) | grep -v '^{'; \
	done

evaluate: train
	$(PY) -m trainer compare --dataset $(DEMO_DATA) --models $(subst $(space),$(comma),$(DEMO_MODELS)) \
		| grep -v '^{'

# Last, the storefront on the embedded engine: a 128-d LightGCN and a residual ranker exported
# into a copy of the Vespa package, fed, and served at http://127.0.0.1:5000 until Ctrl-C.
demo: evaluate
	$(PY) -m webapp.demo --dataset $(DEMO_DATA)

clean:
	rm -rf $(VENV) $(ARTIFACTS)
