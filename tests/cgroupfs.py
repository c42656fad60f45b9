"""The host's cgroup hierarchies, read from /proc/self/mountinfo by the tests themselves (not
through pyctr), so that a test can tell where a container's cgroups are and that none is left.

    mounts() -> list[Mount]          every cgroup (v1) and cgroup2 mount this process sees
    container_dirs(cid) -> list[str] the directories named pyctr/CID in any of them
    limit_controllers() -> set[str]  the controllers a container's limits can use here (memory,
                                     cpu, pids), PYCTR_CGROUP_VERSION=2 included
    needs_limits                     a mark that skips a test where those are missing
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Mount:
    path: str
    fstype: str  # "cgroup" (v1) or "cgroup2"
    controllers: frozenset[str]  # v1 only: memory, cpu, ... (a named hierarchy has none)


def mounts() -> list[Mount]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _source, options = tail.split(" ", 2)
        if fstype not in ("cgroup", "cgroup2"):
            continue
        path = fields.split(" ")[4].replace("\\040", " ")
        controllers = {o for o in options.split(",") if o not in ("rw", "ro") and "=" not in o}
        found.append(Mount(path, fstype, frozenset(controllers if fstype == "cgroup" else ())))
    return found


def unified() -> str | None:
    """The cgroup2 mount point, if any (/sys/fs/cgroup on a pure v2 host, …/unified on hybrid)."""
    return next((m.path for m in mounts() if m.fstype == "cgroup2"), None)


def container_dirs(cid: str) -> list[str]:
    return [str(Path(m.path, "pyctr", cid)) for m in mounts()
            if os.path.isdir(os.path.join(m.path, "pyctr", cid))]


def limit_controllers() -> set[str]:
    found = mounts()
    v1 = set().union(*(m.controllers for m in found))
    if v1 and os.environ.get("PYCTR_CGROUP_VERSION") != "2":
        return v1 & {"memory", "cpu", "pids"}
    top = unified()
    try:
        return set(Path(top, "cgroup.controllers").read_text().split()) & {"memory", "cpu", "pids"} if top else set()
    except OSError:
        return set()


needs_limits = pytest.mark.skipif(limit_controllers() != {"memory", "cpu", "pids"},
                                  reason="the cgroup hierarchy here lacks memory, cpu or pids: pyctr refuses limits")


def kill_and_remove(groups: list) -> None:
    """A test's cgroup backends, newest first: every process in them killed, then each removed
    (one that will not go shows in the caller's check for leftovers)."""
    for group in reversed(groups):
        group.kill()
        try:
            group.remove()
        except OSError:
            pass
