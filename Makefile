# Hookbridge. `make run` brings the platform up on this machine; `make test` runs every test.
# Both install what they need (Rust comes from rustup; the AWS emulator goes into .venv).

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
# Stamped with the requirements file, so a changed pin reinstalls.
PYTOOLS := $(VENV)/.installed-$(shell sha1sum scripts/requirements-dev.txt | cut -c1-12)

.PHONY: run run-aws test fmt-check clippy core-deps template-lint unit

## run: build and start the whole platform on the embedded (SQLite) backend at 127.0.0.1:3000
run:
	$(CARGO) build -p hookbridge-local --bin hookbridge
	./target/debug/hookbridge serve

## run-aws: the same on the AWS backend, against the emulator on 127.0.0.1:4566
run-aws: $(PYTOOLS)
	$(CARGO) build -p hookbridge-local --bin hookbridge
	./scripts/run-aws.sh

## test: formatting, lints, the core's dependency rule, and every test (both backends)
test: fmt-check clippy core-deps template-lint unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

core-deps:
	./scripts/check-core-deps.sh

template-lint: $(PYTOOLS)
	$(VENV)/bin/cfn-lint template.yaml

unit: $(PYTOOLS)
	$(CARGO) test --workspace

# The emulator (with cfn-lint, which it brings) and the OpenAPI validator, pinned, in the
# project's own venv.
$(PYTOOLS): scripts/requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@
