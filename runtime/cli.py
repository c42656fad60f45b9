"""The `pyctr` command line: Docker's subcommands, flags and exit codes.

argparse declares the whole command line (cli_parser.py). It is not imported for the commands
people run most often: `pyctr --version`, and the plain forms of `ps`, `inspect`, `logs`, `run`,
`create`, `start` and `exec` are read by the quick path (runtime/quickparse.py, with the tables
below), as argparse would read them.
argparse, with the gettext and locale it imports, would be a tenth of `pyctr ps` and of
`pyctr run --rm alpine true`.
"""

import os
import sys
from types import SimpleNamespace

from pyctr.runtime import quickparse
from pyctr.runtime.quickparse import Flags

VERSION = "0.1.0"

LOG_LEVELS = ("debug", "info", "warning", "error")


def print_version() -> None:
    sys.stdout.write(f"pyctr {VERSION}\n")


# --- the quick path (runtime/quickparse.py) -------------------------------------------------------
GLOBAL_FLAGS = Flags(switches={"explain": ("--explain",)},
                     values={"root": ("--root",), "state": ("--state",), "log_level": ("--log-level",)},
                     choices={"log_level": LOG_LEVELS})


def _container_config_flags(**more) -> dict:
    """The flags of `run` and `create` (cli_parser.add_container_config_flags)."""
    return dict(
        switches={"interactive": ("-i", "--interactive"), "tty": ("-t", "--tty"),
                  "read_only": ("--read-only",), "privileged": ("--privileged",), "rm": ("--rm",),
                  **more},
        values={"name": ("--name",), "workdir": ("-w", "--workdir"), "user": ("-u", "--user"),
                "hostname": ("-h", "--hostname"), "memory": ("-m", "--memory"), "cpus": ("--cpus",),
                "cpu_shares": ("--cpu-shares",), "pids_limit": ("--pids-limit",),
                "network": ("--network", "--net"), "ip": ("--ip",), "userns": ("--userns",),
                "userns_remap": ("--userns-remap",), "entrypoint": ("--entrypoint",),
                "platform": ("--platform",)},
        lists={"env": ("-e", "--env"), "env_file": ("--env-file",), "volume": ("-v", "--volume"),
               "cap_add": ("--cap-add",), "cap_drop": ("--cap-drop",),
               "security_opt": ("--security-opt",), "publish": ("-p", "--publish"),
               "label": ("-l", "--label"), "label_file": ("--label-file",)},
        defaults={"network": "bridge"}, integers=("cpu_shares", "pids_limit"),
        positional="image", rest="command")


# tests/test_cli.py checks these against cli_parser's declarations, and both parsers on many argvs.
QUICK_COMMANDS = {
    "ps": Flags(switches={"all": ("-a", "--all"), "quiet": ("-q", "--quiet"), "no_trunc": ("--no-trunc",)},
                values={"format": ("--format",)}, lists={"filter": ("-f", "--filter")},
                defaults={"format": "table"}, choices={"format": ("table", "json")},
                handler="pyctr.runtime.listing:cmd_ps"),
    "inspect": Flags(values={"format": ("-f", "--format")}, handler="pyctr.runtime.listing:cmd_inspect",
                     positional="containers", many=True),
    "logs": Flags(switches={"follow": ("-f", "--follow"), "timestamps": ("-t", "--timestamps")},
                  values={"tail": ("--tail",)}, defaults={"tail": "all"},
                  handler="pyctr.runtime.listing:cmd_logs", positional="container"),
    "run": Flags(**_container_config_flags(detach=("-d", "--detach")),
                 handler="pyctr.runtime.commands:cmd_run"),
    "create": Flags(**_container_config_flags(), handler="pyctr.runtime.commands:cmd_create"),
    "start": Flags(switches={"attach": ("-a", "--attach"), "interactive": ("-i", "--interactive")},
                   handler="pyctr.runtime.commands:cmd_start", positional="containers", many=True),
    "exec": Flags(switches={"detach": ("-d", "--detach"), "interactive": ("-i", "--interactive"),
                            "tty": ("-t", "--tty"), "privileged": ("--privileged",)},
                  values={"workdir": ("-w", "--workdir"), "user": ("-u", "--user")},
                  lists={"env": ("-e", "--env")},
                  handler="pyctr.runtime.commands:cmd_exec", positional="container", rest="command"),
}


def quick_parse(argv: list[str]) -> SimpleNamespace | None:
    """argv as argparse would parse it, if it is `--version` or a plain form of a QUICK_COMMANDS
    command; None for anything else, which argparse judges."""
    args = quickparse.parse(argv, GLOBAL_FLAGS, QUICK_COMMANDS, "command_name",
                            {"log_level": os.environ.get("PYCTR_LOG_LEVEL", "warning")}, at_once=("--version",))
    return None if args is None else SimpleNamespace(**args)


# --- running a command -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from pyctr.runtime import hosttools

    hosttools.distrust_callers_path()  # later, lazy imports never come from the caller's folder
    argv = sys.argv[1:] if argv is None else argv
    args = quick_parse(argv)
    quick = args is not None
    if args is None:
        from pyctr.runtime import cli_parser

        args = cli_parser.parse(argv)
    elif getattr(args, "version", False):
        print_version()
        return 0
    # explain and log only when asked for: every module imported costs `pyctr ps` about 1%.
    if args.explain:
        from pyctr.runtime import explain

        explain.enable()
    if args.log_level != "warning":  # log's own default
        from pyctr.runtime import log

        log.set_level(args.log_level)
    from pyctr.runtime import settings

    settings.configure(args.root, args.state)
    handler = getattr(args, "handler", None)
    if not handler:
        build_parser().print_help(sys.stderr)
        return 125
    module_name, func_name = handler.split(":")

    def handle() -> int:
        __import__(module_name)  # as importlib.import_module does, without importing importlib
        return getattr(sys.modules[module_name], func_name)(args) or 0

    try:
        if quick and args.command_name == "run":
            from pyctr.runtime import runclient

            if runclient.wanted(args):  # a foreground run, in a fork of the warm host monitor
                return runclient.run(argv, settings.current().state_dir, handle)
        return handle()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # one line for the user, the traceback only at debug level
        return _report(e, args.log_level)


def build_parser(only: str | None = None):
    """The argparse parser of the whole command line (or of the one command `only`)."""
    from pyctr.runtime import cli_parser

    return cli_parser.build_parser(only)


def _report(error: Exception, level: str) -> int:
    from pyctr.runtime.errors import PyctrError

    if level == "debug":
        import traceback

        traceback.print_exc()
    if isinstance(error, PyctrError):
        print(f"Error: {error}", file=sys.stderr)
        return error.exit_code
    if isinstance(error, PermissionError):
        print(f"Error: {error} (pyctr must run as root)", file=sys.stderr)
        return 125
    if isinstance(error, OSError):
        print(f"Error: {error}", file=sys.stderr)
        return 125
    print(f"Error: {type(error).__name__}: {error} (rerun with --log-level debug for details)",
          file=sys.stderr)
    return 125


def run() -> None:
    code = main()
    # Skip the interpreter's teardown (module and object clean-up): it is ~10 ms of nothing.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
