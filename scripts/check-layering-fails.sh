#!/usr/bin/env bash
# The layering check's own test: on a workspace made to break each rule, it must fail and
# name every breach.
set -uo pipefail
cd "$(dirname "$0")"
out=$(python3 check-layering.py layering-fixture 2>&1)
status=$?
fail() { echo "the layering check missed a breach: $1" >&2; echo "$out" >&2; exit 1; }
[ "$status" -eq 1 ] || fail "it exited $status, not 1"
grep -q "hookbridge-embedded depends on hookbridge-aws" <<<"$out" || fail "backends reaching each other"
grep -q "ingest depends on hookbridge-aws for its library" <<<"$out" || fail "a stage depending on a backend"
grep -q "ingest/src/lib.rs uses hookbridge-aws" <<<"$out" || fail "a stage's sources using a backend"
echo "layering: the check fails on a deliberately wrong workspace, naming each breach"
