#!/bin/sh
# Install, with apt-get, those of the given Debian packages that are not installed yet.
#   scripts/apt-install-missing.sh [--no-install-recommends] PACKAGE...
set -eu
options=""
if [ "${1:-}" = "--no-install-recommends" ]; then
    options="$1"
    shift
fi
# One dpkg-query for all of them: the usual case, everything present, stays quick.
installed=" $(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
              awk '$2 == "installed" { printf "%s ", $1 }')"
missing=""
for pkg in "$@"; do
    case "$installed" in
        *" $pkg "*) ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0
echo "installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $options $missing >/dev/null
