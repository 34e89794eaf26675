# labelwheel: the two commands a new user needs are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LS_VENV := .venv-ls
STATE_DIR ?= .state
# torch/torchvision pins that pip can take from this machine's disk (see README "Installing").
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
LABEL_STUDIO_PINS ?= label-studio==1.23.2 label-studio-sdk==2.1.2

.PHONY: help venv ls-venv up down clean test lint typecheck unit e2e bench

help:
	@echo "make up     start Label Studio + the labelwheel ML backend with a demo project"
	@echo "make test   lint, type-check and run the whole test suite (unit + end-to-end)"
	@echo "make down   stop what 'make up' started;  make clean  also remove its state"
	@echo "make bench  run the benchmarks (writes results under benchmarks/results)"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

$(LS_VENV)/.installed:
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q $(LABEL_STUDIO_PINS)
	@touch $@

ls-venv: $(LS_VENV)/.installed

up: venv ls-venv
	$(VENV)/bin/labelwheel up --state-dir $(STATE_DIR) --label-studio-bin $(CURDIR)/$(LS_VENV)/bin/label-studio

down: venv
	$(VENV)/bin/labelwheel down --state-dir $(STATE_DIR)

clean: down
	rm -rf $(STATE_DIR)

lint: venv
	$(VENV)/bin/ruff check labelwheel tests benchmarks
	$(VENV)/bin/ruff format --check labelwheel tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy labelwheel

unit: venv
	$(VENV)/bin/pytest -m "not e2e"

e2e: venv ls-venv
	LABELWHEEL_LS_BIN=$(CURDIR)/$(LS_VENV)/bin/label-studio $(VENV)/bin/pytest -m e2e

test: venv ls-venv lint typecheck
	LABELWHEEL_LS_BIN=$(CURDIR)/$(LS_VENV)/bin/label-studio $(VENV)/bin/pytest

bench: venv
	$(PIP) install -q -e '.[peers]'
	$(PY) benchmarks/run_all.py
