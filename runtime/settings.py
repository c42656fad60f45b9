"""Where pyctr keeps things: --root for persistent data, --state for runtime state.

Both are for root alone (0700, whatever the umask): the root holds container layers, in which an
image or a container may leave setuid-root programs that a host user could otherwise run (Docker
CVE-2021-41091), and configs and logs; the state holds PIDs and locks. No other user needs to
enter them: overlay and bind mounts do not walk these paths again as the container's user.
"""

import os
import stat

PRIVATE = 0o700
ROOT_DIRS = ("containers", "images", "networks", "names")
STATE_DIRS = ("containers", "locks")

DEFAULT_ROOT = "/var/lib/pyctr"
DEFAULT_STATE = "/run/pyctr"


def make_private(path: "str | os.PathLike") -> None:
    """mkdir -p PATH with mode 0700, and chmod: the umask may have taken bits off, or an older
    pyctr made it 0755."""
    os.makedirs(path, mode=PRIVATE, exist_ok=True)
    os.chmod(path, PRIVATE)


def _path(text: str) -> "Path":
    from pathlib import Path  # here, not at the top: see Settings

    return Path(text)


class Settings:
    """The two places as strings, and as Paths for the commands that build paths. The read-only
    commands (ps, inspect, logs) use the strings: importing pathlib would cost `pyctr ps` a
    tenth of its time."""

    __slots__ = ("root_dir", "state_dir")

    def __init__(self, root_dir: str, state_dir: str):
        self.root_dir = root_dir  # images, container layers, configs, logs, network configs
        self.state_dir = state_dir  # runtime state: pids, locks

    @property
    def root(self) -> "Path":
        return _path(self.root_dir)

    @property
    def state(self) -> "Path":
        return _path(self.state_dir)

    @property
    def images_dir(self) -> "Path":
        return self.root / "images"

    @property
    def containers_dir(self) -> "Path":
        return self.root / "containers"

    @property
    def networks_dir(self) -> "Path":
        return self.root / "networks"

    @property
    def container_state_dir(self) -> "Path":
        return self.state / "containers"

    @property
    def locks_dir(self) -> "Path":
        return self.state / "locks"

    def secure(self) -> None:
        """Make (or fix, in a store of an older pyctr) the root, the state and their folders 0700.
        Once done, this costs one stat each."""
        for top, subdirs in ((self.root_dir, ROOT_DIRS), (self.state_dir, STATE_DIRS)):
            try:
                if stat.S_IMODE(os.stat(top).st_mode) == PRIVATE:
                    continue
            except FileNotFoundError:
                pass
            for path in (top, *(os.path.join(top, sub) for sub in subdirs)):
                make_private(path)
            if top == self.root_dir:
                for entry in os.scandir(os.path.join(top, "containers")):
                    if entry.is_dir(follow_symlinks=False):
                        os.chmod(entry.path, PRIVATE)


_current: Settings | None = None


def configure(root: str | None = None, state: str | None = None) -> Settings:
    global _current
    _current = Settings(
        root_dir=root or os.environ.get("PYCTR_ROOT") or DEFAULT_ROOT,
        state_dir=state or os.environ.get("PYCTR_STATE") or DEFAULT_STATE,
    )
    # Processes pyctr starts (the monitor, hooks) see the same places.
    os.environ["PYCTR_ROOT"] = _current.root_dir
    os.environ["PYCTR_STATE"] = _current.state_dir
    try:
        _current.secure()
    except PermissionError:
        pass  # not root: every later step that writes says so in one line
    return _current


def current() -> Settings:
    return _current or configure()
