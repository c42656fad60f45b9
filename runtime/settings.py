"""Where pyctr keeps things: --root for persistent data, --state for runtime state.

Both are for root alone (0700, whatever the umask): the root holds container layers, in which an
image or a container may leave setuid-root programs that a host user could otherwise run (Docker
CVE-2021-41091), and configs and logs; the state holds PIDs and locks. No other user needs to
enter them: overlay and bind mounts do not walk these paths again as the container's user.
"""

import os
import stat
from pathlib import Path

PRIVATE = 0o700
ROOT_DIRS = ("containers", "images", "networks", "names")
STATE_DIRS = ("containers", "locks")

DEFAULT_ROOT = "/var/lib/pyctr"
DEFAULT_STATE = "/run/pyctr"


def make_private(path: Path) -> None:
    """mkdir -p PATH with mode 0700, and chmod: the umask may have taken bits off, or an older
    pyctr made it 0755."""
    path.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE)


class Settings:
    __slots__ = ("root", "state")

    def __init__(self, root: Path, state: Path):
        self.root = root  # images, container layers, configs, logs, network configs
        self.state = state  # runtime state: pids, locks

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    @property
    def networks_dir(self) -> Path:
        return self.root / "networks"

    @property
    def container_state_dir(self) -> Path:
        return self.state / "containers"

    @property
    def locks_dir(self) -> Path:
        return self.state / "locks"

    def secure(self) -> None:
        """Make (or fix, in a store of an older pyctr) the root, the state and their folders 0700.
        Once done, this costs one stat each."""
        for top, subdirs in ((self.root, ROOT_DIRS), (self.state, STATE_DIRS)):
            try:
                if stat.S_IMODE(os.stat(top).st_mode) == PRIVATE:
                    continue
            except FileNotFoundError:
                pass
            for path in (top, *(top / sub for sub in subdirs)):
                make_private(path)
            if top == self.root:
                for entry in os.scandir(self.containers_dir):
                    if entry.is_dir(follow_symlinks=False):
                        os.chmod(entry.path, PRIVATE)


_current: Settings | None = None


def configure(root: str | None = None, state: str | None = None) -> Settings:
    global _current
    _current = Settings(
        root=Path(root or os.environ.get("PYCTR_ROOT") or DEFAULT_ROOT),
        state=Path(state or os.environ.get("PYCTR_STATE") or DEFAULT_STATE),
    )
    # Processes pyctr starts (the monitor, hooks) see the same places.
    os.environ["PYCTR_ROOT"] = str(_current.root)
    os.environ["PYCTR_STATE"] = str(_current.state)
    try:
        _current.secure()
    except PermissionError:
        pass  # not root: every later step that writes says so in one line
    return _current


def current() -> Settings:
    return _current or configure()
