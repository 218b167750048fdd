#!/usr/bin/env bash
# Installs Debian packages with apt, with sudo when not root: what `make` installs of the
# system's own (the browser for the console's tests, python3-venv).
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" > /dev/null
