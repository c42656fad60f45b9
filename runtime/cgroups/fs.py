"""Reading and writing cgroup files, making and removing cgroup folders.

Paths in the cgroup modules are str: pathlib's import (with fnmatch, re, enum and urllib.parse)
would cost every command that finds a cgroup ~10 ms, and podman runs `delete` per container."""

import os
import time

from pyctr.runtime import explain
from pyctr.runtime.errors import PyctrError


def write(path: str, value: object) -> None:
    explain.write(path, value)
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as error:
        error.filename = error.filename or str(path)  # a refused write fails at close, unnamed
        raise


def write_field(field: str, path: str, value: object) -> None:
    """A write that an OCI field asked for: the kernel's refusal names the field."""
    try:
        write(path, value)
    except OSError as error:
        raise PyctrError(f"{field}: the kernel refused {str(value).strip()!r} for {path}: "
                         f"{error.strerror}") from error


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def read_int(path: str, default: int = 0) -> int:
    """A number file; "max" (v2) and a missing file read as `default`."""
    try:
        text = read(path)
    except OSError:
        return default
    return default if text == "max" else int(text)


def read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file (cpu.stat, memory.stat, memory.events): KEY VALUE per line."""
    try:
        pairs = (line.split() for line in read(path).splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except OSError:
        return {}


def mkdir_counting(path: str) -> int:
    """mkdir -p; returns how many folders it made (the leaf included), so that `remove` takes
    away only those. Again if a parent went away meanwhile (its last container was removed)."""
    for _ in range(5):
        missing = 0
        probe = path
        while not os.path.exists(probe):
            missing += 1
            probe = os.path.dirname(probe)
        try:
            os.makedirs(path, exist_ok=True)
            return missing
        except FileNotFoundError:
            continue
    os.makedirs(path, exist_ok=True)
    return 1


def parents(path: str) -> list[str]:
    """pathlib's Path.parents: the folder above, then each one above that, up to "/"."""
    found = []
    while (parent := os.path.dirname(path)) != path:
        found.append(parent)
        path = parent
    return found


def rmdir_when_empty(path: str, timeout: float = 5.0) -> None:
    """A cgroup can be removed only once the kernel has finished tearing down its tasks."""
    if not os.path.exists(path):
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


def rmdir_if_unused(path: str) -> bool:
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
