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

# python3-dev, gcc, libc6-dev and libcap-dev build python-prctl; iproute2 and nftables are what
# the network drivers drive; util-linux has flock, nsenter and unshare; libseccomp2 compiles the
# seccomp filters; bird2 is the BGP speaker `pyctr node start` runs for a cluster network (its
# own service is kept from starting, see below: pyctr runs its own BIRD per node); graphviz has
# dot, which draws `pyctr network graph`'s picture (SVG and PNG).
runtime_packages="python3 python3-venv python3-dev gcc libc6-dev libcap-dev iproute2 nftables util-linux libseccomp2 bird2 graphviz"
# What the tests and the bench run on the host, beyond the above and a minimal Debian
# (debootstrap minbase already has coreutils, dash, grep, mawk, mount, tar):
#   procps        ps          run through `pyctr debug --pid` in tests/test_network_cluster.py
#   iputils-ping  ping        tests/test_network_cluster.py, from the sandbox's node namespaces
#   gcc libc6-dev gcc -static the security tests' probes (tests/probes.py)
#   iproute2      ip, ss      the network sandbox, the bench's node namespace, `pyctr debug`
#   nftables      nft         the network tests' counters and rule checks
#   util-linux    nsenter     the bench; mount: umount (the network sandbox's clean-up)
#   busybox-static  a static busybox with httpd: the web server of the walk-through's ending
#                 (tests/test_registry_walkthrough.py), copied into an image built by the tests
#   iperf3        TCP throughput between two containers, with and without a network policy
#                 (bench/policy.py), run in their network namespaces; its daemon stays off (its
#                 debconf question defaults to no, and the unit is disabled below)
dev_packages="procps iputils-ping mount busybox-static iperf3"
# The OCI client tests (tests/test_oci_clients.py) drive a runc-compatible runtime through real
# clients, each started privately by the tests (none of their services is used or started):
#   podman        podman 4.3, daemonless: `podman --runtime RT run ...`. Pulls in conmon (its
#                 container monitor, which calls the runtime), its default configuration
#                 (golang-github-containers-common) and, for that, a container-network-stack:
#                 containernetworking-plugins, unused (every container gets --network none)
#   containerd    containerd and ctr: a private daemon whose shim calls the runtime
#   docker.io     dockerd and docker: a private daemon with --add-runtime; pulls in tini (docker-init)
#                 and iptables (the commands only: the tests run dockerd with --iptables=false)
#   runc          the reference runtime: the same tests run against it (PYCTR_CLIENT_RUNTIME);
#                 podman, containerd and docker.io depend on a runtime anyway
# Left out: podman's recommends (buildah; fuse-overlayfs, slirp4netns and uidmap are for rootless
# podman; catatonit only for --init and pods) and docker.io's (apparmor, cgroupfs-mount, git...).
# The registry tests (tests/test_registry*.py) run a private registry and build images offline:
#   docker-registry  the distribution registry v2, started by the tests on loopback (its own
#                    service is kept from starting, as dockerd's is)
#   skopeo umoci     build OCI images from the Alpine minirootfs and push them (skopeo copy)
client_packages="podman containerd docker.io runc docker-registry skopeo umoci"
# The cluster tests (tests/test_cluster_ipam.py, tests/test_cluster_bgp.py) run a private etcd,
# the routed driver's datastore (and bird2, a runtime package, for test_cluster_bgp's nodes):
#   etcd-server   etcd 3.4, started by the tests with their own data folder inside a sandbox
#                 namespace (its own service is kept from starting, as dockerd's is: it would
#                 listen on this machine's loopback)
cluster_packages="etcd-server"
packages="$runtime_packages"
[ "${1:-}" = "--dev" ] && packages="$packages $dev_packages"
[ "${1:-}" = "--dev" ] && packages="$packages $client_packages $cluster_packages"

# bird2's, docker.io's, containerd's, docker-registry's and etcd-server's maintainer scripts start
# their services (invoke-rc.d, or deb-systemd-invoke): a running dockerd creates docker0 and
# iptables rules in this machine's own network namespace, and Debian's BIRD would speak for this
# machine's routes. A policy-rc.d that answers 101 ("action forbidden") stops that; it is removed
# afterwards only when this script put it there.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# pyctr setup.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
fi
new_units=""
installed() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }
installed bird2 || new_units="$new_units bird.service"
if [ "${1:-}" = "--dev" ]; then
    installed docker.io || new_units="$new_units docker.service docker.socket"
    installed containerd || new_units="$new_units containerd.service"
    installed docker-registry || new_units="$new_units docker-registry.service"
    installed etcd-server || new_units="$new_units etcd.service"
    installed iperf3 || new_units="$new_units iperf3.service"
fi
scripts/apt-install-missing.sh --no-install-recommends $packages
if [ -n "$own_policy" ]; then
    rm -f "$policy"
    trap - EXIT
