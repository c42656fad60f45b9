"""Attacker programs for the security tests: small C files under tests/probes/, built static.

A probe runs inside the container as the attacker would: it is copied into a bind-mounted folder
(or an image layer) and executed there. Static, so it needs nothing from the Alpine image.

    build(name) -> Path   compiles tests/probes/NAME.c once per session (cached by content)
"""

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "probes"
_CACHE = Path(tempfile.gettempdir()) / "pyctr-probes"


def _private_cache() -> None:
    """The cache in the shared /tmp must be ours alone: some tests run a probe on the host as
    root, so a folder another user made first (with a planted binary) must never be used."""
    try:
        _CACHE.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(_CACHE)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise RuntimeError(f"{_CACHE} is not a private folder of ours: remove it and run the tests again")


def build(name: str) -> Path:
    source = SOURCES / f"{name}.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    binary = _CACHE / f"{name}-{digest}"
    _private_cache()
    if not binary.exists():
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise RuntimeError("the security probes need gcc (scripts/setup.sh --dev installs it)")
        partial = binary.with_suffix(".part")
        subprocess.run([cc, "-static", "-O1", "-o", str(partial), str(source)], check=True,
                       capture_output=True, text=True)
        partial.rename(binary)
    return binary
