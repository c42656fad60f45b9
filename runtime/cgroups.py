"""Resource limits: one cgroup per container under a `pyctr` parent.

The backend follows the host's layout, read from the mounts (/proc/self/mountinfo), and
PYCTR_CGROUP_VERSION=1|2 forces one (`pyctr info` shows which):
  v1      one hierarchy per controller (/sys/fs/cgroup/memory, ...): limits through cgroupspy;
  hybrid  v1 for the controllers, and the cgroup2 hierarchy (/sys/fs/cgroup/unified, which has
          no controllers) for membership: pyctr joins it too, as runc does, and kills through it;
  v2      the unified hierarchy alone (/sys/fs/cgroup on Debian 12, Ubuntu 22.04+ with systemd).
A limit that the host cannot apply refuses the start with one line (exit 125), as runc does; so
does a host where no hierarchy is visible (`ip netns exec` remounts /sys without them).
A container's cgroup is found where it was made, whatever PYCTR_CGROUP_VERSION says later.
"""

import os
import signal
import time
from pathlib import Path

from pyctr.runtime import explain
from pyctr.runtime.errors import PyctrError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "pyctr"
CFS_PERIOD_US = 100_000
VERSION_VARIABLE = "PYCTR_CGROUP_VERSION"
V1_CONTROLLERS = ("blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
                  "net_cls", "net_prio", "perf_event", "pids", "rdma")

# Docker's default device allow-list: the nodes pyctr puts in /dev, plus mknod of any.
DEFAULT_DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null zero full random urandom
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",  # tty console ptmx pts/*
)


class Limits:
    def __init__(self, memory: int | None = None, nano_cpus: int | None = None,
                 cpu_shares: int | None = None, pids: int | None = None, restrict_devices: bool = True):
        self.memory = memory  # bytes
        self.nano_cpus = nano_cpus  # CPUs * 1e9, Docker's unit
        self.cpu_shares = cpu_shares
        self.pids = pids
        self.restrict_devices = restrict_devices

    def needs(self) -> dict[str, str]:
        """The controllers these limits need (v2 names), each with the flag that asked for it."""
        needs = {}
        if self.memory:
            needs["memory"] = "--memory"
        if self.nano_cpus or self.cpu_shares:
            needs["cpu"] = "--cpus" if self.nano_cpus else "--cpu-shares"
        if self.pids:
            needs["pids"] = "--pids-limit"
        return needs


class Usage:
    def __init__(self, memory: int, memory_limit: int | None, cpu_ns: int, pids: int):
        self.memory = memory
        self.memory_limit = memory_limit
        self.cpu_ns = cpu_ns
        self.pids = pids


def _write(path: Path, value: object) -> None:
    explain.write(path, value)
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as error:
        error.filename = error.filename or str(path)  # a refused write fails at close, unnamed
        raise


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


