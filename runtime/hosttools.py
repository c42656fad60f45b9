"""Processes pyctr runs on the host as root, immune to the caller's directory and environment.

A container can write into the caller's working directory (`-v "$PWD":/src` is common), and
the caller's environment may point there too (PYTHONPATH, a PATH with "." or an empty entry).
So nothing pyctr runs may look there: Python starts isolated (-I: neither the working directory
nor the script's directory on sys.path, no PYTHON* variables, no user site), helpers start in /,
and host tools are found on a fixed system PATH, as a daemon's would be.
"""

import os
import sys

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def python(*args: str) -> list[str]:
    """The argv of a Python helper: this interpreter (an absolute path), isolated."""
    return [sys.executable, "-I", *args]


def pyctr_environment() -> dict[str, str]:
    """A helper's environment: only pyctr's own settings, and a fixed PATH; nothing of the
    caller's environment to follow."""
    return {k: v for k, v in os.environ.items() if k.startswith("PYCTR_")} | {"PATH": SYSTEM_PATH}


def spawn_detached(argv: list[str], env: dict[str, str], output: str | None, errors: str, keep_fd: int) -> None:
    """Exec `argv` as a daemon, and return once it is on its way: a grandchild (not ours to
    wait for) in its own session (no controlling terminal, no signal of the caller's), in /,
    stdin from /dev/null, stdout appended to the file `output` (None: /dev/null) and stderr to
    `errors` (mode 0600), and none of our descriptors but `keep_fd`."""
    child = os.fork()
    if child == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.chdir("/")
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(_append(output) if output else null, 1)
                os.dup2(_append(errors), 2)
                os.set_inheritable(keep_fd, True)
                os.closerange(3, keep_fd)
                os.closerange(keep_fd + 1, 65536)
                os.execve(argv[0], argv, env)
        finally:
            os._exit(0)
    os.waitpid(child, 0)


def _append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def tool(name: str) -> str:
    """The absolute path of a host tool such as nft or ip, never one in the working directory."""
    for directory in SYSTEM_PATH.split(":"):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    from pyctr.runtime.errors import PyctrError

    raise PyctrError(f"{name} not found in {SYSTEM_PATH}: install it (scripts/setup.sh lists the packages)")


def distrust_callers_path() -> None:
    """Drop from sys.path what the caller's directory and environment put there (the working
    directory of `python -m`/`-c`, PYTHONPATH), so that a module imported later (pyctr imports
    lazily) cannot come from a folder a container writes to. What was imported before this call
    was imported at the caller's own request."""
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed
        cwd = None
    untrusted = set()
    if sys.path and not sys.flags.safe_path and sys.path[0] in ("", cwd):
        untrusted.add(sys.path[0])
    if not sys.flags.ignore_environment and cwd is not None:
        # Python made each entry absolute at start-up (an empty one is the working directory).
        untrusted.update(os.path.join(cwd, entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep))
        untrusted.update(os.path.normpath(entry) for entry in set(untrusted))
    sys.path[:] = [entry for entry in sys.path if entry not in untrusted]


def leave_callers_directory() -> None:
    """For a process that outlives the command: no path of the caller's stays relative to it."""
    distrust_callers_path()
    os.chdir("/")
