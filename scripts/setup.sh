#!/bin/sh
# Set up pyctr on Debian or Ubuntu, as root: system packages when missing, then .venv.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    also the test tools
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root (pyctr creates namespaces, mounts and cgroups)" >&2
    exit 1
fi

# Debian package -> why pyctr needs it
packages="python3 python3-venv python3-dev gcc libcap-dev iproute2 nftables util-linux"
missing=""
for pkg in $packages; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

extras=""
[ "${1:-}" = "--dev" ] && extras="[test]"
stamp=".venv/.installed$extras"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Reinstall only when the project's metadata changed since the last set-up.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing pyctr$extras into .venv" >&2
    if ! .venv/bin/python -m pip install --disable-pip-version-check -e ".$extras" >.venv/pip.log 2>&1; then
        tail -20 .venv/pip.log >&2
        exit 1
    fi
    touch "$stamp"
fi
# An editable install leaves bytecode to the first run; compile it now (even where
# PYTHONDONTWRITEBYTECODE is set) so that every `pyctr` start does not pay for it.
.venv/bin/python -m compileall -q runtime images network >/dev/null
