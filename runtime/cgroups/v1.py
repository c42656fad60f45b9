"""cgroup v1: one hierarchy per controller (/sys/fs/cgroup/memory, ...), a folder in each.

OCI resources map to v1 files as runc writes them; a field whose controller or file this host
lacks is refused before anything is made. The Docker-style front end (Limits) joins only the
controllers it uses (each costs an RCU grace period when PID 1 joins); OCI resources join every
mounted controller, as runc does, so that `update` can set any of them later.
"""

import os
import time
from _signal import SIGKILL  # signal's enums would import enum and functools: ~3 ms of each delete

from pyctr.runtime import explain
from pyctr.runtime.cgroups import fs
from pyctr.runtime.cgroups.place import Place
from pyctr.runtime.cgroups.resources import (FIELD, Limits, Usage, Write, check_hugepages, device_lines,
                                             device_rule_text, docker_resources, ignore_kernel_memory,
                                             rdma_lines, refuse_unknown)
from pyctr.runtime.errors import PyctrError

CGROUP_ROOT = "/sys/fs/cgroup"  # paths are str here: fs.py says why
UNLIMITED = 1 << 62  # v1 shows "no limit" as 9223372036854771712
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NOT_AT_ROOT = {"pids.max", "rdma.max"}  # files only below a hierarchy's root: not checked there


