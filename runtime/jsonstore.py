"""State on disk: JSON files written atomically, and file locks around read-modify-write."""

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator


def read_json(path: Path, default: Any = None) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def write_json(path: Path, data: Any, durable: bool = False) -> None:
    """Write to a temporary file in the same directory, then rename over the target, so a
    reader sees the old document or the new one, never half of one. `durable` adds an fsync,
    for documents that must survive a power cut rather than a crash of pyctr."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "w")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "w")
    with f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(lock_path: Path, shared: bool = False) -> Iterator[None]:
    """An flock(2) on lock_path, held for the block; released even if the process dies."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def updating(path: Path, lock_path: Path, default: Any) -> Iterator[Any]:
    """Read-modify-write a JSON document under its lock: ``with updating(p, l, {}) as doc: ...``."""
    with locked(lock_path):
        doc = read_json(path, default)
        yield doc
        write_json(path, doc)
