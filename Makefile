# Hookbridge. `make run` brings the platform up on this machine; `make test` runs every test.
# Both install what they need (Rust comes from rustup; the AWS emulator goes into .venv).

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test fmt-check clippy core-deps unit

## run: build and start the whole platform on the embedded (SQLite) backend at 127.0.0.1:3000
run:
	$(CARGO) build -p hookbridge-local --bin hookbridge
	./target/debug/hookbridge serve

## test: formatting, lints, the core's dependency rule, and every test
test: fmt-check clippy core-deps unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

core-deps:
	./scripts/check-core-deps.sh

unit:
	$(CARGO) test --workspace
