#!/usr/bin/env bash
# `make run-aws`: the AWS emulator on 127.0.0.1:4566, the template's resources created in it,
# and `hookbridge serve --backend aws` on top. Ctrl-C stops everything this started.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .hookbridge
port=${HOOKBRIDGE_EMULATOR_PORT:-4566}
# In its own session, so Ctrl-C reaches `hookbridge serve` first and the emulator outlives
# its graceful stop; the trap stops the emulator afterwards.
# scripts/emulator.py is moto_server with its DynamoDB transactions and SQS receives made
# atomic, and its queries and receives made cheap.
setsid .venv/bin/python3 scripts/emulator.py -H 127.0.0.1 -p "$port" > .hookbridge/emulator.log 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true; wait "$emulator" 2>/dev/null || true' EXIT
# Up once its port takes connections (bash's /dev/tcp: no curl needed).
up=""
for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=yes; break; }
    kill -0 "$emulator" 2>/dev/null || { echo "the emulator failed to start; see .hookbridge/emulator.log" >&2; exit 1; }
    sleep 0.2
done
[ -n "$up" ] || { echo "the emulator did not come up on port $port in 30 s; see .hookbridge/emulator.log" >&2; exit 1; }
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
"${CARGO_TARGET_DIR:-target}/debug/hookbridge" init --backend aws
"${CARGO_TARGET_DIR:-target}/debug/hookbridge" serve --backend aws
