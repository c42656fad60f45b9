"""The `pyctr` command line as argparse declares it: every subcommand with Docker's flags, --help,
and Docker's exit code 125 for bad input.

Handlers are named as "module:function" strings and imported only when their command
runs, so `pyctr --version` and `pyctr ps` never pay for requests or yaml. cli.py
imports this module only for what its quick path leaves to argparse.
"""

import argparse
import os
import sys

from pyctr.runtime.cli import LOG_LEVELS, print_version


def _runtime_handler(name: str, module: str = "commands") -> str:
    """commands.py changes containers; listing.py only reads them, and imports much less."""
    return f"pyctr.runtime.{module}:{name}"


def add_container_config_flags(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `create` share (Docker's names)."""
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read environment variables from a file")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set a label (network policies select containers by their labels)")
    p.add_argument("--label-file", action="append", default=[], metavar="FILE",
                   help="read labels from a file (KEY=VALUE lines)")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("--entrypoint", metavar="COMMAND",
                   help="replace the image's Entrypoint (and drop its Cmd); \"\" clears it")
    p.add_argument("-u", "--user", help="USER[:GROUP] or UID[:GID]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="pull the image of this platform when it is not here")
    p.add_argument("-h", "--hostname", help="container host name")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]",
                   help="bind mount a volume")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP", help="add a capability")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability")
    p.add_argument("--privileged", action="store_true", help="give all capabilities, no masking")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPTION",
                   help="seccomp=unconfined, or seccomp=PROFILE.json (default: Docker's profile)")
    p.add_argument("-m", "--memory", help="memory limit (e.g. 32m, 1g)")
    p.add_argument("--cpus", help="number of CPUs (e.g. 0.5)")
    p.add_argument("--cpu-shares", type=int, help="relative CPU weight")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("--network", "--net", default="bridge", metavar="NETWORK",
                   help="none, host, or a network name (default: bridge)")
    p.add_argument("--ip", help="IPv4 address on the network")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:]HOSTPORT:CONTAINERPORT[/PROTO]", help="publish a port")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--userns", metavar="MODE",
                   help="auto[:size=N]: a user namespace on a free range of the subordinate ids of "
                        "user 'containers' (as podman); host: none (the default)")
    p.add_argument("--userns-remap", metavar="default|USER[:GROUP]",
                   help="a user namespace on USER's ranges in /etc/subuid and GROUP's in /etc/subgid "
                        "(as dockerd's flag; default: user dockremap, created if missing)")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized with os.get_terminal_size: the stock one imports shutil
    (with zlib, bz2 and lzma) for that, and argparse builds a formatter for every flag."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            try:
                width = os.get_terminal_size(sys.__stdout__.fileno()).columns
            except (OSError, AttributeError, ValueError):
                width = int(os.environ.get("COLUMNS", "80") or 80)
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


class VersionAction(argparse.Action):
    """`--version`: one line, without argparse's text wrapping (which imports textwrap)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print_version()
        parser.exit()


class Parser(argparse.ArgumentParser):
    """Docker's convention for bad flags: one line on stderr and exit code 125 (not argparse's 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"Error: {self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(125)


