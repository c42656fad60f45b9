"""pyctr-oci's whole command line in argparse: runc's commands and flags, for help and errors and
for what the quick path (runtime/oci_cli.py) leaves to it."""

import argparse
import os
import sys

from pyctr.runtime import ocistate
from pyctr.runtime.oci_cli import GLOBAL_FLAGS


def build(only: str | None = None) -> argparse.ArgumentParser:
    """runc's command line. `only` names the one command to define: the others cost time at every
    start (podman runs us three times a container) and are needed only for help and errors."""
    p = argparse.ArgumentParser(prog="pyctr-oci", description="pyctr as an OCI runtime, with runc's command line.",
                                formatter_class=_Formatter)
    p.add_argument("--root", default=ocistate.DEFAULT_ROOT, help="state folder (default %(default)s)")
    p.add_argument("--log", help="write errors and warnings to this file too")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true", help="cgroupsPath is slice:prefix:name (needs systemd)")
    p.add_argument("--rootless", default="auto", help="accepted for runc compatibility; pyctr-oci runs as root")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, define) in _COMMANDS.items():
        if only is None or name == only:
            define(sub.add_parser(name, help=help_text, formatter_class=_Formatter))
    return p


class _Formatter(argparse.HelpFormatter):
    """argparse's own, sized from the terminal without importing shutil: argparse makes one at
    every add_argument, and shutil brings in the compression modules (milliseconds per start)."""

    def __init__(self, prog: str, **kwargs):
        if kwargs.get("width") is None:
            kwargs["width"] = _terminal_columns() - 2  # as argparse does
        super().__init__(prog, **kwargs)


def _terminal_columns() -> int:
    """shutil.get_terminal_size's answer: $COLUMNS, else stdout's terminal, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def _with_id(c: argparse.ArgumentParser) -> None:
    c.add_argument("id", nargs="?", default="")


def _create(c: argparse.ArgumentParser, run: bool = False) -> None:
    _with_id(c)
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    if run:
        c.add_argument("-d", "--detach", action="store_true")
        c.add_argument("--keep", action="store_true")


def _kill(c: argparse.ArgumentParser) -> None:
    _with_id(c)
    c.add_argument("signal", nargs="?", default="SIGTERM")
    c.add_argument("-a", "--all", action="store_true")


def _delete(c: argparse.ArgumentParser) -> None:
    _with_id(c)
    c.add_argument("-f", "--force", action="store_true")


def _exec(c: argparse.ArgumentParser) -> None:
    _with_id(c)
    c.add_argument("args", nargs=argparse.REMAINDER)
    c.add_argument("-p", "--process")
    c.add_argument("-e", "--env", action="append", default=[])
    c.add_argument("-u", "--user")
    c.add_argument("--cwd")
    c.add_argument("-c", "--cap", action="append", default=[])
    c.add_argument("-t", "--tty", action="store_true")
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--no-new-privs", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("--additional-gids", "-g", action="append", default=[])


def _list(c: argparse.ArgumentParser) -> None:
    c.add_argument("-f", "--format", choices=("table", "json"), default="table")
    c.add_argument("-q", "--quiet", action="store_true")


def _ps(c: argparse.ArgumentParser) -> None:
    _with_id(c)
    c.add_argument("-f", "--format", choices=("table", "json"), default="table")
    c.add_argument("ps_args", nargs=argparse.REMAINDER)


def _update(c: argparse.ArgumentParser) -> None:
    _with_id(c)
    c.add_argument("-r", "--resources", help="a JSON file of linux.resources (- for stdin)")
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--kernel-memory", "--cpu-shares",
                 "--cpu-quota", "--cpu-period", "--cpuset-cpus", "--cpuset-mems", "--pids-limit",
                 "--blkio-weight", "--cpu-rt-period", "--cpu-rt-runtime"):
        c.add_argument(flag)


def _events(c: argparse.ArgumentParser) -> None:
    _with_id(c)
    c.add_argument("--stats", action="store_true")
    c.add_argument("--interval", default="5s")


def _spec(c: argparse.ArgumentParser) -> None:
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--rootless", action="store_true")


# Each command: its help line, and what defines its arguments.
_COMMANDS = {
    "create": ("create a container", _create),
    "run": ("create and start a container, then wait", lambda c: _create(c, run=True)),
    "start": ("start a created container", _with_id),
    "state": ("print a container's state", _with_id),
    "kill": ("send a signal to a container's init", _kill),
    "delete": ("delete a container", _delete),
    "exec": ("run a process in a running container", _exec),
    "list": ("list containers", _list),
    "ps": ("list a container's processes", _ps),
    "pause": ("freeze a container", _with_id),
    "resume": ("thaw a paused container", _with_id),
    "update": ("change a container's resources", _update),
    "events": ("container events and statistics", _events),
    "features": ("what this runtime supports, as JSON", lambda c: None),
    "spec": ("write a default config.json", _spec),
}


def command_word(argv: list[str]) -> str | None:
    """The command argv names, when it is one of ours; None for help, or for anything argparse
    should explain with the whole parser."""
    words = iter(argv)
    for word in words:
        if word in GLOBAL_FLAGS.values:  # a global flag that takes a value
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None
