# Dynamic Factory: every set-up step lives here, so a fresh clone needs only
# `make synth` or `make test`. Install steps are skipped when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Synthesis never needs AWS credentials: keep the SDK from looking for them.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: install synth test job bench cost clean help

help:
	@echo "make synth   install everything, synthesize the platform offline, print a summary"
	@echo "make test    install everything, run the whole test suite"
	@echo "make job     run the XGBoost validation job (embedded local Ray unless RAY_ADDRESS is set)"
	@echo "make bench   compare single-process XGBoost with the Ray job at equal cores"
	@echo "make cost    what the synthesized platform costs idle and at its limits"
	@echo "make clean   remove build output (cdk.out, dist)"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

.venv-checkov/.installed: requirements-checkov.txt
	@test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet -r requirements-checkov.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.installed node_modules/.installed .venv-checkov/.installed

synth: $(VENV)/.installed node_modules/.installed
	@rm -rf cdk.out
	npx cdk synth --quiet
	@$(PY) -m tools.summary cdk.out dist

test: install
	$(PY) -m pytest

job: $(VENV)/.installed
	$(PY) -m jobs.xgboost_validation

bench: $(VENV)/.installed
	$(PY) -m jobs.bench

cost: synth
	@$(PY) -m cost cdk.out

clean:
	rm -rf cdk.out dist .pytest_cache
