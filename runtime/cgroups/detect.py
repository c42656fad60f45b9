"""Which cgroup layout this host has, from the mounts (/proc/self/mountinfo), and the backend
for a container on it; PYCTR_CGROUP_VERSION=1|2 forces one (`pyctr info` shows which)."""

import os

from pyctr.runtime.cgroups.hybrid import CgroupHybrid, NoCgroup
from pyctr.runtime.cgroups.place import UNIFIED, Place
from pyctr.runtime.cgroups.v1 import CGROUP_ROOT, CgroupV1
from pyctr.runtime.cgroups.v2 import CgroupV2
from pyctr.runtime.errors import PyctrError

VERSION_VARIABLE = "PYCTR_CGROUP_VERSION"
V1_CONTROLLERS = ("blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
                  "net_cls", "net_prio", "perf_event", "pids", "rdma")

Backend = CgroupV1 | CgroupV2 | CgroupHybrid | NoCgroup


class Layout:
    """The cgroup hierarchies this process sees, and the backend pyctr uses on them."""

    def __init__(self, mode: str | None, v1_root: str | None = None, v1_controllers: set[str] = frozenset(),
                 unified: str | None = None, forced: str | None = None, reason: str = ""):
        self.mode = mode  # "v1", "hybrid", "v2", or None when no backend can run
        self.v1_root = v1_root  # the folder of the v1 controller hierarchies
        self.v1_controllers = set(v1_controllers)
        self.unified = unified  # the cgroup2 mount point
        self.forced = forced  # PYCTR_CGROUP_VERSION, when set
        self.reason = reason  # why mode is None

    @property
    def version(self) -> str:
        """Docker's "Cgroup Version": the one that applies limits."""
        return {"v1": "1", "hybrid": "1", "v2": "2"}.get(self.mode, "none")

    def backend(self, container_id: str, place: Place | None = None) -> Backend:
        place = place or Place.default(container_id)
        v1 = CgroupV1(container_id, self.v1_root, self.v1_controllers, place) if self.v1_root else None
        unified = CgroupV2(container_id, self.unified, place) if self.unified else None
        mode = self._mode_of_existing(v1, unified) or self.mode
        if mode == "v1" and v1:
            return v1
        if mode == "v2" and unified:
            return unified
        if mode == "hybrid" and v1 and unified:
            return CgroupHybrid(v1, unified)
        return NoCgroup(container_id, self.reason or "no cgroup hierarchy is mounted")

    @staticmethod
    def _mode_of_existing(v1: CgroupV1 | None, unified: CgroupV2 | None) -> str | None:
        """A container keeps the backend it was started with, whatever PYCTR_CGROUP_VERSION
        says now (its monitor, a later `rm` and `exec` must all find the same cgroups)."""
        in_v1 = bool(v1) and v1.exists()
        in_unified = bool(unified) and unified.exists()
        if in_v1 and in_unified:
            return "hybrid"
        return "v1" if in_v1 else "v2" if in_unified else None


def parse_mountinfo(text: str, visible_only: bool = False) -> tuple[dict[str, str], list[str]]:
    """The v1 controller hierarchies (controller -> mount point) and the cgroup2 mount points.
    A named v1 hierarchy (name=systemd) has no controller, and does not count. With
    `visible_only`, a mount that another one covers (a tmpfs over /sys/fs/cgroup) does not
    count either: mountinfo still lists it, but its path leads elsewhere."""
    v1: dict[str, str] = {}
    unified: list[str] = []
    for line in text.splitlines():
        fields, separator, tail = line.partition(" - ")
        parts, tail_parts = fields.split(), tail.split()
        if not separator or len(parts) < 5 or len(tail_parts) < 3 or tail_parts[0] not in ("cgroup", "cgroup2"):
            continue
        mount_point = os.path.normpath(_unescape(parts[4]))
        if visible_only and not _is_visible(mount_point, parts[2]):
            continue
        if tail_parts[0] == "cgroup2":
            unified.append(mount_point)
        else:
            for option in tail_parts[2].split(","):  # rw,memory or rw,cpu,cpuacct or rw,xattr,name=systemd
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, mount_point)
    return v1, unified


def _is_visible(mount_point: str, device: str) -> bool:
    """The path leads to this mount's filesystem (device MAJOR:MINOR), not to one over it."""
    major, _, minor = device.partition(":")
    try:
        return os.stat(mount_point).st_dev == os.makedev(int(major), int(minor))
    except (OSError, ValueError):
        return False


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(escaped, char)
    return path


_FROM_ENVIRONMENT = "environment"
# The host's layout, read once per process, by what PYCTR_CGROUP_VERSION said: a pyctr process
# lives milliseconds to a container's life, and a monitor looked at the mounts four times (a
# read and parse of mountinfo: ~0.3 ms, up to ~5 ms on a busy host).
_host_layouts: dict[str | None, Layout] = {}


def detect(mountinfo: str | None = None, forced: str | None = _FROM_ENVIRONMENT) -> Layout:
    """The layout from /proc/self/mountinfo (read once per process; or the given text), and
    PYCTR_CGROUP_VERSION (or `forced`: "1", "2", or None to follow the mounts)."""
    if forced is _FROM_ENVIRONMENT:
        forced = os.environ.get(VERSION_VARIABLE) or None
    if mountinfo is None:
        if forced not in _host_layouts:
            _host_layouts[forced] = _detect(_read("/proc/self/mountinfo"), forced, visible_only=True)
        return _host_layouts[forced]
    return _detect(mountinfo, forced, visible_only=False)


def _detect(mountinfo: str, forced: str | None, visible_only: bool) -> Layout:
    if forced not in (None, "1", "2"):
        raise PyctrError(f"{VERSION_VARIABLE}={forced}: must be 1 or 2 (or unset, to follow the host)")
    v1, unified_mounts = parse_mountinfo(mountinfo, visible_only)
    # The cgroup2 hierarchy at the top (pure v2) wins over one beside v1 (hybrid's unified/).
    unified = min(unified_mounts, key=lambda p: (p != CGROUP_ROOT, p.count("/")), default=None)
    v1_root = _common_parent(v1) if v1 else None
    layout = Layout(None, v1_root, set(v1), unified, forced)
    if forced == "1":
        layout.mode = "v1" if v1 else None
        layout.reason = "" if v1 else f"{VERSION_VARIABLE}=1, but no cgroup v1 controller is mounted"
    elif forced == "2":
        layout.mode = "v2" if unified else None
        layout.reason = "" if unified else f"{VERSION_VARIABLE}=2, but no cgroup2 hierarchy is mounted"
    elif v1:
        layout.mode = "hybrid" if unified else "v1"
    elif unified:
        layout.mode = "v2"
    else:
        layout.reason = ("no cgroup hierarchy is mounted (is /sys/fs/cgroup hidden, as under `ip netns exec`? "
                         "use `nsenter --net=/run/netns/NAME`)")
    return layout


def _common_parent(mounts: dict[str, str]) -> str:
    """Where the controllers' folders are: /sys/fs/cgroup, whose memory/ is the memory hierarchy."""
    path = mounts.get("memory") or next(iter(mounts.values()))
    return os.path.dirname(path)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