fi
# Under systemd the packages also enable their units, and dockerd or BIRD would start at the next
# boot and change the network. Those that this run brought stay off: pyctr and the tests need
# only the programs.
if [ -n "$new_units" ] && [ -d /run/systemd/system ]; then
    systemctl disable --quiet $new_units 2>/dev/null || true
fi

# The venv is made from the distribution's Python, the one python3-venv and python3-dev above are
# for, not from the first python3 on PATH: a pyenv or hand-built one may lack them, and is often
# built without PGO and LTO (pyenv's default; Debian builds with both), which here made every
# Python start ~2 ms slower (`python -c pass` 13 ms against 11) and pyctr's imports ~15% slower.
# PYCTR_PYTHON=/path/to/python3.11+ picks another. pyctr needs 3.11 or newer; where python3 is
# older (Ubuntu 22.04), use python3.11.
is_python_3_11() { [ "$("$1" -c 'import sys; print(sys.version_info >= (3, 11))' 2>/dev/null)" = True ]; }
python="${PYCTR_PYTHON:-/usr/bin/python3}"
if [ -z "${PYCTR_PYTHON:-}" ] && ! is_python_3_11 "$python"; then
    scripts/apt-install-missing.sh --no-install-recommends python3.11 python3.11-venv python3.11-dev
    python=/usr/bin/python3.11
fi
if ! is_python_3_11 "$python"; then
    echo "setup: $python is not a Python 3.11 or newer, which pyctr needs" >&2
    exit 1
fi

# One set-up at a time (the tests and the bench may both call this); the lock is outside .venv,
# which may be made again below.
mkdir -p build
exec 9>build/.setup.lock
flock 9
extras=""
[ "${1:-}" = "--dev" ] && extras="[test]"
# A venv made from another interpreter (before this rule, or another PYCTR_PYTHON) is made again:
# it holds only what this script installs.
made_from() { sed -n 's/^executable = //p' .venv/pyvenv.cfg 2>/dev/null; }
if [ -x .venv/bin/python ] && [ "$(made_from)" != "$(readlink -f "$(command -v "$python")")" ]; then
    echo "setup: .venv was made from $(made_from); making it again from $python" >&2
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# An editable install in setuptools' strict mode: a tree of links under build/ and one plain
# path in a .pth file. The default mode installs an import hook that every Python start in
# the venv pays ~12 ms for. Links follow edits; a new or removed module needs a reinstall,
# so the stamp covers the list of modules (and data files) as well as pyproject.toml.
wanted="$(cat pyproject.toml; find runtime images network -name '*.py' -o -name '*.json' | sort)"
stamp=.venv/.pyctr-installed
have_test_tools() { .venv/bin/python -c "import pytest, pexpect, jwt" 2>/dev/null; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] || { [ -n "$extras" ] && ! have_test_tools; }; then
    echo "setup: installing pyctr$extras into .venv" >&2
    rm -rf build/__editable__.pyctr-*
    if ! .venv/bin/python -m pip install --disable-pip-version-check \
            --config-settings editable_mode=strict -e ".$extras" >.venv/pip.log 2>&1; then
        tail -20 .venv/pip.log >&2
        exit 1
    fi
    printf '%s' "$wanted" >"$stamp"
fi
# An editable install leaves bytecode to the first run; compile it now (even where
# PYTHONDONTWRITEBYTECODE is set) so that every `pyctr` start does not pay for it.
.venv/bin/python -m compileall -q build/__editable__.pyctr-* >/dev/null
site_packages="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
# setuptools, which `python -m venv` puts into a 3.11 venv, hooks every Python start through its
# distutils-precedence.pth (~0.5 ms). Nothing in pyctr uses it at run time, and pip builds pyctr
# with a copy of its own (build isolation).
if [ -e "$site_packages/distutils-precedence.pth" ]; then
    if ! .venv/bin/python -m pip uninstall --disable-pip-version-check -q -y setuptools >.venv/pip.log 2>&1; then
        tail -20 .venv/pip.log >&2
        exit 1
    fi
fi
# pyctr's two commands, written over pip's scripts. They start Python without `site` (-S): Debian's
# sitecustomize and the rest of site's work are ~1 ms of every command. Each adds the venv's
# site-packages itself, with its .pth files (the editable install's path among them).
write_command() {  # NAME MODULE FUNCTION
    cat >".venv/bin/$1.new" <<SCRIPT
#!$PWD/.venv/bin/python -S
# $1, written by pyctr's scripts/setup.sh: Python without site (-S), and the venv's packages.
import site
import sys

site.addsitedir("$site_packages")
from $2 import $3

sys.exit($3())
SCRIPT
    chmod 755 ".venv/bin/$1.new"
    mv ".venv/bin/$1.new" ".venv/bin/$1"
}
# A path with a space (or a quote) cannot go on a #! line or in the script as is: pip's scripts,
# which handle it, stay there.
case "$PWD" in
    *[!A-Za-z0-9_./+@%-]*) ;;
    *)
        write_command pyctr pyctr.runtime.cli run
        write_command pyctr-oci pyctr.runtime.oci_cli main
        ;;
esac
