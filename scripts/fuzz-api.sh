#!/usr/bin/env bash
# `make fuzz-api`: schemathesis generates requests for every operation of the published
# OpenAPI document against a running `hookbridge serve` (embedded backend), checking that
# nothing answers 5xx, every answer conforms to the document (status, content type,
# headers, schema), and schema-violating requests are refused. Its positive-data heuristic
# is left out: it flags rules JSON Schema cannot state (`until` after `since`, a `site`
# agreeing with `detail.site`, a BASIC username without ':'), which are 400s by design.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${CARGO_TARGET_DIR:-target}/debug/hookbridge" serve --database "$dir/hb.db" --listen "127.0.0.1:$port" > "$dir/serve.log" 2>&1 &
serve=$!
trap 'kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true' EXIT
up=""
for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=yes; break; }
    sleep 0.2
done
[ -n "$up" ] || { echo "hookbridge serve did not come up; see $dir/serve.log" >&2; exit 1; }
token=$("${CARGO_TARGET_DIR:-target}/debug/hookbridge" token --tenant fuzz)
.venv/bin/schemathesis run "http://127.0.0.1:$port/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,ignored_auth \
    --max-examples "${FUZZ_API_EXAMPLES:-100}" \
    --workers 2 \
    "$@"
