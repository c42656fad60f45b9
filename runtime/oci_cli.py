"""`pyctr-oci`: runc's command line over pyctr's core (runtime/engine.py), for podman (conmon),
containerd's shim, docker, and the OCI validation suite.

Errors are one line on stderr, and in --log as well (a JSON line with level, msg and time
with --log-format json, which containerd reads), with exit status 1, as runc does.
"""

import os
import sys
from types import SimpleNamespace

from pyctr.runtime import ocistate, quickparse
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.quickparse import Flags

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
            import json

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


# --- the quick path (runtime/quickparse.py): what podman and containerd run for each container ------
# tests/test_cli.py checks these against runtime/oci_cli_parser.py, and both parsers on many argvs.
GLOBAL_FLAGS = Flags(switches={"debug": ("--debug",), "systemd_cgroup": ("--systemd-cgroup",),
                               "version": ("-v", "--version")},
                     values={"root": ("--root",), "log": ("--log",), "log_format": ("--log-format",),
                             "rootless": ("--rootless",), "criu": ("--criu",)},
                     defaults={"root": ocistate.DEFAULT_ROOT, "log_format": "text", "rootless": "auto"},
                     choices={"log_format": ("text", "json")})


def _create_flags(run: bool = False) -> Flags:
    return Flags(switches={"no_pivot": ("--no-pivot",), "no_new_keyring": ("--no-new-keyring",),
                           **({"detach": ("-d", "--detach"), "keep": ("--keep",)} if run else {})},
                 values={"bundle": ("-b", "--bundle"), "pid_file": ("--pid-file",),
                         "console_socket": ("--console-socket",), "preserve_fds": ("--preserve-fds",)},
                 defaults={"bundle": ".", "preserve_fds": 0}, integers=("preserve_fds",), positional="id")


QUICK_COMMANDS = {
    "create": _create_flags(), "run": _create_flags(run=True), "start": Flags(positional="id"),
    "state": Flags(positional="id"), "delete": Flags(switches={"force": ("-f", "--force")}, positional="id"),
    "pause": Flags(positional="id"), "resume": Flags(positional="id"),
}


def quick_parse(argv: list[str]) -> SimpleNamespace | None:
    """argv as argparse (runtime/oci_cli_parser.py) would parse it, for the plain forms of
    QUICK_COMMANDS; None for anything else, which argparse judges."""
    args = quickparse.parse(argv, GLOBAL_FLAGS, QUICK_COMMANDS, "command", {})
    return None if args is None else SimpleNamespace(**args)


def main(argv: list[str] | None = None) -> None:
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args = quick_parse(argv)
    if args is None:
        from pyctr.runtime import oci_cli_parser

        try:
            args = oci_cli_parser.build(oci_cli_parser.command_word(argv)).parse_args(argv)
        except SystemExit as e:
            sys.exit(0 if e.code == 0 else 1)
    logger = Logger(args.log, args.log_format, args.debug)
    from pyctr.runtime import log

    log.redirect(lambda level, message: logger.write(level, message))
    if args.version:
        print(f"runc version {VERSION} (pyctr-oci)\ncommit: pyctr\nspec: 1.1.0")
        return
    if not args.command:
        from pyctr.runtime import oci_cli_parser

        oci_cli_parser.build().print_help()
        sys.exit(1)
    logger.debug(f"{args.command} {' '.join(argv)}")
    if args.command in ("create", "run", "exec"):
        # PID 1's cgroup move (an exec'd process's too) waits ~10 ms for the lock unless it is
        # warm: begin that wait now, beside the imports and the spec's reading (runtime/cgroups/warm.py).
        from pyctr.runtime.cgroups import warm

        warm.keep()
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
