"""The OCI `linux.resources` object (runtime-spec 1.0-1.1) and what the backends share about it:
the Docker-style front end's conversion to it, unit conversions, device rules, page sizes.

A backend turns resources into `Write`s (field, controller, file, value) in the order the kernel
needs; a field it cannot honour raises PyctrError "linux.resources.FIELD: why" before anything
is made. `memory.kernel` is the one field ignored (with one warning): the spec deprecates it, as
"it may be ignored by runtimes", and kernels since 5.16 accept the write and limit nothing.
"""

import os

from pyctr.runtime import log
from pyctr.runtime.errors import PyctrError

CFS_PERIOD_US = 100_000
FIELD = "linux.resources"
DEVICE_PROGRAM = "BPF_CGROUP_DEVICE"  # the Write.file that stands for v2's eBPF device program

# Docker's default device allow-list: the nodes pyctr puts in /dev, plus mknod of any.
DOCKER_DEVICE_RULES = (
    ("c", None, None, "m"), ("b", None, None, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"), ("c", 136, None, "rwm"),
)


class Write:
    """One value for one cgroup file. A plain class: `dataclasses` would cost every command
    about 10 ms of imports (inspect, ast, dis)."""

    __slots__ = ("field", "controller", "file", "value")

    def __init__(self, field: str, controller: str, file: str, value: object):
        self.field = field  # the OCI field that asked for it, for the error line
        self.controller = controller  # v1: the hierarchy's folder; v2: the controller to enable ("cgroup": none)
        self.file = file
        self.value = value


class Limits:
    """The Docker-style front end's limits; backends take them as `resources_from_docker` makes
    them, and name the flag (--memory ...) when the host cannot apply one."""

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

    def resources(self) -> dict:
        return resources_from_docker(self.memory, self.nano_cpus, self.cpu_shares, self.pids, self.restrict_devices)


class Usage:
    def __init__(self, memory: int, memory_limit: int | None, cpu_ns: int, pids: int):
        self.memory = memory
        self.memory_limit = memory_limit
        self.cpu_ns = cpu_ns
        self.pids = pids


def resources_from_docker(memory: int | None = None, nano_cpus: int | None = None, cpu_shares: int | None = None,
                          pids: int | None = None, restrict_devices: bool = True) -> dict:
    """Docker's flags as OCI `linux.resources`: --memory also caps swap (memory+swap = memory),
    --cpus is a CFS quota over a 100 ms period, and all but --privileged containers get
    Docker's device list (deny all, then allow the default nodes)."""
    resources: dict = {}
    if memory:
        resources["memory"] = {"limit": memory, "swap": memory}
    cpu = {}
    if nano_cpus:
        cpu.update(quota=nano_cpus * CFS_PERIOD_US // 1_000_000_000, period=CFS_PERIOD_US)
    if cpu_shares:
        cpu["shares"] = cpu_shares
    if cpu:
        resources["cpu"] = cpu
    if pids:
        resources["pids"] = {"limit": pids}
    if restrict_devices:
        rules = [{"allow": False, "access": "rwm"}]
        for kind, major, minor, access in DOCKER_DEVICE_RULES:
            rule = {"allow": True, "type": kind, "access": access}
            rule.update({k: v for k, v in (("major", major), ("minor", minor)) if v is not None})
            rules.append(rule)
        resources["devices"] = rules
    else:
        resources["devices"] = [{"allow": True, "access": "rwm"}]
    return resources


def docker_resources(resources) -> tuple[dict, bool]:
    """(resources dict, whether it came from the Docker-style front end's Limits)."""
    if isinstance(resources, Limits):
        return resources.resources(), True
    if resources is None:
        return {}, False
    if not isinstance(resources, dict):
        raise PyctrError(f"{FIELD}: must be an object")
    return resources, False


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144, default 1024) to cpu.weight (1..10000, default 100), as runc maps it."""
    shares = max(2, min(shares, 262144))
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), as runc maps it."""
    return 1 + (weight - 10) * 9999 // 990


def swap_v2(limit: int | None, swap: int | None) -> int | None:
    """memory.swap (memory+swap, v1's memsw) as v2's memory.swap.max (swap alone); -1: no limit."""
    if swap is None:
        return None
    if swap == -1:
        return -1
    if limit is None or limit == -1:
        raise PyctrError(f"{FIELD}.memory.swap: a memory+swap limit needs memory.limit on cgroup v2")
    if swap < limit:
        raise PyctrError(f"{FIELD}.memory.swap: {swap} is below memory.limit {limit} (swap counts memory+swap)")
    return swap - limit


def max_or(value: int) -> str:
    """A limit for v2, where -1 (the spec's "unlimited") is written "max"."""
    return "max" if value < 0 else str(value)


_kernel_warned = False


def ignore_kernel_memory(memory: dict) -> None:
    """memory.kernel: deprecated by the spec (runtimes may ignore it), no longer limits anything
    since Linux 5.16; ignored, with one warning when it asks for a limit."""
    global _kernel_warned
    if memory.get("kernel") not in (None, -1) and not _kernel_warned:
        _kernel_warned = True
        log.warning(f"{FIELD}.memory.kernel: ignored (deprecated by the runtime-spec; "
                    "kernel memory limits no longer exist in Linux 5.16 and cgroup v2)")


def device_rule_text(index: int, rule: dict) -> tuple[bool, str]:
    """One `linux.resources.devices` entry as (allow, "TYPE MAJOR:MINOR ACCESS") for v1's
    devices.allow / devices.deny; unset type, major, minor mean all ("a", "*")."""
    field = f"{FIELD}.devices[{index}]"
    if not isinstance(rule, dict) or not isinstance(rule.get("allow"), bool):
        raise PyctrError(f"{field}.allow: required, true or false")
    kind = rule.get("type") or "a"
    access = rule.get("access") or "rwm"
    if kind not in ("a", "b", "c"):
        raise PyctrError(f"{field}.type: {kind!r} is none of a, b, c")
    if not set(access) <= set("rwm"):
        raise PyctrError(f"{field}.access: {access!r} is not made of r, w, m")
    numbers = []
    for name in ("major", "minor"):
        value = rule.get(name)
        if value is not None and (not isinstance(value, int) or value < -1):
            raise PyctrError(f"{field}.{name}: {value!r} is not a device number")
        numbers.append("*" if value is None or value == -1 else str(value))
    if kind == "a":
        return rule["allow"], "a"
    return rule["allow"], f"{kind} {numbers[0]}:{numbers[1]} {access}"


def hugepage_sizes() -> set[str]:
    """The page sizes this kernel has, as the spec and the hugetlb files name them (2MB, 1GB)."""
    sizes = set()
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return sizes
    for name in names:  # hugepages-2048kB
        kib = int(name.removeprefix("hugepages-").removesuffix("kB"))
        size, unit = kib, "KB"
        for bigger in ("MB", "GB", "TB"):
            if size % 1024:
                break
            size, unit = size // 1024, bigger
        sizes.add(f"{size}{unit}")
    return sizes


def check_hugepages(limits: list) -> None:
    sizes = hugepage_sizes()
    for index, entry in enumerate(limits):
        size = entry.get("pageSize") if isinstance(entry, dict) else None
        if size not in sizes:
            raise PyctrError(f"{FIELD}.hugepageLimits[{index}].pageSize: {size!r} is not a huge page size of "
                             f"this kernel ({', '.join(sorted(sizes)) or 'none'})")
        if not isinstance(entry.get("limit"), int):
            raise PyctrError(f"{FIELD}.hugepageLimits[{index}].limit: required, a number of bytes")


def device_lines(entries: list, field: str, value_key: str, format_value=str) -> list[str]:
    """weightDevice / throttle* entries as "MAJOR:MINOR VALUE" lines."""
    lines = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("major"), int) \
                or not isinstance(entry.get("minor"), int):
            raise PyctrError(f"{field}[{index}]: major and minor are required numbers")
        if entry.get(value_key) is not None:
            lines.append(f"{entry['major']}:{entry['minor']} {format_value(entry[value_key])}")
    return lines


