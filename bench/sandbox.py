"""Everything the bench makes on this machine, and the undoing of it.

A `Sandbox` owns one private work directory, the sandbox node network namespace, and a stack
of undo steps run in reverse at the end, on success, on an exception and on SIGINT/SIGTERM/SIGHUP.
It also remembers which well-known host paths did not exist before the bench, so that what the
peers create there behind our back (podman's /run/runc, its cgroup parent...) is removed again.
"""

import ctypes
import ctypes.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

# Paths that podman, runc, pyctr-oci (under podman) or `ip netns` create when absent. Podman's
# rootful network state directory (/run/containers/networks) is hard-coded in podman, so it
# cannot be moved into our work directory; we can only take it away again when we made it.
# util-linux's mount (podman's import runs one, in a mount namespace of its own) makes /run/mount
# for its utab when absent, as on a host without systemd.
HOST_PATHS = ("/run/runc", "/run/pyctr-oci", "/run/containers", "/var/lib/containers", "/run/mount")
# `ip netns add` makes this folder when absent and, where /run is not a shared mount (not a
# tmpfs under systemd), bind-mounts it on itself: undone at the end if the bench made them.
NETNS_DIR = "/run/netns"
# pyctr-oci under podman (its default root) keeps the seccomp filters it compiles here: a cache,
# whose files the bench made go at the end, and the folder with the last one.
PYCTR_OCI_FILTERS = "/run/pyctr-oci/.seccomp"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("libpod_parent",)  # podman's cgroup parent under cgroupfs

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MNT_DETACH = 2

# Run with a Python that has requests, argument etcd's client URL: returns once etcd answers
# (the bench's cluster and the tests' etcd).
ETCD_WAIT_READY = """
import sys, time, requests
deadline = time.monotonic() + 20
while True:
    try:
        requests.post(sys.argv[1] + "/v3/kv/range", json={"key": "AA=="}, timeout=1).raise_for_status()
        break
    except requests.RequestException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
"""


