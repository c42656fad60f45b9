"""Where pyctr keeps things: --root for persistent data, --state for runtime state."""

import os
from pathlib import Path

DEFAULT_ROOT = "/var/lib/pyctr"
DEFAULT_STATE = "/run/pyctr"


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
    return _current


def current() -> Settings:
    return _current or configure()
