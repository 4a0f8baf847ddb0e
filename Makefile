# cleanaudit — the two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
NODE_STAMP := webui/node_modules/.installed-$(shell cat webui/package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
# Debian packages the tests need: a browser, a database server, CJK fonts for screenshots.
TEST_DEBS := chromium postgresql fonts-noto-cjk

.PHONY: run test install node system-deps serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) node

node:
	@if [ -f webui/package-lock.json ] && [ ! -f $(NODE_STAMP) ]; then \
	  (cd webui && npm ci --ignore-scripts --no-audit --no-fund) && rm -f webui/node_modules/.installed-* && touch $(NODE_STAMP); \
	fi

system-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The demo is served over plain http on loopback: session cookies cannot be Secure there.
run: install
	$(BIN)/cleanaudit init --demo
	SESSION_COOKIE_SECURE=0 $(BIN)/cleanaudit serve

test: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) webui/node_modules instance test-artifacts
