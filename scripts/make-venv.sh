#!/usr/bin/env bash
# Creates the virtualenv named by $1. Debian splits `venv` (and the `ensurepip` it needs)
# out of python3 into `python3-venv`; on a fresh Debian machine without it, it is
# installed once with apt, as the browser for the console's tests is.
set -euo pipefail
dir="$1"
if python3 -m venv "$dir" 2> /dev/null; then
    exit 0
fi
rm -rf "$dir"
if ! command -v apt-get > /dev/null 2>&1; then
    echo "hookbridge: python3 cannot make a virtualenv and there is no apt-get to install python3-venv" >&2
    python3 -m venv "$dir"
    exit 1
fi
echo "hookbridge: installing python3-venv to make $dir" >&2
"$(dirname "$0")/apt-install.sh" python3-venv
python3 -m venv "$dir"