class CgroupV1:
    """One directory per controller hierarchy; memory, cpu and devices go through cgroupspy."""

    CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")

    def __init__(self, container_id: str, root: Path = CGROUP_ROOT, mounted: set[str] | None = None):
        self.id = container_id
        self.root = root
        self.mounted = mounted  # the controllers mountinfo lists (None: trust the folders)

    def path(self, controller: str) -> Path:
        return self.root / controller / PARENT / self.id

    def _node(self, controller: str):
        # Build the node chain by hand: cgroupspy's Tree() would walk every cgroup on the host.
        from cgroupspy.nodes import Node

        node = Node(str(self.root).encode())
        for part in (controller, PARENT, self.id):
            node = Node(part.encode(), parent=node)
        return node

    def refuse_what_cannot_apply(self, limits: Limits) -> None:
        present = self._present()
        if not present:
            raise PyctrError(f"cannot start the container: no cgroup v1 controller is mounted under {self.root}")
        missing = {flag: controller for controller, flag in limits.needs().items() if controller not in present}
        if limits.restrict_devices and "devices" not in present:
            missing["the device cgroup (all but --privileged containers)"] = "devices"
        if missing:
            raise PyctrError(f"cannot apply {', '.join(missing)}: no {', '.join(sorted(set(missing.values())))} "
                             f"cgroup controller is mounted under {self.root}")

    def create(self, limits: Limits) -> None:
        self.refuse_what_cannot_apply(limits)
        _create_or_undo(self, lambda: self._make(limits))

    def _make(self, limits: Limits) -> None:
        # Each controller costs a migration when PID 1 joins (an RCU grace period on v1), so
        # only those with work to do: memory, cpuacct and pids always (limits, OOM, stats, top),
        # cpu for --cpus or --cpu-shares, devices unless --privileged.
        wanted = {"memory", "cpuacct", "pids"}
        if limits.nano_cpus or limits.cpu_shares:
            wanted.add("cpu")
        if limits.restrict_devices:
            wanted.add("devices")
        for controller in self._present():
            if controller not in wanted:
                continue
            path = self.path(controller)
            explain.step("mkdir", "-p", path)
            _mkdir_under_parent(path)
        if limits.memory:
            memory = self._node("memory").controller
            explain.write(self.path("memory") / "memory.limit_in_bytes", limits.memory)
            memory.limit_in_bytes = limits.memory
            # Without a memsw limit the container would spill into swap instead of being OOM-killed.
            if (self.path("memory") / "memory.memsw.limit_in_bytes").exists():
                explain.write(self.path("memory") / "memory.memsw.limit_in_bytes", limits.memory)
                memory.memsw_limit_in_bytes = limits.memory
        if limits.nano_cpus or limits.cpu_shares:
            cpu = self._node("cpu").controller
            if limits.nano_cpus:
                quota = limits.nano_cpus * CFS_PERIOD_US // 1_000_000_000
                explain.write(self.path("cpu") / "cpu.cfs_period_us", CFS_PERIOD_US)
                cpu.cfs_period_us = CFS_PERIOD_US
                explain.write(self.path("cpu") / "cpu.cfs_quota_us", quota)
                cpu.cfs_quota_us = quota
            if limits.cpu_shares:
                explain.write(self.path("cpu") / "cpu.shares", limits.cpu_shares)
                cpu.shares = limits.cpu_shares
        if limits.pids and self.path("pids").is_dir():
            # cgroupspy has no pids controller.
            _write(self.path("pids") / "pids.max", limits.pids)
        if limits.restrict_devices and self.path("devices").is_dir():
            _write(self.path("devices") / "devices.deny", "a")
            for rule in DEFAULT_DEVICE_RULES:
                _write(self.path("devices") / "devices.allow", rule)

    def add(self, pid: int) -> None:
        for procs in self.procs_file():
            _write(procs, pid)

    def procs_file(self) -> list[Path]:
        """The cgroup.procs of each hierarchy this container has (see create); co-mounted
        controllers (cpu,cpuacct) share one."""
        files, seen = [], set()
        for controller in self._present():
            procs = self.path(controller) / "cgroup.procs"
            real = os.path.realpath(procs)
            if real not in seen and procs.exists():
                seen.add(real)
                files.append(procs)
        return files

    def oom_killed(self) -> bool:
        try:
            for line in _read(self.path("memory") / "memory.oom_control").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        except OSError:
            pass
        return False

    def usage(self) -> Usage:
        mem = self.path("memory")
        limit = int(_read(mem / "memory.limit_in_bytes"))
        return Usage(
            memory=int(_read(mem / "memory.usage_in_bytes")),
            memory_limit=None if limit >= 1 << 60 else limit,
            cpu_ns=int(_read(self.path("cpuacct") / "cpuacct.usage")),
            pids=int(_read(self.path("pids") / "pids.current")),
        )

    def pids(self) -> list[int]:
        for procs in self.procs_file():
            try:
                return [int(p) for p in _read(procs).split()]
            except OSError:
                pass
        return []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the container (v1 has no cgroup.kill)."""
        explain.comment(f"kill -{sig} each PID in {self.path('pids')}/cgroup.procs")
        _signal_each(self.pids(), sig)

    def exists(self) -> bool:
        return any(self.path(c).is_dir() for c in self._present())

    def remove(self) -> None:
        for controller in self._present():
            _rmdir_when_empty(self.path(controller))
            _remove_parent_if_unused(self.path(controller).parent)

    def _present(self) -> list[str]:
        return [c for c in self.CONTROLLERS
                if (self.mounted is None or c in self.mounted) and (self.root / c).is_dir()]


class CgroupV2:
    """The unified hierarchy: pyctr writes memory.max, cpu.max, cpu.weight and pids.max itself.
    Device access on v2 needs an eBPF program; pyctr instead mounts the rootfs and /dev nodev."""

    def __init__(self, container_id: str, root: Path = CGROUP_ROOT):
        self.id = container_id
        self.root = root

    @property
    def parent(self) -> Path:
        return self.root / PARENT

    def path(self, controller: str = "") -> Path:
        return self.parent / self.id

    def controllers(self) -> set[str]:
        try:
            return set(_read(self.root / "cgroup.controllers").split())
        except OSError:
            return set()

    def refuse_what_cannot_apply(self, limits: Limits) -> None:
        needs = limits.needs()
        missing = {flag: controller for controller, flag in needs.items() if controller not in self.controllers()}
        if missing:
            raise PyctrError(f"cannot apply {', '.join(missing)}: the cgroup v2 hierarchy at {self.root} has no "
                             f"{', '.join(sorted(set(missing.values())))} controller")

    def create(self, limits: Limits) -> None:
        self.refuse_what_cannot_apply(limits)
        _create_or_undo(self, lambda: self._make(limits))

    def _make(self, limits: Limits) -> None:
        if not self.parent.is_dir():
            explain.step("mkdir", "-p", self.parent)
            _mkdir_under_parent(self.parent)
        # Controllers must be enabled in every ancestor's subtree_control to reach the leaf;
        # only those the limits need, so that a host without them runs unlimited containers.
        wanted = {"memory", "cpu", "pids"} & self.controllers()
        enabled = set(_read(self.parent / "cgroup.subtree_control").split())
        if wanted - enabled:
            _write(self.root / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
            _write(self.parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        explain.step("mkdir", self.path())
        _mkdir_under_parent(self.path())
        if limits.memory:
            _write(self.path() / "memory.max", limits.memory)
            if (self.path() / "memory.swap.max").exists():
                _write(self.path() / "memory.swap.max", 0)
        if limits.nano_cpus:
            quota = limits.nano_cpus * CFS_PERIOD_US // 1_000_000_000
            _write(self.path() / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        if limits.cpu_shares:
            _write(self.path() / "cpu.weight", shares_to_weight(limits.cpu_shares))
        if limits.pids:
            _write(self.path() / "pids.max", limits.pids)

    def add(self, pid: int) -> None:
        _write(self.path() / "cgroup.procs", pid)

    def procs_file(self) -> list[Path]:
        return [self.path() / "cgroup.procs"] if self.path().is_dir() else []

    def oom_killed(self) -> bool:
        try:
            events = dict(line.split() for line in _read(self.path() / "memory.events").splitlines())
            return int(events.get("oom_kill", 0)) > 0
        except OSError:
            return False

    def usage(self) -> Usage:
        stat = dict(line.split() for line in _read(self.path() / "cpu.stat").splitlines())
        limit = _read(self.path() / "memory.max")
        return Usage(
            memory=int(_read(self.path() / "memory.current")),
            memory_limit=None if limit == "max" else int(limit),
            cpu_ns=int(stat["usage_usec"]) * 1000,
            pids=int(_read(self.path() / "pids.current")),
        )

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(self.path() / "cgroup.procs").split()]
        except OSError:
            return []

    def events(self) -> dict[str, str]:
        """cgroup.events: `populated 1` while a process is in it, `frozen 1` once frozen."""
        return dict(line.split() for line in _read(self.path() / "cgroup.events").splitlines())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Every process of the container at once: cgroup.kill (Linux 5.14+) for SIGKILL, as
        runc does; otherwise freeze, signal each, thaw, so that none forks in between."""
        if not self.path().is_dir():
            return
        try:
            if sig == signal.SIGKILL and (self.path() / "cgroup.kill").exists():
                _write(self.path() / "cgroup.kill", 1)
                return
            self.freeze()
            try:
                explain.comment(f"kill -{sig} each PID in {self.path()}/cgroup.procs")
                _signal_each(self.pids(), sig)
            finally:
                self.thaw()
        except FileNotFoundError:
            pass  # the container exited, and its cgroup went, meanwhile

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process of the container; returns once the kernel says it is frozen."""
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._set_frozen(False, timeout)

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        _write(self.path() / "cgroup.freeze", int(frozen))
        deadline = time.monotonic() + timeout
        while self.events().get("frozen") != str(int(frozen)):
            if time.monotonic() > deadline:
                raise PyctrError(f"the cgroup {self.path()} did not {'freeze' if frozen else 'thaw'} "
                                 f"within {timeout:.0f} s")
            time.sleep(0.005)

    def exists(self) -> bool:
        return self.path().is_dir()

    def remove(self) -> None:
        _rmdir_when_empty(self.path())
        _remove_parent_if_unused(self.parent)


class CgroupHybrid:
    """The hybrid layout: limits and statistics through v1, membership in the unified hierarchy
    as well (as runc does), which gives the container cgroup.kill and cgroup.freeze."""

    def __init__(self, v1: CgroupV1, unified: CgroupV2):
        self.v1 = v1
        self.unified = unified
        self.id = v1.id

    def path(self, controller: str = "") -> Path:
        """A v1 controller's folder; with no controller, the unified one."""
        return self.v1.path(controller) if controller else self.unified.path()

    def refuse_what_cannot_apply(self, limits: Limits) -> None:
        self.v1.refuse_what_cannot_apply(limits)

    def create(self, limits: Limits) -> None:
        self.v1.create(limits)
        _create_or_undo(self, lambda: self.unified.create(Limits(restrict_devices=False)))

    def add(self, pid: int) -> None:
        self.v1.add(pid)
        self.unified.add(pid)

    def procs_file(self) -> list[Path]:
        return self.v1.procs_file() + self.unified.procs_file()

    def oom_killed(self) -> bool:
        return self.v1.oom_killed()

    def usage(self) -> Usage:
        return self.v1.usage()

    def pids(self) -> list[int]:
        return self.unified.pids() or self.v1.pids()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.unified.exists():
            self.unified.kill(sig)
        else:
            self.v1.kill(sig)

    def freeze(self, timeout: float = 5.0) -> None:
        self.unified.freeze(timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self.unified.thaw(timeout)

    def exists(self) -> bool:
        return self.v1.exists() or self.unified.exists()

    def remove(self) -> None:
        self.unified.remove()
        self.v1.remove()


class NoCgroup:
    """No hierarchy is visible: nothing can start, and there is nothing to find or remove."""

    def __init__(self, container_id: str, reason: str):
        self.id = container_id
        self.reason = reason

    def refuse_what_cannot_apply(self, limits: Limits) -> None:
        flags = ", ".join(limits.needs().values())
        raise PyctrError(f"cannot apply {flags}: {self.reason}" if flags else
                         f"cannot start the container: {self.reason}")

    def create(self, limits: Limits) -> None:
        self.refuse_what_cannot_apply(limits)

    def add(self, pid: int) -> None:
        raise PyctrError(self.reason)

    def procs_file(self) -> list[Path]:
        return []

    def oom_killed(self) -> bool:
        return False

    def usage(self) -> Usage:
        raise FileNotFoundError(self.reason)

    def pids(self) -> list[int]:
        return []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pass

    def exists(self) -> bool:
        return False

    def remove(self) -> None:
        pass


Backend = CgroupV1 | CgroupV2 | CgroupHybrid | NoCgroup


# --- which layout the host has ---------------------------------------------------------------
class Layout:
    """The cgroup hierarchies this process sees, and the backend pyctr uses on them."""

    def __init__(self, mode: str | None, v1_root: Path | None = None, v1_controllers: set[str] = frozenset(),
                 unified: Path | None = None, forced: str | None = None, reason: str = ""):
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

    def backend(self, container_id: str) -> Backend:
        mode = self._mode_of_existing(container_id) or self.mode
        v1 = CgroupV1(container_id, self.v1_root, self.v1_controllers) if self.v1_root else None
        unified = CgroupV2(container_id, self.unified) if self.unified else None
        if mode == "v1" and v1:
            return v1
        if mode == "v2" and unified:
            return unified
        if mode == "hybrid" and v1 and unified:
            return CgroupHybrid(v1, unified)
        return NoCgroup(container_id, self.reason or "no cgroup hierarchy is mounted")

    def _mode_of_existing(self, container_id: str) -> str | None:
        """A container keeps the backend it was started with, whatever PYCTR_CGROUP_VERSION
        says now (its monitor, a later `rm` and `exec` must all find the same cgroups)."""
        in_v1 = bool(self.v1_root) and CgroupV1(container_id, self.v1_root, self.v1_controllers).exists()
        in_unified = bool(self.unified) and (self.unified / PARENT / container_id).is_dir()
        if in_v1 and in_unified:
            return "hybrid"
        return "v1" if in_v1 else "v2" if in_unified else None


def parse_mountinfo(text: str, visible_only: bool = False) -> tuple[dict[str, Path], list[Path]]:
    """The v1 controller hierarchies (controller -> mount point) and the cgroup2 mount points.
    A named v1 hierarchy (name=systemd) has no controller, and does not count. With
    `visible_only`, a mount that another one covers (a tmpfs over /sys/fs/cgroup) does not
    count either: mountinfo still lists it, but its path leads elsewhere."""
    v1: dict[str, Path] = {}
    unified: list[Path] = []
    for line in text.splitlines():
        fields, separator, tail = line.partition(" - ")
        parts, tail_parts = fields.split(), tail.split()
        if not separator or len(parts) < 5 or len(tail_parts) < 3 or tail_parts[0] not in ("cgroup", "cgroup2"):
            continue
        mount_point = Path(_unescape(parts[4]))
        if visible_only and not _is_visible(mount_point, parts[2]):
            continue
        if tail_parts[0] == "cgroup2":
            unified.append(mount_point)
        else:
            for option in tail_parts[2].split(","):  # rw,memory or rw,cpu,cpuacct or rw,xattr,name=systemd
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, mount_point)
    return v1, unified


