"""`pyctr-oci`: runc's command line over pyctr's core (runtime/engine.py), for podman (conmon),
containerd's shim, docker, and the OCI validation suite.

Errors are one line on stderr, and in --log as well (a JSON line with level, msg and time
with --log-format json, which containerd reads), with exit status 1, as runc does.
"""

import argparse
import json
import os
import sys

from pyctr.runtime import ocistate
from pyctr.runtime.errors import PyctrError

VERSION = "0.2.0"


class Logger:
    """--log and --log-format: where errors and warnings go, besides stderr."""

    def __init__(self, path: str | None, fmt: str, debug: bool):
        self.path, self.fmt, self.debug_enabled = path, fmt, debug

    def write(self, level: str, message: str) -> None:
        if not self.path:
            return
        from pyctr.runtime.reaper import now_rfc3339

        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": message, "time": now_rfc3339()})
        else:
            line = f'time="{now_rfc3339()}" level={level} msg="{message}"'
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.write("debug", message)


# Global options that take a value: the command is the first word that is not one of them.
_GLOBAL_VALUES = ("--root", "--log", "--log-format", "--rootless", "--criu")


def _parser(only: str | None = None) -> argparse.ArgumentParser:
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


def _command_word(argv: list[str]) -> str | None:
    """The command argv names, when it is one of ours; None for help, or for anything argparse
    should explain with the whole parser."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_VALUES:
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> None:
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser(_command_word(argv)).parse_args(argv)
    except SystemExit as e:
        sys.exit(0 if e.code == 0 else 1)
    logger = Logger(args.log, args.log_format, args.debug)
    from pyctr.runtime import log

    log.redirect(lambda level, message: logger.write(level, message))
    if args.version:
        print(f"runc version {VERSION} (pyctr-oci)\ncommit: pyctr\nspec: 1.1.0")
        return
    if not args.command:
        _parser().print_help()
        sys.exit(1)
    logger.debug(f"{args.command} {' '.join(argv)}")
    try:
        from pyctr.runtime import oci_commands

        code = getattr(oci_commands, args.command)(args)
    except PyctrError as e:
        message = str(e)
        logger.write("error", message)
        print(f"pyctr-oci: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `pyctr-oci events | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if as_program:
        _exit_now(code or 0)
    sys.exit(code or 0)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's tear-down (freeing every module and object: milliseconds
    at each of the runtime's many short runs). Files are closed by then; flush what is buffered."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # stdout gone (a closed pipe): as sys.exit would report it
    os._exit(code)
