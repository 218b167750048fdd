# Hookbridge. `make run` brings the platform up on this machine; `make test` runs every test.
# Both install what they need (Rust comes from rustup; the AWS emulator goes into .venv).

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
# Stamped with the requirements file, so a changed pin reinstalls.
PYTOOLS := $(VENV)/.installed-$(shell sha1sum scripts/requirements-dev.txt | cut -c1-12)
CARGO_LAMBDA := .venv-build/.installed-$(shell sha1sum scripts/requirements-build.txt | cut -c1-12)
SAM := .venv-sam/bin/sam

.PHONY: run run-aws run-lambda browser test lint build deploy bench fuzz fuzz-api reliability fmt-check clippy layering template-lint cited-tests unit

## run: build and start the whole platform on the embedded (SQLite) backend at 127.0.0.1:3000
run:
	$(CARGO) build -p hookbridge-local --bin hookbridge
	$${CARGO_TARGET_DIR:-target}/debug/hookbridge serve

## run-aws: the same on the AWS backend, against the emulator on 127.0.0.1:4566
run-aws: $(PYTOOLS)
	$(CARGO) build -p hookbridge-local --bin hookbridge
	./scripts/run-aws.sh

## run-lambda: the four compiled function binaries as Lambda runs them (a local Runtime
## API, SQS event sources, an HTTP API front) against the emulator, on 127.0.0.1:3000
run-lambda: $(PYTOOLS)
	$(CARGO) build -p subscription-api -p ingest -p delivery-worker -p verifier -p hookbridge-testkit --bins
	$${CARGO_TARGET_DIR:-target}/debug/hookbridge-lambda --listen 127.0.0.1:3000

## test: formatting, lints, the layering rules, and every test (both backends)
test: lint layering unit

## lint: rustfmt, clippy (warnings are errors), cfn-lint and `sam validate --lint` on template.yaml,
## and that every test RELIABILITY.md names exists
lint: fmt-check clippy template-lint cited-tests

## build: the four Lambda functions (release, arm64 where possible) under target/lambda/
build: $(CARGO_LAMBDA)
	./scripts/build-lambdas.sh

## bench: measure throughput, latency, CPU, memory, AWS requests and cost, fan-out and the
## Lambda binaries; writes BENCHMARKS.md (release builds; no test asserts a time)
bench: $(PYTOOLS)
	$(CARGO) build --release -p hookbridge-local -p hookbridge-bench
	@# The Lambda functions one at a time, as `make build` builds them (their sizes are measured)
	for f in subscription-api ingest delivery-worker verifier; do CARGO_PROFILE_RELEASE_PANIC=abort $(CARGO) build --release -p $$f || exit 1; done
	./target/release/hookbridge-bench run $(BENCH_ARGS)

## fuzz: each cargo-fuzz target (envelopes, patterns, hook validation, tokens) for FUZZ_SECONDS
fuzz: .tools/bin/cargo-fuzz
	./scripts/fuzz.sh

## fuzz-api: schemathesis against every operation of the OpenAPI document (no 5xx, all conform)
fuzz-api: $(PYTOOLS) $(VENV)/bin/schemathesis
	$(CARGO) build -p hookbridge-local --bin hookbridge
	./scripts/fuzz-api.sh

## reliability: every test RELIABILITY.md names, and every test in a file it names (all
## also part of make test)
reliability: $(PYTOOLS) browser
	$(CARGO) build --workspace --bins
	CARGO=$(CARGO) ./scripts/reliability.sh

## deploy: build, then `sam deploy --guided` of those binaries (the .aws-sam/build layout
## `make build` writes, as `sam build` would)
deploy: build $(SAM)
	$(SAM) deploy --guided --capabilities CAPABILITY_IAM \
		--parameter-overrides Architecture=$$(cat target/lambda/.architecture)

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# Each function's library as another crate uses it, without its Lambda feature: the
	@# workspace build unifies features and hid an undeclared dependency that broke
	@# `make build`.
	$(CARGO) clippy --lib --no-default-features -p ingest -p delivery-worker -p verifier -p subscription-api -- -D warnings

## layering: the core without I/O, the backends apart, stages reaching a backend only from
## main.rs; and the check's own test on a workspace that breaks every rule
layering:
	./scripts/check-core-deps.sh
	python3 scripts/check-layering.py .
	./scripts/check-layering-fails.sh

## browser: Debian's chromium and chromium-driver, for the console's browser tests
browser:
	./scripts/install-browser.sh

## cited-tests: every test RELIABILITY.md names still exists
cited-tests:
	./scripts/reliability.sh --check

template-lint: $(PYTOOLS) $(SAM)
	$(VENV)/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 $(SAM) validate --lint --template template.yaml --region us-east-1

unit: $(PYTOOLS) browser
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# The emulator (with cfn-lint, which it brings) and the OpenAPI validator, pinned, in the
# project's own venv.
$(PYTOOLS): scripts/requirements-dev.txt
	scripts/make-venv.sh $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

$(CARGO_LAMBDA): scripts/requirements-build.txt
	scripts/make-venv.sh .venv-build
	.venv-build/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-build.txt
	rm -f .venv-build/.installed-* && touch $@

$(SAM): scripts/requirements-deploy.txt
	scripts/make-venv.sh .venv-sam
	.venv-sam/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-deploy.txt

.tools/bin/cargo-fuzz:
	$(CARGO) install --locked --root .tools cargo-fuzz@0.13.2

$(VENV)/bin/schemathesis: scripts/requirements-fuzz.txt $(PYTOOLS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-fuzz.txt