class Sandbox:
    def __init__(self, workdir: str | None = None, keep: bool = False):
        self.tag = secrets.token_hex(3)
        self.keep = keep
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"pyctr-bench-{self.tag}-", dir="/tmp"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self.problems: list[str] = []  # cleanup steps that failed: reported, never hidden
        self._absent = [p for p in HOST_PATHS if not os.path.lexists(p)]
        self._started = time.time()
        self._netns_dir_before = NetnsDirState.of(NETNS_DIR)
        self._absent_cgroups = [d for d in _cgroup_dirs() if not d.exists()]
        self._pyctr_cgroups = _pyctr_cgroups()
        self._host_network = host_network()
        self.netns: str | None = None

    # -- the undo stack -------------------------------------------------------------------

    def on_cleanup(self, what: str, step: Callable[[], None]) -> None:
        """Register an undo step; steps run last-registered first."""
        self._undo.append((what, step))

    def __enter__(self) -> "Sandbox":
        for sig in _SIGNALS[1:]:
            signal.signal(sig, _raise_exit)
        return self

    def __exit__(self, *exc) -> None:
        # A second Ctrl-C during the clean-up would leave things behind: hold signals until done.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self.cleanup()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def cleanup(self) -> None:
        while self._undo:
            what, step = self._undo.pop()
            try:
                step()
            except Exception as e:  # keep going: one failed step must not leak the rest
                self.problems.append(f"{what}: {e}")
        self._remove_host_paths()
        self._check_machine()
        if self.keep:
            print(f"bench: kept {self.dir}", file=sys.stderr)
            return
        left = mounts_under(self.dir)
        if left:
            self.problems.append(f"mounts left under {self.dir}: {left[:3]}; not deleting it")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the sandbox node network namespace -----------------------------------------------

    def make_netns(self) -> str:
        """`ip netns add benchnode-<random>` with loopback up; deleted at clean-up."""
        self.netns = self.add_netns()
        return self.netns

    def add_netns(self, role: str = "") -> str:
        """Another namespace of the bench, `benchnode-<random>-ROLE` (the cluster rows make one
        per node), with loopback up; deleted at clean-up, or earlier by delete_netns."""
        name = f"benchnode-{self.tag}" + (f"-{role}" if role else "")
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.on_cleanup(f"delete netns {name}", lambda: delete_netns(name))
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def in_netns(self, argv: list[str]) -> list[str]:
        """argv run inside the node namespace. Not `ip netns exec`: that mounts a fresh sysfs
        on /sys, which hides /sys/fs/cgroup, and both pyctr and podman need their cgroups."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    # -- host paths the peers made ----------------------------------------------------------

    def _remove_host_paths(self) -> None:
        """Take away the host paths podman made during the bench. Directories go only when
        empty; /run/containers (podman's network state) only when no podman, conmon or netavark
        of anyone is running, since another podman on the machine may have started using it."""
        for d in self._absent_cgroups:
            _rmdir_tree(d)  # cgroup directories go bottom-up with rmdir, never rm -r
        note = release_netns_dir(NETNS_DIR, self._netns_dir_before)
        if note:
            print(f"bench: {note}", file=sys.stderr)
        remove_seccomp_filters(PYCTR_OCI_FILTERS, made_since=self._started)
        for path in self._absent:
            if not os.path.lexists(path):
                continue
            if path == "/run/containers" and not podman_running():
                shutil.rmtree(path, ignore_errors=True)
            else:
                _rmdir_tree(Path(path))
            if os.path.lexists(path):
                self.problems.append(f"{path} was made during the bench and is still there "
                                     "(not empty, or in use by another podman or bench)")

    def _check_machine(self) -> None:
        """Report what changed on the machine while the bench ran. Other users of the machine
        may have done it, so these are reported, never undone."""
        if host_network() != self._host_network:
            self.problems.append("the host's network (links, routes, nftables or ip_forward) "
                                 "changed while the bench ran")
        # A cgroup with processes belongs to a container someone is running right now (the test
        # suite may run beside the bench); an empty one that stayed is a leak.
        new = [d for d in _pyctr_cgroups() - self._pyctr_cgroups if _cgroup_empty(d)]
        if new:
            self.problems.append(f"{len(new)} empty pyctr cgroups appeared and stayed, e.g. {sorted(new)[0]}")


def host_network() -> list[str]:
    """What the bench must never change in the machine's own network namespace."""
    out = []
    for argv in (["ip", "-br", "link"], ["ip", "-4", "route"], ["ip", "-6", "route"],
                 ["nft", "list", "ruleset"]):
        try:
            out.append(subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout)
        except (OSError, subprocess.TimeoutExpired):
            out.append("")
    out.append(Path("/proc/sys/net/ipv4/ip_forward").read_text())
    return out


def _pyctr_cgroups() -> set[str]:
    """Per-container cgroups under pyctr's parent, in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return set()
    return {str(d) for h in CGROUP_ROOT.iterdir() if (h / "pyctr").is_dir()
            for d in (h / "pyctr").iterdir() if d.is_dir()}


def _cgroup_empty(path: str) -> bool:
    try:
        return not Path(path, "cgroup.procs").read_text().strip()
    except OSError:
        return False  # gone meanwhile


def podman_running() -> bool:
    """Is any podman, conmon or netavark alive (zombies left to a lax init do not count)?"""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm, _, rest = stat[stat.index("(") + 1:].rpartition(")")
        if comm in ("podman", "conmon", "netavark") and rest.split()[0] != "Z":
            return True
    return False


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def delete_netns(name: str) -> None:
    """Kill what still runs in our namespace (only things the bench started), then delete it.
    One deleted already is no error (the cluster rows delete theirs after each size)."""
    if not os.path.exists(f"{NETNS_DIR}/{name}"):
        return
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True)


class NetnsDirState:
    """Whether the namespace folder existed, and was a mount point, at some moment."""

    def __init__(self, existed: bool, mounted: bool):
        self.existed = existed
        self.mounted = mounted

    @classmethod
    def of(cls, path: str) -> "NetnsDirState":
        return cls(os.path.lexists(path), path in mount_points())


def release_netns_dir(path: str, before: NetnsDirState) -> str | None:
    """Undo what `ip netns add` did to `path` during the bench: its bind mount on itself, then
    the folder, each only if it was not there before. Nothing is undone while namespaces live
    in it: someone else made them, and they need the mount. Returns a note when it stays."""
    if before.existed and before.mounted or not os.path.isdir(path):
        return None
    if os.listdir(path):
        return f"{path} stays as it is: other namespaces live in it now"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    # os.path.ismount cannot see a folder bind-mounted on itself (same device, same inode):
    # mountinfo can. umount2 without MNT_DETACH fails, rather than hides, a mount in use; and
    # umount(8) is not used, as it would write /run/mount.
    while path in mount_points():
        if libc.umount2(path.encode(), 0) != 0:
            error = ctypes.get_errno()
            return f"{path} stays mounted: umount: {os.strerror(error)}"
    if not before.existed:
        try:
            os.rmdir(path)
        except OSError as e:
            return f"{path} stays: {e.strerror}"
    return None


def _cgroup_dirs() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    return [h / name for h in CGROUP_ROOT.iterdir() for name in CGROUP_NAMES]


def remove_seccomp_filters(folder: str, made_since: float) -> None:
    """The filters pyctr-oci compiled into `folder` (a root's .seccomp) since `made_since`, and
    the folder once it is empty; the tests use it too."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.endswith(".bpf") and entry.stat().st_mtime >= made_since:
                os.unlink(entry.path)
        except OSError:
            pass
    try:
        os.rmdir(folder)
    except OSError:
        pass


def _rmdir_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, from /proc/self/mountinfo (field 5, in which
    space, tab, newline and backslash are written as octal escapes)."""
    with open("/proc/self/mountinfo") as f:
        return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                for line in f]


def mounts_under(top: Path) -> list[str]:
    """Mount points at or below `top`, deepest first."""
    prefix = str(top).rstrip("/") + "/"
    found = [p for p in mount_points() if p == str(top) or p.startswith(prefix)]
    return sorted(found, key=len, reverse=True)


def unmount_all_under(top: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    for point in mounts_under(top):
        libc.umount2(point.encode(), MNT_DETACH)
