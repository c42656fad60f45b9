"""cgroup v2: the unified hierarchy, one folder per container.

OCI resources are converted as runc converts them (cpu.shares -> cpu.weight, memory.swap ->
memory.swap.max = swap - limit, blockIO -> io.*); what v2 has no file for is refused: swappiness,
disableOOMKiller, realtime CPU budgets, leaf weights, net_cls/net_prio, kernelTCP. v2 has no devices
controller: a device list that closes anything becomes an eBPF program on the cgroup (devices_bpf),
and where bpf(2) is refused to pyctr the list is refused rather than left unenforced. The
Docker-style front end mounts the rootfs and /dev nodev on v2 instead, and its device list is not
asked for there.
"""

import os
import time
from _signal import SIGKILL  # signal's enums would import enum and functools: ~3 ms of each delete

from pyctr.runtime import explain
from pyctr.runtime.cgroups import fs
from pyctr.runtime.cgroups.place import UNIFIED, Place
from pyctr.runtime.cgroups.resources import (DEVICE_PROGRAM, FIELD, Limits, Usage, Write, blkio_weight_to_io_weight,
                                             check_hugepages, device_lines, docker_resources, ignore_kernel_memory,
                                             max_or, rdma_lines, refuse_unknown, shares_to_weight, swap_v2)
from pyctr.runtime.cgroups.v1 import CGROUP_ROOT, _create_or_undo, _remove_parents
from pyctr.runtime.errors import PyctrError

BASE_CONTROLLERS = {"memory", "cpu", "pids"}  # enabled where available: limits, OOM, stats


