"""Diagnostics on stderr at the level of --log-level; stdlib logging costs too much at start-up."""

import sys

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_threshold = 30


def set_level(name: str) -> None:
    global _threshold
    _threshold = _LEVELS.get(name, 30)


_also = None  # pyctr-oci's --log file


def redirect(also) -> None:
    """Send every message to `also(level, message)` as well (pyctr-oci's --log)."""
    global _also
    _also = also


def _emit(level: str, message: str) -> None:
    if _LEVELS[level] >= _threshold:
        print(f"pyctr {level}: {message}", file=sys.stderr, flush=True)
    if _also is not None:
        _also(level, message)


def warning(message: str) -> None:
    _emit("warning", message)
