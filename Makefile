# `make run`: the API on http://127.0.0.1:8000 with the whole local stack.  `make test`: everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)

.PHONY: run stop reap tier browser test lint tf-check unit bench clean

# Debian packages the local stack runs (the servers start as private instances on their own ports).
SYSTEM_BINARIES := /usr/bin/redis-server /usr/sbin/nats-server

# Podman, buildah, runc and a static busybox: the local deploy backend builds and runs apps with them;
# mmdebstrap makes its base images (python, node, debian) from Debian packages, with no registry;
# iptables holds the firewall that contains builds and apps (chalicelib/deploy/firewall.py).
CONTAINER_BINARIES := /usr/bin/podman /usr/bin/buildah /usr/sbin/runc /bin/busybox /usr/bin/mmdebstrap /usr/sbin/iptables

$(STAMP): requirements.txt requirements-dev.txt | $(SYSTEM_BINARIES) $(CONTAINER_BINARIES)
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip<26.3'
	$(BIN)/pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

$(SYSTEM_BINARIES):
	apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server nats-server

$(CONTAINER_BINARIES):
	apt-get update -qq && apt-get install -y -qq --no-install-recommends podman buildah runc busybox-static mmdebstrap iptables

# Debian's Chromium and its driver: the browser tier (tests/browser) drives the HTML pages.
BROWSER_BINARIES := /usr/bin/chromium /usr/bin/chromedriver

browser: $(BROWSER_BINARIES)

$(BROWSER_BINARIES):
	apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver

run: $(STAMP)
	$(BIN)/python -m devstack run --profile dev

stop:
	$(BIN)/python -m devstack down --profile dev

reap: $(STAMP)
	$(BIN)/python -m devstack reap --profile dev

# Move a team to a tier on the dev stack, e.g. `make tier EMAIL=you@example.com TIER=hobby`.
tier: $(STAMP)
	eval "$$($(BIN)/python -m devstack env --profile dev)" && $(BIN)/python -m chalicelib.admin set-tier --email '$(EMAIL)' --tier '$(TIER)'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint tf-check | $(BROWSER_BINARIES)
	$(BIN)/python -m pytest

CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

# Terraform: fmt -check always, init + validate when a provider mirror is present (infra/terraform/README.md).
tf-check: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m infra.tf check

# Checkov (infra/checkov.py) in a venv of its own: it pins its own boto3, botocore... Where PyPI is
# out of reach the install fails and `infra.tf check` prints SKIP for the checkov step instead.
$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)' && touch $@ \
	  || { rm -rf $(CHECKOV_VENV); echo "checkov $(CHECKOV_VERSION) not installed: infra.tf check will SKIP it"; }

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench.provision

clean: stop
	$(BIN)/python -m devstack down --profile test
	rm -rf .state
