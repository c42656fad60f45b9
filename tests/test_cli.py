"""The command line's quick path (cli.quick_parse) against argparse (cli_parser), the modules the
read-only commands import, and the arithmetic that replaced time.strptime in humanize."""

import argparse
import calendar
import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyctr.runtime import cli, cli_parser, humanize, jsonstore, oci_cli, oci_cli_parser, settings
from pyctr.runtime import container as records

NONE = ("--network", "none")


# --- the quick path parses as argparse does --------------------------------------------------
def declared_flags(parser: argparse.ArgumentParser) -> dict:
    """What a parser declares, in the terms of quickparse.Flags (help, version and subcommands aside)."""
    found = {"switches": {}, "values": {}, "lists": [], "defaults": {}, "choices": {}, "integers": [],
             "positionals": []}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, cli_parser.VersionAction, argparse._SubParsersAction)):
            continue
        if not action.option_strings:
            found["positionals"].append((action.dest, action.nargs))
            continue
        assert type(action) in (argparse._StoreTrueAction, argparse._StoreAction, argparse._AppendAction), action
        kind = "switches" if isinstance(action, argparse._StoreTrueAction) else "values"
        found[kind].update(dict.fromkeys(action.option_strings, action.dest))
        if isinstance(action, argparse._AppendAction):
            assert action.nargs is None and action.const is None, action  # one value each time
            found["lists"].append(action.dest)
        found["defaults"][action.dest] = action.default
        if action.choices is not None:
            found["choices"][action.dest] = tuple(action.choices)
        if action.type is not None:
            assert action.type is int, action
            found["integers"].append(action.dest)
    return found


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("name", sorted(cli.QUICK_COMMANDS))
def test_the_quick_flags_are_the_declared_ones(name):
    quick, declared = cli.QUICK_COMMANDS[name], declared_flags(subparser(cli_parser.build_parser(name), name))
    assert quick.switches == declared["switches"]
    assert quick.values == declared["values"]
    assert sorted(quick.lists) == sorted(declared["lists"])
    assert quick.defaults == declared["defaults"]
    assert quick.choices == declared["choices"]
    assert sorted(quick.integers) == sorted(declared["integers"])
    positionals = [(quick.positional, "+" if quick.many else None)] if quick.positional else []
    if quick.rest:
        positionals.append((quick.rest, argparse.REMAINDER))
    assert positionals == declared["positionals"]
    assert quick.handler == subparser(cli_parser.build_parser(name), name)._defaults["handler"]


def test_the_quick_global_flags_are_the_declared_ones(monkeypatch):
    monkeypatch.delenv("PYCTR_LOG_LEVEL", raising=False)
    declared = declared_flags(cli_parser.build_parser(""))
    assert cli.GLOBAL_FLAGS.switches == declared["switches"]
    assert cli.GLOBAL_FLAGS.values == declared["values"]
    assert {**cli.GLOBAL_FLAGS.defaults, "log_level": "warning"} == declared["defaults"]
    assert cli.GLOBAL_FLAGS.choices == declared["choices"]


