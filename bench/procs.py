"""Finding processes and the memory they hold, from /proc."""

import os
import signal

HOST_PIDNS = os.readlink("/proc/self/ns/pid")


def pids_with_env(key: str, value: str) -> list[int]:
    """Host processes (not those inside a container's PID namespace) whose environment has
    key=value. pyctr exports PYCTR_STATE to what it starts, so the bench's own state directory
    finds pyctr's processes, and nothing of anyone else's."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != HOST_PIDNS:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(PSS, RSS) of a process in KiB. PSS shares each page among the processes mapping it, so
    the PSS of N identical monitors adds up to what they really hold together."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Pss", "Rss"):
                    fields[name] = int(rest.split()[0])
    except OSError:
        return None
    if "Pss" not in fields:
        return None  # a zombie maps nothing
    return fields["Pss"], fields["Rss"]


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
