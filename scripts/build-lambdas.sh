#!/usr/bin/env bash
# `make build`: the four Lambda functions as `bootstrap` binaries under target/lambda/<fn>/,
# for arm64 (Graviton) when this toolchain can target it, x86_64 otherwise. The chosen
# architecture is written to target/lambda/.architecture for `make deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv-build/bin:$PATH"
if rustup target add aarch64-unknown-linux-gnu > /dev/null 2>&1; then
    arch=arm64
    flag=--arm64
else
    echo "hookbridge: no aarch64 target for this toolchain; building x86_64 (deploy with Architecture=x86_64)" >&2
    arch=x86_64
    flag=--x86-64
fi
# One function at a time: built together, cargo unifies their dependencies' features, and
# what the API needs (jsonschema's full Unicode regular expressions) made each of the
# other three about 0.5 MB larger.
# A function aborts on a panic, where `hookbridge serve` unwinds to its guards: its batch
# is retried either way, and the unwinding code is about 1.1 MB of each binary.
export CARGO_PROFILE_RELEASE_PANIC=abort
for f in subscription-api ingest delivery-worker verifier; do
    cargo lambda build --release "$flag" --package "$f"
done
mkdir -p target/lambda
echo "$arch" > target/lambda/.architecture
for f in subscription-api ingest delivery-worker verifier; do
    printf '%-18s %s %9d bytes\n' "$f" "$arch" "$(stat -c %s "target/lambda/$f/bootstrap")"
done
# The same layout `sam build` makes, so `sam deploy` finds the functions either way.
python3 scripts/sam-build-layout.py
