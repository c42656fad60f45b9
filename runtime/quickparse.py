"""The plain forms of a command line, read as argparse would read them, without importing
argparse (with the gettext, locale and re it brings: milliseconds of every short command).

The tables are the callers': runtime/cli.py for pyctr, runtime/oci_cli.py for pyctr-oci. Anything
unusual (--help, an abbreviated or unknown flag, a value that starts with "-", "--", a misplaced
argument) is left to argparse, which judges it and writes the error. tests/test_cli.py checks each
table against its argparse declaration, and both parsers on thousands of random command lines.
"""


class Flags:
    """A parser's flags as argparse declares them: switches (store_true), flags that take a value
    and flags that collect their values (append), by dest; their defaults, allowed values and the
    dests read as int; the command's positional argument (one, or `many`: one or more), followed
    by `rest` (argparse.REMAINDER) if it has one; and the handler its set_defaults names."""

    def __init__(self, switches: dict[str, tuple[str, ...]] | None = None,
                 values: dict[str, tuple[str, ...]] | None = None,
                 lists: dict[str, tuple[str, ...]] | None = None, defaults: dict | None = None,
                 choices: dict[str, tuple[str, ...]] | None = None, integers: tuple[str, ...] = (),
                 handler: str = "", positional: str | None = None, many: bool = False,
                 rest: str | None = None):
        switches, values, lists = switches or {}, values or {}, lists or {}
        self.switches = {flag: dest for dest, flags in switches.items() for flag in flags}
        self.values = {flag: dest for dest, flags in {**values, **lists}.items() for flag in flags}
        self.lists = tuple(lists)
        self.defaults = {**dict.fromkeys(switches, False), **dict.fromkeys(values),
                         **{dest: [] for dest in lists}, **(defaults or {})}
        self.choices = choices or {}
        self.integers = integers
        self.handler = handler
        self.positional = positional
        self.many = many
        self.rest = rest
        # argparse reads every "--x" of a command line as a flag, the command's included, and
        # stops at an abbreviation of two flags: the quick path leaves all abbreviations to it.
        self.long_flags = tuple(flag for flag in [*self.switches, *self.values] if flag.startswith("--"))


def parse(argv: list[str], global_flags: Flags, commands: dict[str, Flags], command_dest: str,
          args: dict, at_once: tuple[str, ...] = ()) -> dict | None:
    """argv read into args (the global defaults, and what the caller adds): the global flags,
    the command word (into args[command_dest]), then the command's flags and positionals. A flag
    of `at_once` (argparse's action="version") ends the reading: {"version": True}. None for
    anything argparse must judge."""
    args = {**global_flags.defaults, **args}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in at_once:
            return {"version": True}  # argparse acts on it at this point, whatever follows
        i = _read_flag(global_flags, argv, i, args)
        if i is None:
            return None
    if i == len(argv) or argv[i] not in commands:
        return None
    command = commands[argv[i]]
    args.update(command.defaults)
    args[command_dest] = argv[i]
    if command.handler:
        args["handler"] = command.handler
    args.update({dest: [] for dest in command.lists})  # a new list each time, as argparse's copy
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
        elif command.rest is not None:  # the image (or container), then the command, flags and all
            rest = argv[i + 1:]
            if any(_abbreviates(command, token) for token in rest):
                return None
            positionals.append(argv[i])
            args[command.rest] = rest
            break
        else:
            positionals.append(argv[i])
            i += 1
    if command.positional is not None:
        if not positionals:
            return None  # argparse: "the following arguments are required"
        args[command.positional] = positionals if command.many else positionals[0]
    return args


def _abbreviates(flags: Flags, token: str) -> bool:
    """Whether argparse could take token for an abbreviation of a flag (or "--", which ends the
    flags): for two flags, argparse stops with "ambiguous option", even in a container's command."""
    name = token.partition("=")[0]
    return token.startswith("--") and any(flag.startswith(name) and flag != name for flag in flags.long_flags)


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
        if dest in flags.integers:
            if not (value.isascii() and value.isdigit()):
                return None  # int() also reads " 7", "+7" and "7_0": argparse judges those
            value = int(value)
        if dest in flags.lists:
            args[dest].append(value)
        else:
            args[dest] = value
        return i + 1
    if not token.startswith("--") and len(token) > 2 and all(f"-{c}" in flags.switches for c in token[1:]):
        for c in token[1:]:  # short switches together, as in -aq
            args[flags.switches[f"-{c}"]] = True
        return i + 1
    return None
