"""Reading and writing cgroup files, making and removing cgroup folders."""

import os
import time
from pathlib import Path

from pyctr.runtime import explain
from pyctr.runtime.errors import PyctrError


def write(path: Path, value: object) -> None:
    explain.write(path, value)
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as error:
        error.filename = error.filename or str(path)  # a refused write fails at close, unnamed
        raise


def write_field(field: str, path: Path, value: object) -> None:
    """A write that an OCI field asked for: the kernel's refusal names the field."""
    try:
        write(path, value)
    except OSError as error:
        raise PyctrError(f"{field}: the kernel refused {str(value).strip()!r} for {path}: "
                         f"{error.strerror}") from error


def read(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


def read_int(path: Path, default: int = 0) -> int:
    """A number file; "max" (v2) and a missing file read as `default`."""
    try:
        text = read(path)
    except OSError:
        return default
    return default if text == "max" else int(text)


def read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (cpu.stat, memory.stat, memory.events): KEY VALUE per line."""
    try:
        pairs = (line.split() for line in read(path).splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except OSError:
        return {}


def mkdir_counting(path: Path) -> int:
    """mkdir -p; returns how many folders it made (the leaf included), so that `remove` takes
    away only those. Again if a parent went away meanwhile (its last container was removed)."""
    for _ in range(5):
        missing = 0
        probe = path
        while not probe.exists():
            missing += 1
            probe = probe.parent
        try:
            path.mkdir(parents=True, exist_ok=True)
            return missing
        except FileNotFoundError:
            continue
    path.mkdir(parents=True, exist_ok=True)
    return 1


def rmdir_when_empty(path: Path, timeout: float = 5.0) -> None:
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


def rmdir_if_unused(path: Path) -> bool:
    """A parent we made goes with its last child; one still in use stays (no error)."""
    try:
        os.rmdir(path)
    except OSError:
        return False
    explain.step("rmdir", "--ignore-fail-on-non-empty", path)
    return True


def signal_each(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
