"""--explain: print each kernel or network step as the shell command a person would type.

Callers write ``explain.step("ip", "link", "add", ...)``. When explain mode is off the
call is a single boolean test, so it costs nothing on the hot path.
"""

import os
import sys

enabled = os.environ.get("PYCTR_EXPLAIN", "") not in ("", "0")


def enable(on: bool = True) -> None:
    global enabled
    enabled = on
    # Children that re-exec pyctr (the monitor) inherit the mode.
    os.environ["PYCTR_EXPLAIN"] = "1" if on else "0"


def step(*argv: object) -> None:
    """One shell command, quoted so it can be pasted as is."""
    if enabled:
        import shlex

        _emit(shlex.join(str(a) for a in argv))


def shell(line: str) -> None:
    """A command that needs shell syntax (a redirection, a pipe): printed verbatim."""
    if enabled:
        _emit(line)


def comment(text: str) -> None:
    """A step with no command-line equivalent, shown as a shell comment."""
    if enabled:
        _emit("# " + text)


def _emit(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def write(path: object, value: object) -> None:
    """Writing a value into a kernel file (cgroup, /proc/sys), shown as `echo VALUE > PATH`."""
    if enabled:
        import shlex

        _emit(f"echo {shlex.quote(str(value))} > {shlex.quote(str(path))}")
