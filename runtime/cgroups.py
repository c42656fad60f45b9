"""Resource limits: one cgroup per container under a `pyctr` parent, on cgroup v1 or v2.

The host decides the backend: a pure cgroup v2 host has cgroup.controllers at the root of
/sys/fs/cgroup; anything else is treated as v1 (the hybrid layout of this VM included,
whose v2 hierarchy at /sys/fs/cgroup/unified has no controllers).
"""

import os
import time
from pathlib import Path

from pyctr.runtime import explain

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "pyctr"
CFS_PERIOD_US = 100_000

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


class Usage:
    def __init__(self, memory: int, memory_limit: int | None, cpu_ns: int, pids: int):
        self.memory = memory
        self.memory_limit = memory_limit
        self.cpu_ns = cpu_ns
        self.pids = pids


def _write(path: Path, value: object) -> None:
    explain.write(path, value)
    with open(path, "w") as f:
        f.write(str(value))


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


class CgroupV1:
    """One directory per controller hierarchy; memory, cpu and devices go through cgroupspy."""

    CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")

    def __init__(self, container_id: str, root: Path = CGROUP_ROOT):
        self.id = container_id
        self.root = root

    def path(self, controller: str) -> Path:
        return self.root / controller / PARENT / self.id

    def _node(self, controller: str):
        # Build the node chain by hand: cgroupspy's Tree() would walk every cgroup on the host.
        from cgroupspy.nodes import Node

        node = Node(str(self.root).encode())
        for part in (controller, PARENT, self.id):
            node = Node(part.encode(), parent=node)
        return node

    def create(self, limits: Limits) -> None:
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
        for controller in self._present():
            procs = self.path(controller) / "cgroup.procs"
            if procs.exists():
                _write(procs, pid)

    def procs_file(self) -> list[Path]:
        """The cgroup.procs of each controller this container has (see create)."""
        return [self.path(c) / "cgroup.procs" for c in self._present() if self.path(c).exists()]

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
        try:
            return [int(p) for p in _read(self.path("pids") / "cgroup.procs").split()]
        except OSError:
            return []

    def remove(self) -> None:
        for controller in self._present():
            _rmdir_when_empty(self.path(controller))
            _remove_parent_if_unused(self.path(controller).parent)

    def _present(self) -> list[str]:
        return [c for c in self.CONTROLLERS if (self.root / c).is_dir()]


class CgroupV2:
    """The unified hierarchy: pyctr writes memory.max, cpu.max, cpu.weight and pids.max itself."""

    def __init__(self, container_id: str, root: Path = CGROUP_ROOT):
        self.id = container_id
        self.root = root

    @property
    def parent(self) -> Path:
        return self.root / PARENT

    def path(self, controller: str = "") -> Path:
        return self.parent / self.id

    def create(self, limits: Limits) -> None:
        if not self.parent.is_dir():
            explain.step("mkdir", "-p", self.parent)
            self.parent.mkdir(exist_ok=True)
        # Controllers must be enabled in every ancestor's subtree_control to reach the leaf.
        wanted = {"memory", "cpu", "pids"} & set(_read(self.root / "cgroup.controllers").split())
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
        # Device access on v2 needs an eBPF program; pyctr instead mounts the rootfs and /dev nodev.

    def add(self, pid: int) -> None:
        _write(self.path() / "cgroup.procs", pid)

    def procs_file(self) -> list[Path]:
        return [self.path() / "cgroup.procs"]

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

    def remove(self) -> None:
        _rmdir_when_empty(self.path())
        _remove_parent_if_unused(self.parent)


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) to cpu.weight (1..10000, default 100), as runc maps it."""
    shares = max(2, min(shares, 262144))
    return 1 + ((shares - 2) * 9999) // 262142


def is_v2(root: Path = CGROUP_ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def for_container(container_id: str, root: Path = CGROUP_ROOT) -> CgroupV1 | CgroupV2:
    return CgroupV2(container_id, root) if is_v2(root) else CgroupV1(container_id, root)


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
