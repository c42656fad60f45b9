"""The `pyctr` command line: Docker's subcommands, flags and exit codes.

argparse declares the whole command line (cli_parser.py). It is not imported for the commands
people run most often to look around: `pyctr --version`, and the plain forms of `ps`, `inspect`
and `logs` are read by the quick path below, as argparse would read them. argparse, with the
gettext and locale it imports, would be a tenth of `pyctr ps`.
"""

import os
import sys
from types import SimpleNamespace

VERSION = "0.1.0"

LOG_LEVELS = ("debug", "info", "warning", "error")


def print_version() -> None:
    sys.stdout.write(f"pyctr {VERSION}\n")


# --- the quick path ----------------------------------------------------------------------------
class Flags:
    """A parser's flags as cli_parser declares them, for the quick path: switches (store_true)
    and flags that take a value, by dest; their defaults and allowed values; and the command's
    positional argument (one, or `many`: one or more)."""

    def __init__(self, switches: dict[str, tuple[str, ...]] | None = None,
                 values: dict[str, tuple[str, ...]] | None = None, defaults: dict | None = None,
                 choices: dict[str, tuple[str, ...]] | None = None, handler: str = "",
                 positional: str | None = None, many: bool = False):
        switches, values = switches or {}, values or {}
        self.switches = {flag: dest for dest, flags in switches.items() for flag in flags}
        self.values = {flag: dest for dest, flags in values.items() for flag in flags}
        self.defaults = {**dict.fromkeys(switches, False), **dict.fromkeys(values), **(defaults or {})}
        self.choices = choices or {}
        self.handler = handler
        self.positional = positional
        self.many = many


GLOBAL_FLAGS = Flags(switches={"explain": ("--explain",)},
                     values={"root": ("--root",), "state": ("--state",), "log_level": ("--log-level",)},
                     choices={"log_level": LOG_LEVELS})

# tests/test_cli.py checks these against cli_parser's declarations, and both parsers on many argvs.
QUICK_COMMANDS = {
    "ps": Flags(switches={"all": ("-a", "--all"), "quiet": ("-q", "--quiet"), "no_trunc": ("--no-trunc",)},
                values={"format": ("--format",)}, defaults={"format": "table"},
                choices={"format": ("table", "json")}, handler="pyctr.runtime.listing:cmd_ps"),
    "inspect": Flags(values={"format": ("-f", "--format")}, handler="pyctr.runtime.listing:cmd_inspect",
                     positional="containers", many=True),
    "logs": Flags(switches={"follow": ("-f", "--follow"), "timestamps": ("-t", "--timestamps")},
                  values={"tail": ("--tail",)}, defaults={"tail": "all"},
                  handler="pyctr.runtime.listing:cmd_logs", positional="container"),
}


def quick_parse(argv: list[str]) -> SimpleNamespace | None:
    """argv as argparse would parse it, if it is `--version` or a plain form of a QUICK_COMMANDS
    command; None for anything else: --help, an abbreviated or unknown flag, a value that starts
    with "-", "--", a misplaced argument. argparse judges those, and writes the errors."""
    args = {**GLOBAL_FLAGS.defaults, "log_level": os.environ.get("PYCTR_LOG_LEVEL", "warning")}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "--version":
            return SimpleNamespace(version=True)  # argparse prints it at this point, whatever follows
        i = _read_flag(GLOBAL_FLAGS, argv, i, args)
        if i is None:
            return None
    if i == len(argv) or argv[i] not in QUICK_COMMANDS:
        return None
    command = QUICK_COMMANDS[argv[i]]
    args.update(command.defaults, command_name=argv[i], handler=command.handler)
    positionals: list[str] = []
    flags_after_positionals = False
    i += 1
    while i < len(argv):
        if argv[i].startswith("-"):
            flags_after_positionals = bool(positionals)
            i = _read_flag(command, argv, i, args)
            if i is None:
                return None
        elif command.positional is None or flags_after_positionals or (positionals and not command.many):
            return None  # argparse: "unrecognized arguments"
        else:
            positionals.append(argv[i])
            i += 1
    if command.positional is not None:
        if not positionals:
            return None  # argparse: "the following arguments are required"
        args[command.positional] = positionals if command.many else positionals[0]
    return SimpleNamespace(**args)


def _read_flag(flags: Flags, argv: list[str], i: int, args: dict) -> int | None:
    """Reads the flag at argv[i] (with its value, if it takes one) into args: the index of what
    follows, or None where argparse must judge."""
    token = argv[i]
    name, equals, value = token.partition("=") if token.startswith("--") else (token, "", "")
    if name in flags.switches and not equals:
        args[flags.switches[name]] = True
        return i + 1
    if name in flags.values:
        if not equals:
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                return None
            i, value = i + 1, argv[i + 1]
        dest = flags.values[name]
        if dest in flags.choices and value not in flags.choices[dest]:
            return None
        args[dest] = value
        return i + 1
    if not token.startswith("--") and len(token) > 2 and all(f"-{c}" in flags.switches for c in token[1:]):
        for c in token[1:]:  # short switches together, as in -aq
            args[flags.switches[f"-{c}"]] = True
        return i + 1
    return None


# --- running a command -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from pyctr.runtime import hosttools

    hosttools.distrust_callers_path()  # later, lazy imports never come from the caller's folder
    argv = sys.argv[1:] if argv is None else argv
    args = quick_parse(argv)
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
    try:
        __import__(module_name)  # as importlib.import_module does, without importing importlib
        func = getattr(sys.modules[module_name], func_name)
        return func(args) or 0
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
