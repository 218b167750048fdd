#!/usr/bin/env bash
# Installs Debian packages with apt, with sudo when not root: what `make` installs of the
# system's own (the browser for the console's tests, python3-venv).
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
# Waits for another apt (a second of these under `make -j`) rather than failing on its lock.
lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "$@" > /dev/null
