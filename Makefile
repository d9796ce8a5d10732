# gofau: install, build the book, test. Two commands for a fresh machine (see README.md):
#   make install book      install everything, execute the CPU chapters, build _build/html
#   make test              unit tests, notebook smoke runs + nbval, book build, browser check
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := book

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# requirements are (re)installed into the venv whenever requirements.txt or pyproject.toml change
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(abspath $(BIN)):$(PATH)
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
MATHJAX_VERSION := 3.2.2
MATHJAX := .cache/mathjax
SMOKE := _build/smoke

.PHONY: install browser mathjax book unit smoke build-book browser-check test lab lab-check clean

install: $(STAMP) browser mathjax

$(STAMP): requirements.txt pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# headless Chromium and its driver, for the browser check (Debian packages)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# MathJax from the npm registry, staged for html_static_path (_config.yml): math renders offline
mathjax: $(MATHJAX)/static/mathjax/tex-chtml.js

$(MATHJAX)/static/mathjax/tex-chtml.js:
	npm install --prefix $(MATHJAX)/npm --no-save --no-audit --no-fund --loglevel=error mathjax@$(MATHJAX_VERSION)
	rm -rf $(MATHJAX)/static && mkdir -p $(MATHJAX)/static/mathjax/output/chtml/fonts $(MATHJAX)/static/mathjax/input/tex
	cp $(MATHJAX)/npm/node_modules/mathjax/es5/tex-chtml.js $(MATHJAX)/static/mathjax/
	cp -r $(MATHJAX)/npm/node_modules/mathjax/es5/output/chtml/fonts/woff-v2 $(MATHJAX)/static/mathjax/output/chtml/fonts/
	cp -r $(MATHJAX)/npm/node_modules/mathjax/es5/input/tex/extensions $(MATHJAX)/static/mathjax/input/tex/

# execute the chapters (cached when unchanged) and build the HTML; fails on any warning
build-book:
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book: $(abspath _build/html/index.html)"

book: $(STAMP) mathjax build-book

unit:
	$(BIN)/python -m pytest tests

# every chapter on its smoke setting under papermill, then nbval on the executed copies; both run
# in $(SMOKE) (nbval runs a notebook in its own folder), so a chapter must not depend on its cwd
smoke:
	rm -rf $(SMOKE) && mkdir -p $(SMOKE)
ifeq ($(NOTEBOOKS),)
	@echo "smoke: no notebooks in notebooks/ yet, nothing to run"
else
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/papermill "$$nb" "$(SMOKE)/$$(basename $$nb)" --cwd $(SMOKE) -p smoke True \
	    --execution-timeout 300 --no-progress-bar; \
	done
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout 300 -p no:cacheprovider $(SMOKE)
endif

browser-check:
	$(BIN)/python tests/browser_check.py _build/html

test: install
	$(MAKE) unit smoke build-book browser-check lab-check

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# opens a chapter in JupyterLab in headless Chromium: its MyST roles and math must render
# (jupyterlab-myst); saves _build/lab.png; under 90 s, the server always stopped
lab-check: $(STAMP)
	$(BIN)/python tests/lab_check.py _build/lab.png

clean:
	rm -rf _build .pytest_cache .hypothesis