class _NotBuilt:
    """Stands in for the parser of a command that is not being run: every call is a no-op."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


GLOBAL_OPTIONS_WITH_VALUE = ("--root", "--state", "--log-level")


def command_name(argv: list[str]) -> str | None:
    """The subcommand in argv, found without parsing: building all ~30 subparsers costs more
    than the rest of `pyctr --version`, so parse() builds only the one it needs."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyctr",
        description="A container runtime you can read in an afternoon.",
    )
    parser.add_argument("--version", action=VersionAction, help="print the version and exit")
    parser.add_argument("--root", help="persistent data (default /var/lib/pyctr, env PYCTR_ROOT)")
    parser.add_argument("--state", help="runtime state (default /run/pyctr, env PYCTR_STATE)")
    parser.add_argument("--explain", action="store_true",
                        help="print every step as the shell command a person would type")
    parser.add_argument("--log-level", choices=LOG_LEVELS,
                        default=os.environ.get("PYCTR_LOG_LEVEL", "warning"))
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")

    def command(name: str, handler: str, help: str, **kw) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _NotBuilt()
        p = sub.add_parser(name, help=help, description=help, **kw)
        p.set_defaults(handler=handler)
        return p

    p = command("run", _runtime_handler("cmd_run"), "create and start a container", add_help=False)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the ID")
    add_container_config_flags(p)

    p = command("create", _runtime_handler("cmd_create"), "create a container", add_help=False)
    add_container_config_flags(p)

    p = command("start", _runtime_handler("cmd_start"), "start one or more containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach output and wait for exit")
    p.add_argument("-i", "--interactive", action="store_true", help="attach STDIN")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("ps", _runtime_handler("cmd_ps", "listing"), "list containers")
    _add_ps_flags(p)

    p = command("stop", _runtime_handler("cmd_stop"), "stop running containers")
    p.add_argument("-t", "--time", type=int, default=10, help="seconds to wait before SIGKILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("restart", _runtime_handler("cmd_restart"), "restart containers")
    p.add_argument("-t", "--time", type=int, default=10, help="seconds to wait before SIGKILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("kill", _runtime_handler("cmd_kill"), "send a signal to running containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("rm", _runtime_handler("cmd_rm"), "remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("logs", _runtime_handler("cmd_logs", "listing"), "show a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", default="all", help="lines from the end (default all)")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("container", metavar="CONTAINER")

    p = command("inspect", _runtime_handler("cmd_inspect", "listing"), "show containers (or images) as JSON")
    p.add_argument("-f", "--format", help="a {{.Path.To.Field}} template")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("info", _runtime_handler("cmd_info", "listing"), "system-wide information, the cgroup backend included")
    p.add_argument("-f", "--format", help="json, or a {{.Field}} template")

    p = command("wait", _runtime_handler("cmd_wait"), "wait for containers and print exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = command("stats", _runtime_handler("cmd_stats", "listing"), "memory, cpu and pids of containers")
    p.add_argument("--no-stream", action="store_true", help="print once and exit")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")

    p = command("top", _runtime_handler("cmd_top", "listing"), "the processes of a container")
    p.add_argument("container", metavar="CONTAINER")

    p = command("exec", _runtime_handler("cmd_exec"), "run a command in a running container",
                add_help=False)
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--help", action="help")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")

    p = command("debug", _runtime_handler("cmd_debug"),
                "run a host command in a container's network namespace (the nsenter trick)")
    p.add_argument("--pid", action="store_true", help="also enter the PID namespace")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")

    p = command("container", "", "manage containers")
    csub = p.add_subparsers(dest="container_command", metavar="COMMAND", required=True)
    cp = csub.add_parser("prune", help="remove all stopped containers")
    cp.add_argument("-f", "--force", action="store_true", help="do not ask (pyctr never asks)")
    cp.set_defaults(handler=_runtime_handler("cmd_prune"))
    cp = csub.add_parser("ls", help="list containers")
    _add_ps_flags(cp)
    cp.set_defaults(handler=_runtime_handler("cmd_ps", "listing"))

    if only is None or (only and not sub.choices):  # not one of the container commands above
        from pyctr.images import commands as image_commands
        from pyctr.network import commands as network_commands

        image_commands.register(sub, command)
        network_commands.register(sub, command)
    parser.built_commands = set(sub.choices)
    return parser


def _add_ps_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default: running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="label=KEY[=VALUE] or network=NAME (repeat a key: any of them; "
                        "label filters: all of them, as Docker)")


def parse(argv: list[str]) -> argparse.Namespace:
    """argv parsed by argparse, which prints --help, --version and errors and exits for them."""
    name = command_name(argv)
    wants_help = not argv or "-h" in argv or "--help" in argv
    parser = build_parser(None if wants_help and name is None else (name or ""))
    if name is not None and name not in parser.built_commands:
        parser = build_parser()  # an unknown command: let argparse list the real ones
    return parser.parse_args(argv)