def rdma_lines(rdma: dict) -> list[str]:
    lines = []
    for device, limits in rdma.items():
        parts = [f"{file}={max_or(limits[key])}" for key, file in (("hcaHandles", "hca_handle"),
                                                                    ("hcaObjects", "hca_object"))
                 if isinstance(limits, dict) and limits.get(key) is not None]
        if not parts:
            raise PyctrError(f"{FIELD}.rdma.{device}: needs hcaHandles or hcaObjects")
        lines.append(f"{device} {' '.join(parts)}")
    return lines


KNOWN = {"memory", "cpu", "pids", "devices", "blockIO", "hugepageLimits", "network", "rdma", "unified"}


def refuse_unknown(resources: dict) -> None:
    for key in resources:
        if key not in KNOWN:
            raise PyctrError(f"{FIELD}.{key}: not supported by pyctr")


# Fields where runc reads 0 (or "") as "not set": clients (dockerd, containerd) send them so.
_ZERO_IS_UNSET = {"memory": ("limit", "reservation", "swap", "kernel", "kernelTCP"),
                  "cpu": ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems"),
                  "blockIO": ("weight", "leafWeight"), "pids": ("limit",)}


def drop_unset(resources: dict) -> dict:
    """A copy of OCI linux.resources without the zero values runc ignores."""
    cleaned = dict(resources)
    for section, keys in _ZERO_IS_UNSET.items():
        if isinstance(cleaned.get(section), dict):
            cleaned[section] = {k: v for k, v in cleaned[section].items() if not (k in keys and v in (0, ""))}
    return cleaned
