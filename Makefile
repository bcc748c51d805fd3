# Dynamic Factory: every set-up step lives here, so a fresh clone needs only
# `make synth` or `make test`. Install steps are skipped when nothing changed.

PYTHON ?= python3
# Context overrides for synth, cost, deploy, diff and destroy, as the CDK CLI takes them:
#   make synth CTX='-c platform.karpenter.gpu.enabled=true'
CTX ?=
# The platform's stacks sit in the stage `DynamicFactory`; `cdk deploy --all` selects only top-level stacks.
STACKS := 'DynamicFactory/*'
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install synth test job bench drill cost impact deploy diff destroy clean help rotate-ray-token

# Synthesis and the tests never need AWS credentials: keep the SDKs from probing the instance metadata
# service for them. Not for deploy/diff/destroy, which may run on an EC2 host with an instance profile.
synth test cost impact job bench drill: export AWS_EC2_METADATA_DISABLED := true

help:
	@echo "make synth   install everything, synthesize the platform offline, print a summary (CTX='-c k=v' overrides)"
	@echo "make test    install everything, run the whole test suite"
	@echo "make deploy  deploy the platform's stacks to the account and region of your AWS credentials (CTX too)"
	@echo "make diff    what a deploy would change (CTX too)"
	@echo "make destroy delete the platform's stacks (see README, Tearing down)"
	@echo "make impact  what a config change would do to the deployed resources, offline (CTX='-c k=v')"
	@echo "make job     run the XGBoost validation job (embedded local Ray unless RAY_ADDRESS is set)"
	@echo "make bench   compare single-process XGBoost with the Ray job at equal cores"
	@echo "make drill   reclaim a training worker's node mid-job, each way a Spot worker can leave (local Ray)"
	@echo "make cost    what the synthesized platform costs idle and at its limits"
	@echo "make rotate-ray-token [TEAM=name]  new Ray token in place, Ray pods restarted (your kubectl context)"
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

# app.py prints the summary after every synthesis; the filter drops two CLI lines that only confuse
# here ("Supply a stack id ..." after a quiet synth, "Subprocess exited with error 2" after our own
# config error message).
synth: $(VENV)/.installed node_modules/.installed
	@rm -rf cdk.out
	@npx cdk synth --quiet $(CTX) 2>&1 | { grep -v -e '^Supply a stack id' -e 'Subprocess exited with error' || true; }

deploy: $(VENV)/.installed node_modules/.installed
	npx cdk deploy $(STACKS) $(CTX) $(ARGS)

diff: $(VENV)/.installed node_modules/.installed
	npx cdk diff $(STACKS) $(CTX) $(ARGS)

destroy: $(VENV)/.installed node_modules/.installed
	npx cdk destroy $(STACKS) $(CTX) $(ARGS)

impact: $(VENV)/.installed
	@$(PY) -m tools.impact $(CTX) $(ARGS)

test: install
	$(PY) -m pytest

job: $(VENV)/.installed
	$(PY) -m jobs.xgboost_validation

bench: $(VENV)/.installed
	$(PY) -m jobs.bench

drill: $(VENV)/.installed
	$(PY) -m jobs.reclaim_drill --mode all

cost: synth
	@$(PY) -m cost cdk.out

rotate-ray-token: $(VENV)/.installed
	$(PY) -m tools.rotate_ray_token $(if $(TEAM),--team $(TEAM))

clean:
	rm -rf cdk.out dist .pytest_cache
