# Hookbridge. `make run` brings the platform up on this machine; `make test` runs every test.
# Both install what they need (Rust comes from rustup; the AWS emulator goes into .venv).

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
MOTO := $(VENV)/bin/moto_server
MOTO_VERSION := 5.2.5

.PHONY: run run-aws test fmt-check clippy core-deps template-lint unit

## run: build and start the whole platform on the embedded (SQLite) backend at 127.0.0.1:3000
run:
	$(CARGO) build -p hookbridge-local --bin hookbridge
	./target/debug/hookbridge serve

## run-aws: the same on the AWS backend, against the emulator on 127.0.0.1:4566
run-aws: $(MOTO)
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

template-lint: $(MOTO)
	$(VENV)/bin/cfn-lint template.yaml

unit: $(MOTO)
	$(CARGO) test --workspace

# The emulator (and cfn-lint, which it brings), pinned, in the project's own venv.
$(MOTO):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'
