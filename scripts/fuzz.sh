#!/usr/bin/env bash
# `make fuzz`: each cargo-fuzz target for FUZZ_SECONDS (default 60). A crash stops the run;
# copy its input from fuzz/artifacts/<target>/ into fuzz/regressions/<target>/, fix the bug,
# and `make test` checks that input from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
# cargo-fuzz drives libFuzzer through rustc's -Z flags; the machine's one stable toolchain
# accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
export PATH="$PWD/.tools/bin:$PATH"
cd fuzz
for target in envelope patterns hook_validation jwt; do
    mkdir -p "corpus/$target"
    cp -n regressions/"$target"/* "corpus/$target/" 2>/dev/null || true
    echo "fuzz: $target for ${seconds}s"
    cargo fuzz run --sanitizer none "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=8192
done