def _is_visible(mount_point: Path, device: str) -> bool:
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


def detect(mountinfo: str | None = None, forced: str | None = _FROM_ENVIRONMENT) -> Layout:
    """The layout from /proc/self/mountinfo (or the given text), and PYCTR_CGROUP_VERSION
    (or `forced`: "1", "2", or None to follow the mounts)."""
    visible_only = mountinfo is None
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    if forced is _FROM_ENVIRONMENT:
        forced = os.environ.get(VERSION_VARIABLE) or None
    if forced not in (None, "1", "2"):
        raise PyctrError(f"{VERSION_VARIABLE}={forced}: must be 1 or 2 (or unset, to follow the host)")
    v1, unified_mounts = parse_mountinfo(mountinfo, visible_only)
    # The cgroup2 hierarchy at the top (pure v2) wins over one beside v1 (hybrid's unified/).
    unified = min(unified_mounts, key=lambda p: (p != CGROUP_ROOT, len(p.parts)), default=None)
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


def _common_parent(mounts: dict[str, Path]) -> Path:
    """Where the controllers' folders are: /sys/fs/cgroup, whose memory/ is the memory hierarchy."""
    path = mounts.get("memory") or next(iter(mounts.values()))
    return path.parent


def for_container(container_id: str, layout: Layout | None = None) -> Backend:
    return (layout or detect()).backend(container_id)