class CgroupV1:
    CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")  # the Docker-style front end's
    ALL = CONTROLLERS + ("cpuset", "freezer", "blkio", "hugetlb", "net_cls", "net_prio", "perf_event", "rdma",
                         "misc")

    def __init__(self, container_id: str, root: str = CGROUP_ROOT, mounted: set[str] | None = None,
                 place: Place | None = None):
        self.id = container_id
        self.root = os.fspath(root)
        self.mounted = mounted  # the controllers mountinfo lists (None: trust the folders)
        self.place = place or Place.default(container_id)

    def path(self, controller: str) -> str:
        return f"{self.root}/{controller}/{self.place.inner(controller)}"

    @property
    def path_spec(self) -> dict | None:
        return self.place.spec

    def _present(self) -> list[str]:
        return [c for c in self.ALL
                if (self.mounted is None or c in self.mounted) and os.path.isdir(f"{self.root}/{c}")]

    def _has(self, controller: str, file: str) -> bool:
        """The hierarchy's root has the file: the kernel offers it (every cgroup of it has it)."""
        return os.path.exists(f"{self.root}/{controller}/{file}")

    # --- checking and planning ---------------------------------------------------------------
    def refuse_what_cannot_apply(self, resources) -> None:
        if isinstance(resources, Limits):
            self._refuse_docker(resources)
        self._plan(docker_resources(resources)[0])

    def _refuse_docker(self, limits: Limits) -> None:
        """The front end's wording: the flags (--memory ...) that the host cannot apply."""
        present = self._present()
        if not present:
            raise PyctrError(f"cannot start the container: no cgroup v1 controller is mounted under {self.root}")
        missing = {flag: controller for controller, flag in limits.needs().items() if controller not in present}
        if limits.restrict_devices and "devices" not in present:
            missing["the device cgroup (all but --privileged containers)"] = "devices"
        if missing:
            raise PyctrError(f"cannot apply {', '.join(missing)}: no {', '.join(sorted(set(missing.values())))} "
                             f"cgroup controller is mounted under {self.root}")

    def _plan(self, res: dict, updating: bool = False) -> list[Write]:
        """The files to write for `res`, in order; raises on the first field the host cannot honour."""
        refuse_unknown(res)
        present = set(self._present())
        if not present:
            raise PyctrError(f"{FIELD}: no cgroup v1 controller is mounted under {self.root}")
        writes: list[Write] = []

        def need(controller: str, field: str, file: str | None = None, why: str = "") -> None:
            if controller not in present:
                raise PyctrError(f"{field}: the {controller} controller is not mounted (cgroup v1, under {self.root})")
            if file and not self._has(controller, file):
                raise PyctrError(f"{field}: this kernel has no {controller}/{file}{why}")

        def add(field: str, controller: str, file: str, value) -> None:
            if value is not None:
                need(controller, f"{FIELD}.{field}", None if file in _NOT_AT_ROOT else file)
                writes.append(Write(f"{FIELD}.{field}", controller, file, value))

        memory = res.get("memory")
        if memory is not None:
            need("memory", f"{FIELD}.memory")
            ignore_kernel_memory(memory)
            limit, swap = memory.get("limit"), memory.get("swap")
            if swap is not None:
                need("memory", f"{FIELD}.memory.swap", "memory.memsw.limit_in_bytes",
                     " (swap accounting is off: boot with swapaccount=1)")
            # memsw must stay >= the limit at every step: raise it first when it grows.
            current = fs.read_int(f"{self.path('memory')}/memory.limit_in_bytes", UNLIMITED) if updating else UNLIMITED
            swap_first = limit is not None and swap is not None and (swap == -1 or current < swap)
            if swap_first:
                add("memory.swap", "memory", "memory.memsw.limit_in_bytes", swap)
            add("memory.limit", "memory", "memory.limit_in_bytes", limit)
            if not swap_first:
                add("memory.swap", "memory", "memory.memsw.limit_in_bytes", swap)
            add("memory.reservation", "memory", "memory.soft_limit_in_bytes", memory.get("reservation"))
            add("memory.kernelTCP", "memory", "memory.kmem.tcp.limit_in_bytes", memory.get("kernelTCP"))
            swappiness = memory.get("swappiness")
            if swappiness is not None and not 0 <= swappiness <= 100:
                raise PyctrError(f"{FIELD}.memory.swappiness: {swappiness} is not within 0..100")
            add("memory.swappiness", "memory", "memory.swappiness", swappiness)
            for key, file in (("disableOOMKiller", "memory.oom_control"), ("useHierarchy", "memory.use_hierarchy")):
                if memory.get(key) is not None:
                    add(f"memory.{key}", "memory", file, int(bool(memory[key])))

        cpu = res.get("cpu")
        if cpu is not None:
            add("cpu.shares", "cpu", "cpu.shares", cpu.get("shares") or None)
            add("cpu.period", "cpu", "cpu.cfs_period_us", cpu.get("period") or None)
            add("cpu.quota", "cpu", "cpu.cfs_quota_us", cpu.get("quota") or None)
            add("cpu.burst", "cpu", "cpu.cfs_burst_us", cpu.get("burst"))
            for key, file in (("realtimePeriod", "cpu.rt_period_us"), ("realtimeRuntime", "cpu.rt_runtime_us")):
                if cpu.get(key):
                    need("cpu", f"{FIELD}.cpu.{key}", file, " (the kernel has no CONFIG_RT_GROUP_SCHED)")
                    add(f"cpu.{key}", "cpu", file, cpu[key])
            add("cpu.idle", "cpu", "cpu.idle", cpu.get("idle"))
            add("cpu.cpus", "cpuset", "cpuset.cpus", cpu.get("cpus") or None)
            add("cpu.mems", "cpuset", "cpuset.mems", cpu.get("mems") or None)

        pids = res.get("pids")
        if pids is not None and pids.get("limit"):
            add("pids.limit", "pids", "pids.max", "max" if pids["limit"] < 0 else pids["limit"])

        devices = res.get("devices")
        if devices is not None:
            need("devices", f"{FIELD}.devices")
            for index, rule in enumerate(devices):  # in the listed order, as the spec says
                allow, text = device_rule_text(index, rule)
                writes.append(Write(f"{FIELD}.devices[{index}]", "devices",
                                    "devices.allow" if allow else "devices.deny", text))

        blkio = res.get("blockIO")
        if blkio is not None:
            self._plan_blkio(blkio, need, add)

        hugepages = res.get("hugepageLimits")
        if hugepages:
            need("hugetlb", f"{FIELD}.hugepageLimits")
            check_hugepages(hugepages)
            for index, entry in enumerate(hugepages):
                size = entry["pageSize"]
                add(f"hugepageLimits[{index}]", "hugetlb", f"hugetlb.{size}.limit_in_bytes", entry["limit"])
                if self._has("hugetlb", f"hugetlb.{size}.rsvd.limit_in_bytes"):  # reservations, when the kernel has them
                    add(f"hugepageLimits[{index}]", "hugetlb", f"hugetlb.{size}.rsvd.limit_in_bytes", entry["limit"])

        network = res.get("network")
        if network is not None:
            add("network.classID", "net_cls", "net_cls.classid", network.get("classID"))
            for index, entry in enumerate(network.get("priorities") or []):
                add(f"network.priorities[{index}]", "net_prio", "net_prio.ifpriomap",
                    f"{entry['name']} {entry['priority']}")

        rdma = res.get("rdma")
        if rdma:
            for line in rdma_lines(rdma):
                add("rdma", "rdma", "rdma.max", line)

        if res.get("unified"):
            raise PyctrError(f"{FIELD}.unified: sets cgroup v2 files, and this host's controllers are cgroup v1")
        return writes

    def _plan_blkio(self, blkio: dict, need, add) -> None:
        field = f"{FIELD}.blockIO"
        need("blkio", field)
        # CFQ's blkio.weight went with CFQ (Linux 5.0); BFQ offers blkio.bfq.weight instead.
        weight_file = next((f for f in ("blkio.weight", "blkio.bfq.weight") if self._has("blkio", f)), None)
        no_weights = " (no proportional I/O weights: CFQ is gone, and BFQ is not the I/O scheduler here)"
        if blkio.get("weight") is not None or any(e.get("weight") is not None for e in blkio.get("weightDevice") or []):
            if weight_file is None:
                raise PyctrError(f"{field}.weight: this kernel has no blkio.weight{no_weights}")
        add("blockIO.weight", "blkio", weight_file, blkio.get("weight"))
        add("blockIO.leafWeight", "blkio", "blkio.leaf_weight", blkio.get("leafWeight"))
        entries = blkio.get("weightDevice") or []
        for line in device_lines(entries, f"{field}.weightDevice", "weight"):
            add("blockIO.weightDevice", "blkio", f"{weight_file}_device", line)
        for line in device_lines(entries, f"{field}.weightDevice", "leafWeight"):
            add("blockIO.weightDevice", "blkio", "blkio.leaf_weight_device", line)
        for key, file in (("throttleReadBpsDevice", "read_bps_device"), ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for line in device_lines(blkio.get(key) or [], f"{field}.{key}", "rate"):
                add(f"blockIO.{key}", "blkio", f"blkio.throttle.{file}", line)

    # --- making, changing ---------------------------------------------------------------------
    def create(self, resources=None) -> None:
        res, docker = docker_resources(resources)
        self.refuse_what_cannot_apply(resources)
        if docker and "memory" in res and not self._has("memory", "memory.memsw.limit_in_bytes"):
            res["memory"].pop("swap", None)  # as Docker: no swap accounting, no swap limit
        _create_or_undo(self, lambda: self._make(res, docker))

    def _make(self, res: dict, docker: bool) -> None:
        writes = self._plan(res)
        present = self._present()
        if docker:
            wanted = {"memory", "cpuacct", "pids"} | {w.controller for w in writes}
            present = [c for c in present if c in wanted]
        for controller in present:
            path = self.path(controller)
            explain.step("mkdir", "-p", path)
            made = fs.mkdir_counting(path)
            self.place.made[controller] = max(self.place.made.get(controller, 0), made - 1)
            if controller == "cpuset":
                _fill_cpuset(path, made)
        self._apply(writes)

    def _apply(self, writes: list[Write]) -> None:
        for w in writes:
            fs.write_field(w.field, f"{self.path(w.controller)}/{w.file}", w.value)

    def update(self, resources: dict) -> None:
        """runc update: only the fields given change."""
        res, _ = docker_resources(resources)
        writes = self._plan(res, updating=True)
        for w in writes:
            if not os.path.isdir(self.path(w.controller)):
                raise PyctrError(f"{w.field}: the container's cgroup has no {w.controller} folder "
                                 f"(it was made without that controller)")
        self._apply(writes)

    def add(self, pid: int) -> None:
        for procs in self.procs_file():
            fs.write(procs, pid)

    def procs_file(self) -> list[str]:
        """The cgroup.procs of each hierarchy this container has (see create); co-mounted
        controllers (cpu,cpuacct) share one."""
        files, seen = [], set()
        for controller in self._present():
            procs = f"{self.path(controller)}/cgroup.procs"
            try:
                found = os.stat(procs)
            except FileNotFoundError:
                continue
            if (found.st_dev, found.st_ino) not in seen:  # one file, whichever name leads to it
                seen.add((found.st_dev, found.st_ino))
                files.append(procs)
        return files

    # --- freezing -----------------------------------------------------------------------------
    def _freezer(self) -> str:
        path = f"{self.path('freezer')}/freezer.state"
        if not os.path.exists(path):
            raise PyctrError(f"cannot freeze the container: its cgroup has no freezer "
                             f"({os.path.dirname(path)} is missing)")
        return path

    @property
    def state(self) -> str:
        """"frozen", "freezing" or "thawed"."""
        try:
            return fs.read(self._freezer()).lower()
        except (OSError, PyctrError):
            return "thawed"

    def freeze(self, timeout: float = 5.0) -> None:
        self._set_frozen("FROZEN", timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._set_frozen("THAWED", timeout)

    def _set_frozen(self, wanted: str, timeout: float) -> None:
        path = self._freezer()
        deadline = time.monotonic() + timeout
        while True:
            fs.write(path, wanted)  # again while FREEZING: a task that forked may need another pass
            if fs.read(path) == wanted:
                return
            if time.monotonic() > deadline:
                fs.write(path, "THAWED")
                raise PyctrError(f"the cgroup {os.path.dirname(path)} did not become {wanted.lower()} "
                                 f"within {timeout:.0f} s")
            time.sleep(0.01)

    # --- reading ------------------------------------------------------------------------------
    def oom_killed(self) -> bool:
        return fs.read_keyed(f"{self.path('memory')}/memory.oom_control").get("oom_kill", 0) > 0

    def usage(self) -> Usage:
        mem = self.path("memory")
        limit = int(fs.read(f"{mem}/memory.limit_in_bytes"))
        return Usage(
            memory=int(fs.read(f"{mem}/memory.usage_in_bytes")),
            memory_limit=None if limit >= UNLIMITED else limit,
            cpu_ns=int(fs.read(f"{self.path('cpuacct')}/cpuacct.usage")),
            pids=int(fs.read(f"{self.path('pids')}/pids.current")),
        )

    def stats(self) -> dict:
        """runc's `events --stats` "data": cpu, memory, pids, blkio."""
        cpuacct, mem, cpu = self.path("cpuacct"), self.path("memory"), self.path("cpu")
        ticks = fs.read_keyed(f"{cpuacct}/cpuacct.stat")
        throttling = fs.read_keyed(f"{cpu}/cpu.stat")
        try:
            percpu = [int(n) for n in fs.read(f"{cpuacct}/cpuacct.usage_percpu").split()]
        except OSError:
            percpu = []

        def entry(prefix: str) -> dict:
            limit = fs.read_int(f"{mem}/{prefix}.limit_in_bytes")
            return {"limit": limit, "usage": fs.read_int(f"{mem}/{prefix}.usage_in_bytes"),
                    "max": fs.read_int(f"{mem}/{prefix}.max_usage_in_bytes"),
                    "failcnt": fs.read_int(f"{mem}/{prefix}.failcnt")}

        raw = fs.read_keyed(f"{mem}/memory.stat")
        pids_limit = fs.read_int(f"{self.path('pids')}/pids.max")
        return {
            "cpu": {"usage": {"total": fs.read_int(f"{cpuacct}/cpuacct.usage"), "percpu": percpu,
                              "user": ticks.get("user", 0) * 1_000_000_000 // CLOCK_TICKS,
                              "kernel": ticks.get("system", 0) * 1_000_000_000 // CLOCK_TICKS},
                    "throttling": {"periods": throttling.get("nr_periods", 0),
                                   "throttledPeriods": throttling.get("nr_throttled", 0),
                                   "throttledTime": throttling.get("throttled_time", 0)}},
            "memory": {"usage": entry("memory"), "swap": entry("memory.memsw"), "kernel": entry("memory.kmem"),
                       "kernelTCP": entry("memory.kmem.tcp"), "cache": raw.get("cache", 0), "raw": raw},
            "pids": {"current": fs.read_int(f"{self.path('pids')}/pids.current"), "limit": pids_limit},
            "blkio": {"ioServiceBytesRecursive": _blkio(f"{self.path('blkio')}/blkio.throttle.io_service_bytes_recursive"),
                      "ioServicedRecursive": _blkio(f"{self.path('blkio')}/blkio.throttle.io_serviced_recursive")},
        }

    def pids(self) -> list[int]:
        for procs in self.procs_file():
            try:
                return [int(p) for p in fs.read(procs).split()]
            except OSError:
                pass
        return []

    def kill(self, sig: int = SIGKILL) -> None:
        """Signal every process of the container (v1 has no cgroup.kill)."""
        explain.comment(f"kill -{sig} each PID in {self.path('pids')}/cgroup.procs")
        fs.signal_each(self.pids(), sig)

    def exists(self) -> bool:
        return any(os.path.isdir(self.path(c)) for c in self._present())

    def remove(self) -> None:
        for controller in self._present():
            leaf = self.path(controller)
            fs.rmdir_when_empty(leaf)
            _remove_parents(self.place, controller, leaf)


def _fill_cpuset(leaf: str, made: int) -> None:
    """A new cpuset cgroup has no CPUs and no memory nodes, and no process can join it: each
    folder made gets its parent's (top down), as runc does."""
    for path in reversed([leaf, *fs.parents(leaf)][:made]):
        for file in ("cpuset.cpus", "cpuset.mems"):
            if not fs.read(f"{path}/{file}"):
                fs.write(f"{path}/{file}", fs.read(f"{os.path.dirname(path)}/{file}"))


def _blkio(path: str) -> list[dict]:
    entries = []
    try:
        lines = fs.read(path).splitlines()
    except OSError:
        return entries
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return entries


def _remove_parents(place: Place, key: str, leaf: str) -> None:
    """pyctr's own `pyctr` parent goes with its last container; under a cgroupsPath, only the
    parents pyctr made (while empty)."""
    if place.is_default:
        fs.rmdir_if_unused(os.path.dirname(leaf))
        return
    for parent in fs.parents(leaf)[:place.made.get(key, 0)]:
        if not fs.rmdir_if_unused(parent):
            return


def _create_or_undo(group, make) -> None:
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