def argparse_outcome(argv: list[str]) -> tuple:
    """("args", vars) or ("exit", code, stdout) of argparse on argv."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return ("args", vars(cli_parser.parse(argv)))
    except SystemExit as e:
        return ("exit", e.code, out.getvalue())


def check_agrees(argv: list[str]) -> bool:
    """If the quick path takes argv, argparse gives the same; returns whether it took it."""
    quick = cli.quick_parse(argv)
    if quick is None:
        return False
    if getattr(quick, "version", False):
        assert argparse_outcome(argv) == ("exit", 0, f"pyctr {cli.VERSION}\n"), argv
    else:
        assert argparse_outcome(argv) == ("args", vars(quick)), argv
    return True


@pytest.mark.parametrize("argv", [
    ["--version"], ["--explain", "--version", "bogus"],
    ["ps"], ["ps", "-a"], ["ps", "-aq"], ["ps", "-qa", "--no-trunc"], ["ps", "--all", "--quiet"],
    ["ps", "--format", "json"], ["ps", "--format=json", "-a"],
    ["--root", "/r", "--state=/s", "--log-level", "debug", "--explain", "ps", "-a"], ["--root", "ps", "ps"],
    ["inspect", "c1"], ["inspect", "c1", "c2"], ["inspect", "-f", "{{.Id}}", "c1", "c2"],
    ["inspect", "c1", "c2", "--format", "{{json .State}}"], ["inspect", "--format=", "c1"], ["inspect", ""],
    ["logs", "c1"], ["logs", "-f", "c1"], ["logs", "-ft", "--tail", "5", "c1"], ["logs", "c1", "--tail=all", "-t"],
    ["run", "alpine"], ["run", "--rm", "--network", "none", "alpine", "/bin/true"], ["run", "-dit", "alpine"],
    ["run", "-e", "A=1", "--env=B", "-e", "", "-v", "/a:/b:ro", "-p", "80:80", "-p", "81:81", "alpine", "sh"],
    ["run", "--cpu-shares", "512", "--pids-limit=007", "--net", "host", "-h", "box", "--name", "n", "i"],
    ["run", "alpine", "ls", "-la", "--name", "x", "--bogus", "-h", "-1", "-", "", "--help"],
    ["--log-level", "info", "create", "--read-only", "-m", "32m", "--cap-drop", "ALL", "alpine", "true"],
    ["start", "c1"], ["start", "-ai", "c1"], ["start", "c1", "c2", "--attach"],
    ["exec", "c1", "ls"], ["exec", "-it", "-e", "A=1", "--user=0", "-w", "/", "c1", "sh", "-c", "echo -n"],
])
def test_the_quick_path_takes_the_plain_forms_as_argparse_does(argv, monkeypatch):
    monkeypatch.delenv("PYCTR_LOG_LEVEL", raising=False)
    assert check_agrees(argv)


@pytest.mark.parametrize("argv", [
    [], ["-h"], ["ps", "--help"], ["ps", "-h"], ["ps", "--al"], ["ps", "--format", "xml"], ["ps", "--format"],
    ["ps", "extra"], ["ps", "--"], ["ps", "-ax"], ["ps", "--all=1"], ["--log-level", "loud", "ps"],
    ["--root", "--version"], ["--bogus", "--version"], ["ps", "--root", "/r"], ["container", "ls"],
    ["inspect"], ["inspect", "-f", "x"], ["inspect", "c1", "-f", "x", "c2"], ["inspect", "-fx", "c1"],
    ["inspect", "-"], ["logs", "c1", "c2"], ["logs", "--tail", "-1", "c1"],
    ["run"], ["run", "--help"], ["run", "-h", "alpine"], ["run", "--priv", "alpine"], ["run", "-eA=1", "alpine"],
    ["run", "--pids-limit", "-1", "alpine"], ["run", "--cpu-shares", " 5", "alpine"], ["run", "--cpu-shares=x", "i"],
    ["run", "--rm=1", "alpine"], ["run", "--", "alpine"], ["run", "alpine", "--", "ls"], ["run", "-", "ls"],
    ["run", "alpine", "ls", "--cap"], ["run", "alpine", "ls", "--ne=1"], ["run", "-ih", "x", "alpine"],
    ["exec", "-h", "c1"], ["exec"], ["start"], ["start", "-h", "c1"], ["start", "c1", "-a", "c2"],
])
def test_the_quick_path_leaves_the_rest_to_argparse(argv, monkeypatch):
    monkeypatch.delenv("PYCTR_LOG_LEVEL", raising=False)
    assert cli.quick_parse(argv) is None


def test_both_parsers_agree_on_random_command_lines(monkeypatch):
    monkeypatch.setenv("PYCTR_LOG_LEVEL", "info")  # the default comes from here in both
    words = ["ps", "inspect", "logs", "c1", "c2", "json", "table", "xml", "5", "-1", "", "-", "--",
             "-a", "-q", "-aq", "-qa", "-ax", "--all", "--al", "--quiet", "--no-trunc", "--format",
             "--format=json", "--format=xml", "-f", "-t", "-ft", "-fx", "--follow", "--tail", "--tail=3",
             "--timestamps", "--root", "/r", "--root=/x", "--state", "--explain", "--log-level", "debug",
             "--version", "-h", "--help", "--filter", "--filter=label=a", "label=a=b", "--fil"]
    rng = random.Random(13)
    taken = 0
    for _ in range(4000):
        argv = [rng.choice(words) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.7:  # most of them with a command first, as people write them
            argv.insert(rng.randint(0, min(2, len(argv))), rng.choice(["ps", "inspect", "logs"]))
        taken += check_agrees(argv)
    assert taken > 200  # the quick path took enough of them for this to mean something


def test_both_parsers_agree_on_random_container_command_lines(monkeypatch):
    monkeypatch.delenv("PYCTR_LOG_LEVEL", raising=False)
    words = ["alpine", "c1", "c2", "ls", "-la", "sh", "-c", "", "-", "--", "-1", "5", "0x5", " 5", "+5", "none",
             "-d", "-i", "-t", "-it", "-dit", "-ia", "-ih", "-a", "--attach", "--rm", "--rm=1", "--priv",
             "--privileged", "--name", "--name=n", "-e", "-eA", "--env", "--env=A=1", "--env-file", "-v",
             "--volume", "-p", "--cap", "--cap-add", "--cap-drop", "--cpu", "--cpus", "--cpu-shares",
             "--cpu-shares=7", "--pids-limit", "--network", "--net", "--ne", "--ip", "-h", "--hostname",
             "-w", "--workdir=/", "-u", "-m", "--memory", "--userns", "--userns-remap", "--read-only",
             "--security-opt", "--help", "--bogus", "--root", "/r", "--version",
             "-l", "--label", "--label=a=b", "--label-file", "--lab", "-la=b"]
    rng = random.Random(2013)
    taken = 0
    for _ in range(6000):
        argv = [rng.choice(words) for _ in range(rng.randint(0, 7))]
        argv.insert(rng.randint(0, min(1, len(argv))), rng.choice(["run", "create", "start", "exec"]))
        taken += check_agrees(argv)
    assert taken > 300  # the quick path took enough of them for this to mean something


def test_bad_flags_still_get_argparse_one_line_and_125(run_pyctr):
    for args in (["ps", "--format", "xml"], ["ps", "extra"], ["inspect"], ["logs", "c1", "c2"]):
        result = run_pyctr(*args)
        assert result.returncode == 125, (args, result)
        assert result.stderr.startswith("Error: pyctr") and result.stderr.count("\n") == 1, result.stderr


# --- pyctr-oci's quick path: the commands podman and containerd run for each container ------------
@pytest.mark.parametrize("name", sorted(oci_cli.QUICK_COMMANDS))
def test_the_oci_quick_flags_are_the_declared_ones(name):
    quick, declared = oci_cli.QUICK_COMMANDS[name], declared_flags(subparser(oci_cli_parser.build(name), name))
    assert quick.switches == declared["switches"]
    assert quick.values == declared["values"]
    assert quick.defaults == declared["defaults"]
    assert sorted(quick.integers) == sorted(declared["integers"])
    assert not quick.lists and not declared["lists"] and not quick.choices and not declared["choices"]
    # argparse's id is optional (nargs="?", "" when absent: the command then says it is needed);
    # the quick path takes only a command line with one, and leaves the others to argparse.
    assert declared["positionals"] == [("id", "?")]
    assert (quick.positional, quick.many, quick.rest) == ("id", False, None)


def test_the_oci_quick_global_flags_are_the_declared_ones():
    declared = declared_flags(oci_cli_parser.build(""))  # no command defined
    assert oci_cli.GLOBAL_FLAGS.switches == declared["switches"]
    assert oci_cli.GLOBAL_FLAGS.values == declared["values"]
    assert oci_cli.GLOBAL_FLAGS.defaults == declared["defaults"]
    assert oci_cli.GLOBAL_FLAGS.choices == declared["choices"]


def oci_check_agrees(argv: list[str]) -> bool:
    """If the OCI quick path takes argv, argparse gives the same; returns whether it took it."""
    quick = oci_cli.quick_parse(argv)
    if quick is None:
        return False
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        parsed = oci_cli_parser.build(oci_cli_parser.command_word(argv)).parse_args(argv)
    assert vars(parsed) == vars(quick), argv
    return True


@pytest.mark.parametrize("argv", [
    # conmon's create and podman's start, state and delete; containerd's shim (runc v2) alike
    ["--root", "/run/r", "--systemd-cgroup", "--log", "/l", "--log-format", "json", "create", "--bundle", "/b",
     "--pid-file", "/p", "--console-socket", "/s", "--no-new-keyring", "--preserve-fds", "2", "c1"],
    ["--root=/run/r", "start", "c1"], ["--root", "/r", "state", "c1"], ["--root", "/r", "delete", "--force", "c1"],
    ["--log", "/l", "--log-format=json", "delete", "-f", "c1"], ["run", "-b", "/b", "-d", "--keep", "c1"],
    ["create", "c1", "-b", "/b", "--no-pivot"], ["-v", "state", "c1"], ["--debug", "pause", "c1"], ["resume", "c1"],
])
def test_the_oci_quick_path_takes_what_runtimes_are_given_as_argparse_does(argv):
    assert oci_check_agrees(argv)


@pytest.mark.parametrize("argv", [
    [], ["-v"], ["--help"], ["state"], ["state", "-h", "c1"], ["state", "c1", "c2"], ["create", "-b"],
    ["create", "-bx", "c1"], ["create", "--preserve-fds", "-1", "c1"], ["create", "--preserve-fds", "x", "c1"],
    ["create", "--bun", "/b", "c1"], ["--log-format", "xml", "state", "c1"], ["kill", "c1", "KILL"],
    ["delete", "--force=1", "c1"], ["state", "--", "c1"], ["--root", "--debug", "state", "c1"],
])
def test_the_oci_quick_path_leaves_the_rest_to_argparse(argv):
    assert oci_cli.quick_parse(argv) is None


def test_both_oci_parsers_agree_on_random_command_lines():
    words = ["c1", "c2", "/b", "3", "-1", "", "-", "--", "json", "text", "xml", "-b", "--bundle", "--bundle=/x",
             "--bun", "--pid-file", "--console-socket", "--no-pivot", "--no-new-keyring", "--preserve-fds",
             "--preserve-fds=0", "-d", "--detach", "--keep", "-f", "--force", "-fd", "-h", "--help", "--root",
             "--root=/r", "--log", "--log-format", "--log-format=json", "--debug", "--systemd-cgroup", "-v",
             "--version", "--rootless", "--criu", "--bogus"]
    commands = sorted(oci_cli.QUICK_COMMANDS) + ["kill", "list"]
    rng = random.Random(1013)
    taken = 0
    for _ in range(6000):
        argv = [rng.choice(words) for _ in range(rng.randint(0, 5))]
        argv.insert(rng.randint(0, min(2, len(argv))), rng.choice(commands))
        if rng.random() < 0.7:  # most with an id last, as runtimes are given them
            argv.append(rng.choice(["c1", "c2"]))
        taken += oci_check_agrees(argv)
    assert taken > 300  # the quick path took enough of them for this to mean something


# --- the read-only commands import little --------------------------------------------------------
# What a command may import beyond the interpreter: json's C scanner reads the records, and json
# itself (with re, enum, functools...: ~5 ms) comes only to print JSON. Anything more (argparse,
# pathlib, lifecycle and the engine, ctypes, fcntl, datetime...) is start-up time that every
# `pyctr ps` pays.
LISTING_MODULES = {"pyctr", "pyctr.runtime", "pyctr.runtime.cli", "pyctr.runtime.quickparse", "pyctr.runtime.hosttools",
                   "pyctr.runtime.settings", "pyctr.runtime.listing", "pyctr.runtime.container",
                   "pyctr.runtime.errors", "pyctr.runtime.jsonstore", "pyctr.runtime.humanize"}
VERSION_MODULES = {"pyctr", "pyctr.runtime", "pyctr.runtime.cli", "pyctr.runtime.quickparse", "pyctr.runtime.hosttools"}

PROBE = """
import os, sys
{preload}
before = set(sys.modules)
from pyctr.runtime import cli
sys.stdout = open(os.devnull, "w")
code = cli.main(sys.argv[1:])
sys.stderr.write(" ".join(sorted(set(sys.modules) - before)) + " " + str(code))
"""


def modules_imported_by(env: dict, args: list[str], preload: str) -> set[str]:
    """The modules that `pyctr ARGS` imports, beyond those `preload` imports first."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(preload=preload), *args], env=env,
                         capture_output=True, text=True, timeout=60)
    *modules, code = out.stderr.split()
    assert code == "0", out.stderr
    return set(modules)


