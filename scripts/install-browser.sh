#!/usr/bin/env bash
# The console's browser tests drive Debian's Chromium through its WebDriver
# (`chromium` and `chromium-driver`). Installed once, with apt; nothing is downloaded at
# test time.
set -euo pipefail
if command -v chromedriver > /dev/null 2>&1 && command -v chromium > /dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "hookbridge: installing chromium and chromium-driver for the console's browser tests" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver > /dev/null