def _create_or_undo(group: Backend, make) -> None:
    """A cgroup half made is removed again; a kernel refusal becomes one line."""
    try:
        make()
    except BaseException as error:
        try:
            group.remove()
        except OSError:
            pass
        if isinstance(error, OSError):
            where = f": {error.filename}" if error.filename else ""
            raise PyctrError(f"cannot set up the container's cgroup: {error.strerror}{where}") from error
        raise


def _signal_each(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) to cpu.weight (1..10000, default 100), as runc maps it."""
    shares = max(2, min(shares, 262144))
    return 1 + ((shares - 2) * 9999) // 262142


def _mkdir_under_parent(path: Path) -> None:
    """mkdir -p, again if the parent went away meanwhile (its last container was removed)."""
    for _ in range(5):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    path.mkdir(parents=True, exist_ok=True)


def _remove_parent_if_unused(parent: Path) -> None:
    """The `pyctr` parent goes with its last container, so nothing of pyctr stays on the host.
    A start that races with this recreates it (mkdir -p)."""
    try:
        os.rmdir(parent)
    except OSError:
        return  # other containers still use it, or it is gone already
    explain.step("rmdir", "--ignore-fail-on-non-empty", parent)


def _rmdir_when_empty(path: Path, timeout: float = 5.0) -> None:
    """A cgroup can be removed only once the kernel has finished tearing down its tasks."""
    if not path.exists():
        return
    explain.step("rmdir", path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
