"""Attacker programs for the security tests: small C files under tests/probes/, built static.

A probe runs inside the container as the attacker would: it is copied into a bind-mounted folder
(or an image layer) and executed there. Static, so it needs nothing from the Alpine image.

    build(name) -> Path   compiles tests/probes/NAME.c once per session, into a private folder
                          that goes when the session ends
"""

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "probes"
_built: dict[str, Path] = {}  # name -> its binary, this session's
_folder: Path | None = None  # where they are built (_session_folder)


def _session_folder() -> Path:
    """A private folder (mkdtemp: 0700, a fresh name, so nobody can have planted a binary in it:
    some tests run a probe on the host as root), removed when the session's process exits."""
    folder = Path(tempfile.mkdtemp(prefix="pyctr-probes-"))
    owner = os.getpid()
    # Only the session's own exit removes it, not a forked child that happens to exit through atexit.
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return folder


def build(name: str) -> Path:
    global _folder
    if name in _built:
        return _built[name]
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("the security probes need gcc (scripts/setup.sh --dev installs it)")
    if _folder is None:
        _folder = _session_folder()
    binary = _folder / name
    subprocess.run([cc, "-static", "-O1", "-o", str(binary), str(SOURCES / f"{name}.c")], check=True,
                   capture_output=True, text=True)
    _built[name] = binary
    return binary
