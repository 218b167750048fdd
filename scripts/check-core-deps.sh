#!/usr/bin/env bash
# hookbridge-core must stay free of I/O: no async runtime, no AWS SDK, no SQLite, no HTTP client.
set -euo pipefail
forbidden='^(tokio|aws-|rusqlite|libsqlite3-sys|reqwest|hyper|lambda_|axum)'
found=$(cargo tree -p hookbridge-core -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u | grep -E "$forbidden" || true)
if [ -n "$found" ]; then
    echo "hookbridge-core depends on crates it must not use:" >&2
    echo "$found" >&2
    exit 1
fi
echo "hookbridge-core: no tokio, AWS SDK, SQLite or HTTP client in its dependencies"
