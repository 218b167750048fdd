#!/usr/bin/env bash
# The console's browser tests drive Debian's Chromium through its WebDriver
# (`chromium` and `chromium-driver`). Installed once, with apt; nothing is downloaded at
# test time.
set -euo pipefail
if command -v chromedriver > /dev/null 2>&1 && command -v chromium > /dev/null 2>&1; then
    exit 0
fi
echo "hookbridge: installing chromium and chromium-driver for the console's browser tests" >&2
"$(dirname "$0")/apt-install.sh" chromium chromium-driver
