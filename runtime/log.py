"""Diagnostics on stderr at the level of --log-level; stdlib logging costs too much at start-up."""

import sys

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_threshold = 30


def set_level(name: str) -> None:
    global _threshold
    _threshold = _LEVELS.get(name, 30)


def _emit(level: str, message: str) -> None:
    if _LEVELS[level] >= _threshold:
        print(f"pyctr {level}: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    _emit("warning", message)
