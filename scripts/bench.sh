#!/bin/sh
# The benchmark in one command, as root: set up pyctr, the peers and matplotlib, then run it.
#   ./scripts/bench.sh                                   the full bench (see bench/README.md)
#   ./scripts/bench.sh --quick                           a smoke run, a few runs of each
#   ./scripts/bench.sh --compare bench/results/OLD.json  the same, compared with an earlier run
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench: run as root (containers need namespaces, mounts and cgroups)" >&2
    exit 1
fi

./scripts/setup.sh

# The peers, from Debian. netavark is podman's bridge network (only recommended by the
# packages) and uses iptables (only suggested).
scripts/apt-install-missing.sh runc podman netavark iptables

# The plot needs matplotlib: the project's `bench` extra.
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
    # Strict, as setup.sh installs it: the default editable mode's import hook costs every start.
    .venv/bin/python -m pip install -q --disable-pip-version-check \
        --config-settings editable_mode=strict -e ".[bench]"
    # That reinstall left pyctr without bytecode: compiled again, else every start of the bench
    # would compile it (where PYTHONDONTWRITEBYTECODE is set) and the rows would measure that.
    ./scripts/setup.sh
fi

exec .venv/bin/python -m bench "$@"
