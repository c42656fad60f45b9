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


HOST = "on the host"
CONTAINER = "in the container (after unshare)"
_side = None  # the side this process's lines run on; None: the host, not said yet
_said = None  # the side the last marker this process printed named
_log_path = None  # where this process's lines go instead of stderr (a detached monitor's)


def side(name: str, again: bool = False) -> None:
    """The following steps run on this side: a `# --- on the host ---` line comes before the
    next one when the side changed; `again` even when not (a monitor's lines after the
    container's, which another process printed)."""
    global _side, _said
    _side = name
    if again:
        _said = None


def log_to(path: object) -> None:
    """Send this process's lines to a file (appended): a detached monitor's stderr is /dev/null."""
    global _log_path
    _log_path = str(path)


def write_file(path: object, text: str) -> None:
    """Writing `text` into a file, as one line of shell a person can paste."""
    if enabled:
        import shlex

        target = shlex.quote(str(path))
        if not text:
            _emit(f": > {target}")
            return
        lines = text.split("\n")
        last = lines.pop()  # "" when the text ends with a newline
        parts = []
        if lines:
            parts.append("printf '%s\\n' " + " ".join(shlex.quote(l) for l in lines))
        if last:
            parts.append("printf %s " + shlex.quote(last))
        if len(parts) == 1:
            _emit(f"{parts[0]} > {target}")
        else:
            _emit("{ " + "; ".join(parts) + f"; }} > {target}")


def _emit(line: str) -> None:
    global _said
    if _said != (_side or HOST):
        _said = _side or HOST
        _write_line(f"# --- {_said} ---")
    _write_line(line)


def _write_line(line: str) -> None:
    try:
        if _log_path is not None:
            with open(_log_path, "a") as log:
                log.write(line + "\n")
            return
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def write(path: object, value: object) -> None:
    """Writing a value into a kernel file (cgroup, /proc/sys), shown as `echo VALUE > PATH`."""
    if enabled:
        import shlex

        _emit(f"echo {shlex.quote(str(value))} > {shlex.quote(str(path))}")