def test_version_ps_inspect_and_logs_import_only_what_they_use(run_pyctr, pyctr_env):
    running = run_pyctr("run", "-d", *NONE, "alpine", "sh", "-c", "echo hi; sleep 60").stdout.strip()
    exited = run_pyctr("run", *NONE, "alpine", "true")
    assert running and exited.returncode == 0
    for _ in range(100):  # until the running one's output is in its log
        if run_pyctr("logs", running).stdout == "hi\n":
            break
        time.sleep(0.05)

    assert modules_imported_by(pyctr_env, ["--version"], "import re") == VERSION_MODULES
    for args in (["ps"], ["ps", "-a"], ["logs", running]):  # _json reads the records; types is the CLI's
        assert modules_imported_by(pyctr_env, args, "") == LISTING_MODULES | {"_json", "types"}, args
    # Printing JSON imports json; --tail, collections (deque).
    for args in (["ps", "-a", "--format", "json"], ["inspect", running], ["logs", "--tail", "1", running]):
        assert modules_imported_by(pyctr_env, args, "import re, json") == LISTING_MODULES, args
    # The probe can fail: the commands that change containers import the engine.
    assert "pyctr.runtime.lifecycle" in modules_imported_by(pyctr_env, ["stop", "-t", "0", running],
                                                            "import re, json")
    # run reads its command line by the quick path too, and hands it to the host monitor's runner
    # (the detached one started it), or runs it in the CLI.
    # As a thin client it imports nothing of what a start needs, nor enum (signal.py's), re or json.
    ran = modules_imported_by(pyctr_env, ["run", "--rm", *NONE, "alpine", "true"], "")
    assert "pyctr.runtime.runclient" in ran
    assert not ran & {"pyctr.runtime.lifecycle", "argparse", "enum", "re", "json", "array", "socket"}, ran
    ran = modules_imported_by({**pyctr_env, "PYCTR_RUN_IN_CLI": "1"}, ["run", "--rm", *NONE, "alpine", "true"],
                              "import re, json")
    assert "pyctr.runtime.lifecycle" in ran and "argparse" not in ran


