"""Finding processes and the memory they hold, from /proc."""

import os
import signal
from collections import Counter

HOST_PIDNS = os.readlink("/proc/self/ns/pid")


def tool_pids(key: str, value: str, mentions: tuple[str, ...] = ()) -> list[int]:
    """The host processes (not those inside a container's PID namespace) that a tool keeps: each
    whose environment has key=value or whose command line mentions one of `mentions`, and
    every host-side descendant of these, whatever their names and parents. pyctr exports
    PYCTR_STATE to what it starts, so the bench's own state folder finds pyctr's processes and
    nothing of anyone else's; the descendants catch a fork that rewrote its environment (a
    process title does) or a helper started with a clean one."""
    needle = f"{key}={value}".encode()
    words = [m.encode() for m in mentions]
    parent: dict[int, int] = {}  # every host process: its parent
    seeds = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != HOST_PIDNS:
                continue
            parent[pid] = _ppid(pid)
        except (OSError, ValueError):
            continue  # gone meanwhile
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read (its descendants may still be ours)
        if needle in env or any(w in cmdline for w in words):
            seeds.append(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(seeds)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return sorted(found)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat.rpartition(")")[2].split()[1])  # after the name, which may hold anything


def memory_kib(pid: int) -> dict | None:
    """PSS, RSS and page tables of a process, in KiB. PSS shares each page among the processes
    mapping it, so the PSS of N forks of one process adds up to what they really hold together.
    Page tables are the kernel's, per process, and in neither."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Pss", "Rss"):
                    fields[name] = int(rest.split()[0])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == "VmPTE":
                    fields[name] = int(rest.split()[0])
    except OSError:
        return None
    if "Pss" not in fields:
        return None  # a zombie maps nothing
    return {"pss": fields["Pss"], "rss": fields["Rss"], "pte": fields.get("VmPTE", 0)}


def memory(pids: list[int], holder: str) -> dict:
    """What the processes hold (KiB, one entry per live process), and how many have each name."""
    measured = [(pid, m) for pid in pids if (m := memory_kib(pid))]
    names = Counter(_name(pid) for pid, _ in measured)
    return {"what": holder, "processes": len(measured), "names": dict(names),
            "pss_kib": [m["pss"] for _, m in measured], "rss_kib": [m["rss"] for _, m in measured],
            "pte_kib": [m["pte"] for _, m in measured]}


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
