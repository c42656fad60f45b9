#!/bin/sh
# Install, with apt-get, those of the given Debian packages that are not installed yet.
#   scripts/apt-install-missing.sh [--no-install-recommends] PACKAGE...
set -eu
options=""
if [ "${1:-}" = "--no-install-recommends" ]; then
    options="$1"
    shift
fi
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
echo "installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $options $missing >/dev/null
