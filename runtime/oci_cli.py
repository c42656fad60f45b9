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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyctr-oci", description="pyctr as an OCI runtime, with runc's command line.")
    p.add_argument("--root", default=ocistate.DEFAULT_ROOT, help="state folder (default %(default)s)")
    p.add_argument("--log", help="write errors and warnings to this file too")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true", help="cgroupsPath is slice:prefix:name (needs systemd)")
    p.add_argument("--rootless", default="auto", help="accepted for runc compatibility; pyctr-oci runs as root")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, with_id: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        if with_id:
            c.add_argument("id", nargs="?", default="")
        return c

    for name in ("create", "run"):
        c = command(name, "create a container" if name == "create" else "create and start a container, then wait")
        c.add_argument("-b", "--bundle", default=".")
        c.add_argument("--pid-file")
        c.add_argument("--console-socket")
        c.add_argument("--no-pivot", action="store_true")
        c.add_argument("--no-new-keyring", action="store_true")
        c.add_argument("--preserve-fds", type=int, default=0)
        if name == "run":
            c.add_argument("-d", "--detach", action="store_true")
            c.add_argument("--keep", action="store_true")
    command("start", "start a created container")
    command("state", "print a container's state")
    c = command("kill", "send a signal to a container's init")
    c.add_argument("signal", nargs="?", default="SIGTERM")
    c.add_argument("-a", "--all", action="store_true")
    c = command("delete", "delete a container")
    c.add_argument("-f", "--force", action="store_true")
    c = command("exec", "run a process in a running container")
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
    c = command("list", "list containers", with_id=False)
    c.add_argument("-f", "--format", choices=("table", "json"), default="table")
    c.add_argument("-q", "--quiet", action="store_true")
    c = command("ps", "list a container's processes")
    c.add_argument("-f", "--format", choices=("table", "json"), default="table")
    c.add_argument("ps_args", nargs=argparse.REMAINDER)
    command("pause", "freeze a container")
    command("resume", "thaw a paused container")
    c = command("update", "change a container's resources")
    c.add_argument("-r", "--resources", help="a JSON file of linux.resources (- for stdin)")
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--kernel-memory", "--cpu-shares",
                 "--cpu-quota", "--cpu-period", "--cpuset-cpus", "--cpuset-mems", "--pids-limit",
                 "--blkio-weight", "--cpu-rt-period", "--cpu-rt-runtime"):
        c.add_argument(flag)
    c = command("events", "container events and statistics")
    c.add_argument("--stats", action="store_true")
    c.add_argument("--interval", default="5s")
    command("features", "what this runtime supports, as JSON", with_id=False)
    c = command("spec", "write a default config.json", with_id=False)
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--rootless", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
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
    sys.exit(code or 0)
