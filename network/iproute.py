"""Links, addresses and routes through iproute2's `ip` tool: one `ip -batch -` per change.

Why the tool and not a netlink library (pyroute2 before): pyroute2 0.9 is built on asyncio and
imports about 190 modules (multiprocessing, ssl, unittest.mock among them), about 100 ms of a
container start on this VM, while attaching a container takes five netlink requests. `ip -batch -`
sends them from one process in about 2 ms, and what runs is then what --explain prints.

A container's side runs in its netns: pyctr's thread setns()es into the container's netns, starts
`ip` there (a child starts in the netns of the thread that made it) and setns()es back at once.
That is the `nsenter -t PID -n ip …` that --explain prints, without one more exec.
"""

import json
import os
import signal
import time

from pyctr.runtime import explain, hosttools
from pyctr.runtime.errors import PyctrError

_CLONE_NEWNET = 0x40000000
# How `ip` words ENOENT, ESRCH and ENODEV: what a deletion meets when the thing is gone already.
_MISSING = ("No such file or directory", "No such process", "No such device", "Cannot find device")


def run(commands: list[list], pid: int | None = None, missing_ok: bool = False) -> None:
    """Run `ip` commands (each an argv without the leading "ip") as one `ip -batch -`, in the
    netns of process `pid` when given. It stops at the first failure and raises a PyctrError
    naming the command; with `missing_ok` it runs them all and takes "no such device/route"
    as done (for deletions)."""
    in_ns = ("nsenter", "-t", pid, "-n") if pid else ()
    for command in commands:
        explain.step(*in_ns, "ip", *command)
    # One command a line; ip splits lines at blanks, and no argument here holds one (interface
    # names are checked, the rest are addresses, numbers and keywords).
    script = "".join(" ".join(str(a) for a in command) + "\n" for command in commands)
    code, output = _ip(["-force", "-batch", "-"] if missing_ok else ["-batch", "-"], script, pid)
    if code == 0:
        return
    failures = _failures(output, commands)
    if missing_ok:
        failures = [(c, message) for c, message in failures if not any(m in message for m in _MISSING)]
    if failures:
        command, message = failures[0]
        raise PyctrError(f"ip {' '.join(str(a) for a in command)}: {message}")


def link(name: str) -> dict | None:
    """`ip -details addr show dev NAME` as ip's JSON (kind in linkinfo.info_kind, addresses in
    addr_info), or None when there is no such link in pyctr's netns."""
    if not link_exists(name):
        return None
    code, output = _ip(["-json", "-details", "addr", "show", "dev", name])
    if code != 0:
        if not link_exists(name):  # it went meanwhile
            return None
        raise PyctrError(f"ip addr show dev {name}: {output.strip()}")
    found = json.loads(output)
    return found[0] if found else None


def link_exists(name: str) -> bool:
    """Whether pyctr's netns has a link `name`, read from /proc/net/dev (no process, no socket).
    /proc/net shows the netns of the process reading it; a link name never holds a ':'."""
    with open("/proc/net/dev") as f:
        return any(line.partition(":")[0].strip() == name for line in f)


def wait_until_gone(name: str, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the link `name` to leave pyctr's netns; whether it did."""
    deadline = time.monotonic() + timeout
    while link_exists(name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def _failures(output: str, commands: list[list]) -> list[tuple[list, str]]:
    """(command, message) for each `Command failed -:N` in ip's output, the message being the
    lines before it; the whole output when ip failed before reading any command."""
    failures, message = [], []
    for line in output.splitlines():
        if line.startswith("Command failed -:"):
            number = int(line.rpartition(":")[2])
            failures.append((commands[number - 1], " ".join(message) or "failed"))
            message = []
        elif line.strip():
            message.append(line.strip())
    if not failures:
        failures.append((["-batch", "-"], " ".join(message) or "failed"))
    return failures


def _ip(args: list[str], script: str = "", pid: int | None = None) -> tuple[int, str]:
    """Run `ip ARGS` with `script` on its stdin, in the netns of process `pid` when given:
    (exit code, what it printed on stdout and stderr, in one). posix_spawn rather than
    subprocess, whose import alone (threading, selectors, locale) costs 4 ms of every start."""
    argv = [hosttools.tool("ip"), *args]
    stdin_r, stdin_w = os.pipe()
    output_r, output_w = os.pipe()
    try:
        child = _spawn(argv, pid, file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0),
                                                (os.POSIX_SPAWN_DUP2, output_w, 1),
                                                (os.POSIX_SPAWN_DUP2, output_w, 2)])
    except BaseException:
        os.close(stdin_w)
        os.close(output_r)
        raise
    finally:
        os.close(stdin_r)
        os.close(output_w)
    # The script, a few lines, fits in the pipe: written whole before the output is read.
    try:
        with open(stdin_w, "w") as stdin:
            stdin.write(script)
    except BrokenPipeError:
        pass  # ip stopped reading: what it printed says why
    with open(output_r) as output:
        printed = output.read()
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), printed


def _spawn(argv: list[str], pid: int | None, file_actions: list) -> int:
    """posix_spawn `argv`; in the netns of process `pid` when given: this thread enters that
    netns only while the child is made (a child starts in its parent's netns)."""
    if not pid:
        return _posix_spawn(argv, file_actions)
    from pyctr.runtime.syscalls import setns

    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target, _CLONE_NEWNET)
            try:
                return _posix_spawn(argv, file_actions)
            finally:
                setns(own, _CLONE_NEWNET)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _posix_spawn(argv: list[str], file_actions: list) -> int:
    # The C locale: run() reads ip's messages. Python ignores SIGPIPE and SIGXFSZ, and an
    # ignored signal stays ignored across exec: give the tool their defaults back, as subprocess does.
    return os.posix_spawn(argv[0], argv, {**os.environ, "LC_ALL": "C"}, file_actions=file_actions,
                          setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