class CgroupV2:
    def __init__(self, container_id: str, root: str = CGROUP_ROOT, place: Place | None = None):
        self.id = container_id
        self.root = os.fspath(root)
        self.place = place or Place.default(container_id)

    @property
    def parent(self) -> str:
        return os.path.dirname(self.path())

    def path(self, controller: str = "") -> str:
        return f"{self.root}/{self.place.inner(UNIFIED)}"

    @property
    def path_spec(self) -> dict | None:
        return self.place.spec

    def controllers(self) -> set[str]:
        try:
            return set(fs.read(f"{self.root}/cgroup.controllers").split())
        except OSError:
            return set()

    # --- checking and planning ---------------------------------------------------------------
    def refuse_what_cannot_apply(self, resources) -> None:
        if isinstance(resources, Limits):
            needs = resources.needs()
            missing = {flag: c for c, flag in needs.items() if c not in self.controllers()}
            if missing:
                raise PyctrError(f"cannot apply {', '.join(missing)}: the cgroup v2 hierarchy at {self.root} has "
                                 f"no {', '.join(sorted(set(missing.values())))} controller")
        self._plan(self._resources(resources)[0])

    @staticmethod
    def _resources(resources) -> tuple[dict, bool]:
        # Docker's device list too: on v2 it becomes an eBPF program, as runc makes it.
        return docker_resources(resources)

    def _plan(self, res: dict, updating: bool = False) -> list[Write]:
        refuse_unknown(res)
        available = self.controllers()
        leaf = self.path()
        writes: list[Write] = []

        def add(field: str, controller: str, file: str, value) -> None:
            if value is None:
                return
            if controller != "cgroup" and controller not in available:
                raise PyctrError(f"{FIELD}.{field}: the cgroup v2 hierarchy at {self.root} has no {controller} "
                                 f"controller")
            writes.append(Write(f"{FIELD}.{field}", controller, file, value))

        def refuse(field: str, value, why: str, harmless=(None,)) -> None:
            if value not in harmless:
                raise PyctrError(f"{FIELD}.{field}: {why}")

        memory = res.get("memory")
        if memory is not None:
            ignore_kernel_memory(memory)
            limit, swap = memory.get("limit"), memory.get("swap")
            if updating and checked(memory) and limit is not None and limit >= 0:
                current = fs.read_int(f"{leaf}/memory.current")
                if limit < current:
                    raise PyctrError(f"{FIELD}.memory.limit: {limit} is below the current usage {current} "
                                     f"(checkBeforeUpdate)")
            if swap is not None and limit is None and updating:
                limit = fs.read_int(f"{leaf}/memory.max", -1)
            add("memory.limit", "memory", "memory.max", None if limit is None else max_or(limit))
            swap = swap_v2(limit, swap)
            add("memory.swap", "memory", "memory.swap.max", None if swap is None else max_or(swap))
            reservation = memory.get("reservation")
            add("memory.reservation", "memory", "memory.low", None if reservation is None else max_or(reservation))
            refuse("memory.kernelTCP", memory.get("kernelTCP"), "cgroup v2 has no kernel TCP memory limit "
                   "(its memory.max counts socket buffers)", (None, -1))
            refuse("memory.swappiness", memory.get("swappiness"), "cgroup v2 has no per-cgroup swappiness")
            refuse("memory.disableOOMKiller", memory.get("disableOOMKiller"),
                   "cgroup v2 cannot disable the OOM killer", (None, False))
            refuse("memory.useHierarchy", memory.get("useHierarchy"), "cgroup v2 always accounts hierarchically",
                   (None, True))

        cpu = res.get("cpu")
        if cpu is not None:
            if cpu.get("shares"):
                add("cpu.shares", "cpu", "cpu.weight", shares_to_weight(cpu["shares"]))
            quota, period = cpu.get("quota") or None, cpu.get("period") or None
            if quota is not None or period is not None:
                current_quota, current_period = "max", ""
                if updating:
                    try:
                        current_quota, current_period = fs.read(f"{leaf}/cpu.max").split()
                    except (OSError, ValueError):
                        pass
                quota_text = current_quota if quota is None else max_or(quota)
                period_text = str(period) if period is not None else current_period
                add("cpu.quota" if quota is not None else "cpu.period", "cpu", "cpu.max",
                    f"{quota_text} {period_text}".strip())
            add("cpu.burst", "cpu", "cpu.max.burst", cpu.get("burst"))
            for key in ("realtimeRuntime", "realtimePeriod"):
                refuse(f"cpu.{key}", cpu.get(key), "cgroup v2 has no realtime CPU budgets", (None, 0))
            add("cpu.idle", "cpu", "cpu.idle", cpu.get("idle"))
            add("cpu.cpus", "cpuset", "cpuset.cpus", cpu.get("cpus") or None)
            add("cpu.mems", "cpuset", "cpuset.mems", cpu.get("mems") or None)

        pids = res.get("pids")
        if pids is not None and pids.get("limit"):
            add("pids.limit", "pids", "pids.max", max_or(pids["limit"]))

        devices = res.get("devices")
        if devices:  # as on v1, an empty list changes nothing
            from pyctr.runtime.cgroups import devices_bpf  # ctypes: only what sets devices pays for it

            program = devices_bpf.compile_rules(devices)
            if program is not None and devices_bpf.unavailable():
                raise PyctrError(f"{FIELD}.devices: a device list that denies access needs an eBPF device program "
                                 f"on cgroup v2, and {devices_bpf.unavailable()}; refused rather than left "
                                 f"unenforced")
            if program is not None or updating:  # updating to an open list takes the old program off
                writes.append(Write(f"{FIELD}.devices", "cgroup", DEVICE_PROGRAM, program))

        blkio = res.get("blockIO")
        if blkio is not None:
            self._plan_io(blkio, add, refuse)

        hugepages = res.get("hugepageLimits")
        if hugepages:
            check_hugepages(hugepages)
            for index, entry in enumerate(hugepages):
                add(f"hugepageLimits[{index}]", "hugetlb", f"hugetlb.{entry['pageSize']}.max", entry["limit"])

        network = res.get("network")
        if network is not None and (network.get("classID") is not None or network.get("priorities")):
            raise PyctrError(f"{FIELD}.network: cgroup v2 has no net_cls or net_prio controller")

        rdma = res.get("rdma")
        if rdma:
            for line in rdma_lines(rdma):
                add("rdma", "rdma", "rdma.max", line)

        for key, value in (res.get("unified") or {}).items():
            if "/" in key or key.startswith(".") or "." not in key:
                raise PyctrError(f"{FIELD}.unified.{key}: not a cgroup v2 file name")
            add(f"unified.{key}", key.split(".")[0], key, value)
        return writes

    def _plan_io(self, blkio: dict, add, refuse) -> None:
        # io.bfq.weight takes blkio's 10..1000 as is; io.weight (iocost) has its own scale.
        bfq = os.path.exists(f"{self.parent}/io.bfq.weight") or os.path.exists(f"{self.root}/io.bfq.weight")
        weight_file, convert = ("io.bfq.weight", int) if bfq else ("io.weight", blkio_weight_to_io_weight)
        if blkio.get("weight") is not None:
            add("blockIO.weight", "io", weight_file, convert(blkio["weight"]))
        refuse("blockIO.leafWeight", blkio.get("leafWeight"), "cgroup v2 has no leaf weights (CFQ only)")
        entries = blkio.get("weightDevice") or []
        for entry in entries:
            refuse("blockIO.weightDevice", entry.get("leafWeight"), "cgroup v2 has no leaf weights (CFQ only)")
        for line in device_lines(entries, f"{FIELD}.blockIO.weightDevice", "weight", convert):
            add("blockIO.weightDevice", "io", weight_file, line)
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
            for line in device_lines(blkio.get(key) or [], f"{FIELD}.blockIO.{key}", "rate",
                                     lambda rate, name=name: f"{name}={rate}"):
                add(f"blockIO.{key}", "io", "io.max", line)

    # --- making, changing ---------------------------------------------------------------------
    def create(self, resources=None) -> None:
        res, docker = self._resources(resources)
        self.refuse_what_cannot_apply(resources)
        _create_or_undo(self, lambda: self._make(res, docker))

    def _make(self, res: dict, docker: bool) -> None:
        writes = self._plan(res)
        leaf = self.path()
        explain.step("mkdir", "-p", leaf)
        self.place.made[UNIFIED] = max(0, fs.mkdir_counting(leaf) - 1)
        self._enable({w.controller for w in writes})
        if docker and "memory" in res and not os.path.exists(f"{leaf}/memory.swap.max"):
            writes = [w for w in writes if w.file != "memory.swap.max"]  # as Docker: no swap accounting
        self._apply(writes)

    def _enable(self, needed: set[str]) -> None:
        """Controllers reach the leaf through every ancestor's cgroup.subtree_control."""
        wanted = sorted(((BASE_CONTROLLERS | needed) - {"cgroup"}) & self.controllers())
        parts = self.place.inner(UNIFIED).split("/")
        for depth in range(len(parts)):  # the root, then each ancestor down to the leaf's parent
            self._enable_in("/".join([self.root, *parts[:depth]]), wanted)

    def _enable_in(self, folder: str, wanted: list[str]) -> None:
        try:
            enabled = set(fs.read(f"{folder}/cgroup.subtree_control").split())
        except OSError:
            enabled = set()
        missing = [c for c in wanted if c not in enabled]
        if missing:
            fs.write_field("linux.cgroupsPath", f"{folder}/cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def _apply(self, writes: list[Write]) -> None:
        leaf = self.path()
        for w in writes:
            if w.file == DEVICE_PROGRAM:
                from pyctr.runtime.cgroups import devices_bpf

                devices_bpf.install(leaf, w.value)
                continue
            try:
                fs.write_field(w.field, f"{leaf}/{w.file}", w.value)
            except PyctrError:
                if os.path.exists(f"{leaf}/{w.file}"):
                    raise
                raise PyctrError(f"{w.field}: the container's cgroup has no {w.file} (this kernel lacks it, or "
                                 f"the {w.controller} controller could not be enabled)") from None

    def update(self, resources: dict) -> None:
        """runc update: only the fields given change."""
        res, _ = self._resources(resources)
        writes = self._plan(res, updating=True)
        self._enable({w.controller for w in writes})
        self._apply(writes)

    def add(self, pid: int) -> None:
        fs.write(f"{self.path()}/cgroup.procs", pid)

    def procs_file(self) -> list[str]:
        return [f"{self.path()}/cgroup.procs"] if os.path.isdir(self.path()) else []

    # --- reading ------------------------------------------------------------------------------
    def oom_killed(self) -> bool:
        return fs.read_keyed(f"{self.path()}/memory.events").get("oom_kill", 0) > 0

    def usage(self) -> Usage:
        stat = fs.read_keyed(f"{self.path()}/cpu.stat")
        limit = fs.read(f"{self.path()}/memory.max")
        return Usage(
            memory=int(fs.read(f"{self.path()}/memory.current")),
            memory_limit=None if limit == "max" else int(limit),
            cpu_ns=stat["usage_usec"] * 1000,
            pids=int(fs.read(f"{self.path()}/pids.current")),
        )

    def stats(self) -> dict:
        """runc's `events --stats` "data": cpu, memory, pids, blkio (from io.stat)."""
        leaf = self.path()
        cpu = fs.read_keyed(f"{leaf}/cpu.stat")
        raw = fs.read_keyed(f"{leaf}/memory.stat")
        events = fs.read_keyed(f"{leaf}/memory.events")
        usage, limit = fs.read_int(f"{leaf}/memory.current"), fs.read_int(f"{leaf}/memory.max")
        swap, swap_limit = fs.read_int(f"{leaf}/memory.swap.current"), fs.read_int(f"{leaf}/memory.swap.max")
        io_bytes, io_ops = [], []
        try:
            lines = fs.read(f"{leaf}/io.stat").splitlines()
        except OSError:
            lines = []
        for line in lines:
            device, *pairs = line.split()
            major, minor = (int(n) for n in device.split(":"))
            values = dict(pair.split("=") for pair in pairs)
            for target, prefix in ((io_bytes, "bytes"), (io_ops, "ios")):
                for op, key in (("Read", f"r{prefix}"), ("Write", f"w{prefix}")):
                    target.append({"major": major, "minor": minor, "op": op, "value": int(values.get(key, 0))})
        return {
            "cpu": {"usage": {"total": cpu.get("usage_usec", 0) * 1000, "user": cpu.get("user_usec", 0) * 1000,
                              "kernel": cpu.get("system_usec", 0) * 1000},
                    "throttling": {"periods": cpu.get("nr_periods", 0), "throttledPeriods": cpu.get("nr_throttled", 0),
                                   "throttledTime": cpu.get("throttled_usec", 0) * 1000}},
            "memory": {"usage": {"usage": usage, "limit": limit, "max": fs.read_int(f"{leaf}/memory.peak"),
                                 "failcnt": events.get("max", 0)},
                       # runc's v1 shape: swap counts memory+swap
                       "swap": {"usage": usage + swap, "limit": limit + swap_limit if limit and swap_limit else 0,
                                "failcnt": 0},
                       "cache": raw.get("file", 0), "raw": raw},
            "pids": {"current": fs.read_int(f"{leaf}/pids.current"), "limit": fs.read_int(f"{leaf}/pids.max")},
            "blkio": {"ioServiceBytesRecursive": io_bytes, "ioServicedRecursive": io_ops},
        }

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in fs.read(f"{self.path()}/cgroup.procs").split()]
        except OSError:
            return []

    def events(self) -> dict[str, str]:
        """cgroup.events: `populated 1` while a process is in it, `frozen 1` once frozen."""
        return dict(line.split() for line in fs.read(f"{self.path()}/cgroup.events").splitlines())

    def kill(self, sig: int = SIGKILL) -> None:
        """Every process of the container at once: cgroup.kill (Linux 5.14+) for SIGKILL, as
        runc does; otherwise freeze, signal each, thaw, so that none forks in between."""
        if not os.path.isdir(self.path()):
            return
        try:
            if sig == SIGKILL and os.path.exists(f"{self.path()}/cgroup.kill"):
                fs.write(f"{self.path()}/cgroup.kill", 1)
                return
            self.freeze()
            try:
                explain.comment(f"kill -{sig} each PID in {self.path()}/cgroup.procs")
                fs.signal_each(self.pids(), sig)
            finally:
                self.thaw()
        except FileNotFoundError:
            pass  # the container exited, and its cgroup went, meanwhile

    @property
    def state(self) -> str:
        """"frozen", "freezing" or "thawed"."""
        try:
            asked = fs.read(f"{self.path()}/cgroup.freeze") == "1"
            frozen = self.events().get("frozen") == "1"
        except OSError:
            return "thawed"
        return "frozen" if frozen else "freezing" if asked else "thawed"

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process of the container; returns once the kernel says it is frozen."""
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._set_frozen(False, timeout)

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        fs.write(f"{self.path()}/cgroup.freeze", int(frozen))
        deadline = time.monotonic() + timeout
        while self.events().get("frozen") != str(int(frozen)):
            if time.monotonic() > deadline:
                raise PyctrError(f"the cgroup {self.path()} did not {'freeze' if frozen else 'thaw'} "
                                 f"within {timeout:.0f} s")
            time.sleep(0.005)

    def exists(self) -> bool:
        return os.path.isdir(self.path())

    def remove(self) -> None:
        fs.rmdir_when_empty(self.path())
        _remove_parents(self.place, UNIFIED, self.path())


def checked(memory: dict) -> bool:
    return bool(memory.get("checkBeforeUpdate"))