@pytest.mark.parametrize("command, module, function", [("pyctr", "pyctr.runtime.cli", "run"),
                                                       ("pyctr-oci", "pyctr.runtime.oci_cli", "main")])
def test_the_commands_start_python_without_site_and_import_only_their_cli(command, module, function):
    """setup.sh writes both commands over pip's: Python started without site (-S), which adds only
    the venv's packages (Debian's sitecustomize, and setuptools' .pth hook, which setup.sh removes
    with setuptools, cost every start ~1 ms), and no `re` (pip before 25.0 imported it, 3-7 ms)."""
    if re.search(r"[^A-Za-z0-9_./+@%-]", str(Path(__file__).resolve().parent.parent)):
        pytest.skip("setup.sh leaves pip's scripts where the checkout's path has a space or a quote")
    path = Path(sys.executable).with_name(command)
    first, *lines = path.read_text().splitlines()
    assert first == f"#!{sys.executable} -S"
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    assert imports == ["import site", "import sys", f"from {module} import {function}"], lines
    started = subprocess.run([path, "--version"], env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"),
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and "pyctr" in started.stdout, started
    imported = {line.split("|")[-1].strip() for line in started.stderr.splitlines() if "|" in line}
    assert {"site", module} <= imported and not imported & {"sitecustomize", "_distutils_hack"}, imported


def test_the_venv_is_made_from_the_distributions_python():
    """setup.sh makes .venv from /usr/bin/python3 (the one python3-venv and python3-dev are for;
    Debian's is built with PGO and LTO), or from PYCTR_PYTHON, not from the first python3 on PATH
    (on the project's VM, an unoptimized pyenv build, ~2 ms slower at every start)."""
    expected = os.environ.get("PYCTR_PYTHON") or "/usr/bin/python3"
    too_old = subprocess.run([expected, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"]).returncode
    if too_old and not os.environ.get("PYCTR_PYTHON"):
        expected = "/usr/bin/python3.11"  # Ubuntu 22.04's python3 is 3.10
    config = Path(sys.prefix, "pyvenv.cfg").read_text()
    made_from = next(line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("executable"))
    assert os.path.realpath(made_from) == os.path.realpath(expected), config


# --- jsonstore.loads: json.loads without importing json --------------------------------------------
DOCUMENTS = ['{"Id": "abc", "Pid": 42, "Running": true, "Error": null, "Cpu": 0.5}', ' \n\t[1, -2e3, "x"]\r\n',
             '"caf\\u00e9 \\ud83d\\ude00"', '{"a": {"b": [[], {}]}}', 'NaN', '[Infinity, -Infinity]', '7', '""',
             '{"dup": 1, "dup": 2}', 'caf\u00e9 is not JSON', '{"a": 1} {"b": 2}', '{"a": 1,}', '', '   ',
             '[1, 2', '"a\tb"', '\ufeff{}', '{"big": 123456789012345678901234567890}']


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_loads_reads_as_json_loads_reads(document, as_bytes):
    """The same value, or the same error (type, message and place), for text and for bytes."""
    given = document.encode() if as_bytes else document

    def outcome(loads):
        try:
            return "value", repr(loads(given))  # repr: NaN is not equal to itself
        except ValueError as error:
            return type(error).__name__, str(error)

    assert outcome(jsonstore.loads) == outcome(json.loads)


def test_loads_takes_every_encoding_json_loads_takes():
    for encoding in ("utf-8-sig", "utf-16", "utf-32-le"):
        assert jsonstore.loads('{"k": "v\u00e9"}'.encode(encoding)) == {"k": "v\u00e9"}


# --- jsonstore.dumps: json.dumps without importing json --------------------------------------------
circular: list = []
circular.append(circular)
VALUES = [None, True, 0, -7, 10**30, 0.1, -0.0, 1e300, float("inf"), float("-inf"), float("nan"), "",
          "caf\u00e9 \U0001f600 \u2028 \x00 \"\\/", [], {}, {"a": [1, {"b": None}], "\u00fc": ["x", 2.5]},
          {1: "int key", None: 2, True: 3, 2.5: 4}, ("a", "tuple"), [[[]]],
          {(1,): "a tuple key"}, object(), {"a set": {1}}, b"bytes", circular]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_dumps_writes_as_json_dumps_writes(value):
    """The same text, or the same error (type and message)."""
    def outcome(dumps):
        try:
            return "text", dumps(value)
        except (TypeError, ValueError) as error:
            return type(error).__name__, str(error)

    assert outcome(jsonstore.dumps) == outcome(json.dumps)
    sorted_compact = {"sort_keys": True, "separators": (",", ":")}
    assert outcome(lambda v: jsonstore.dumps(v, **sorted_compact)) == outcome(lambda v: json.dumps(v, **sorted_compact))


# --- humanize ------------------------------------------------------------------------------------
def test_rfc3339_stamps_read_as_calendar_timegm_reads_them():
    rng = random.Random(3339)
    for t in [0, 951782400, 951868800, 4107542400] + [rng.randint(0, 2**33) for _ in range(20000)]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        assert humanize.parse_rfc3339(stamp + "Z") == t == calendar.timegm(time.gmtime(t)), stamp
        assert humanize.parse_rfc3339(stamp + ".250000000Z") == t + 0.25
        assert humanize.parse_rfc3339(stamp + ".5+00:00") == t + 0.5
    assert humanize.parse_rfc3339("") == humanize.parse_rfc3339("0001-01-01T00:00:00Z") == 0.0


@pytest.mark.parametrize("stamp", ["yesterday", "2026/11/26 12:00:00", "2026-13-01T00:00:00Z",
                                   "2026-11-26T12-00-00Z"])
def test_a_malformed_stamp_is_a_value_error(stamp):
    with pytest.raises(ValueError):
        humanize.parse_rfc3339(stamp)


def test_ps_shows_up_and_created_times_in_docker_words(run_pyctr):
    run_pyctr("run", "-d", *NONE, "--name", "upnow", "alpine", "sleep", "60")
    [row] = json.loads(run_pyctr("ps", "--format", "json").stdout)
    assert row["Names"] == ["upnow"]
    assert re.fullmatch(r"Up (Less than a second|\d+ seconds?)", row["Status"]), row
    header, line = run_pyctr("ps").stdout.splitlines()
    created = line[header.index("CREATED"):header.index("STATUS")].strip()
    assert re.fullmatch(r"(Less than a second|\d+ seconds?) ago", created), line


# --- records read without pathlib --------------------------------------------------------------
def test_the_string_places_are_the_path_places(tmp_path, monkeypatch):
    monkeypatch.setenv("PYCTR_ROOT", "")
    monkeypatch.setenv("PYCTR_STATE", "")
    monkeypatch.setattr(settings, "_current", None)
    settings.configure(f"{tmp_path}/root/", f"{tmp_path}//state")  # spelled as people may
    c = records.Container({"Id": "abc123"}, {})
    assert c.log_file == str(c.log_path) and c.file("explain.log") == str(c.explain_log_path)
    assert c.file("upper") == str(c.dir / "upper")
    assert settings.current().root == tmp_path / "root"
    assert oct(os.stat(tmp_path / "state" / "locks").st_mode & 0o777) == "0o700"


def test_ps_passes_over_what_is_not_a_container(run_pyctr, pyctr_env):
    containers = Path(pyctr_env["PYCTR_ROOT"]) / "containers"
    run_pyctr("create", *NONE, "--name", "real", "alpine", "true")
    (containers / "stray-file").write_text("{}")
    (containers / "empty-folder").mkdir()
    (containers / "half-written").mkdir()
    (containers / "half-written" / "config.json").write_text('{"Id": ')
    listed = run_pyctr("ps", "-a", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [row["Names"] for row in json.loads(listed.stdout)] == [["real"]]
