"""One OCI container's state folder under the runtime's root (`--root`, /run/pyctr-oci).

    ROOT/ID/state.json   who it is: pid (with its start time), bundle, annotations, cgroup
    ROOT/ID/config.json  the spec as create read it (hooks and cgroups need it after the bundle moves)
    ROOT/ID/exec.fifo    while created: the init waits to open it, `start` opens it (runc's exec.fifo)
    ROOT/ID/lock         commands on one container take turns
    ROOT/.seccomp/       seccomp filters as libseccomp compiled them (no id starts with a dot)

The status is worked out, never stored: a live init with the fifo is "created", without it
"running" (or "paused" once frozen), and a dead or zombie one "stopped".
"""

import os

from pyctr.runtime import jsonstore
from pyctr.runtime.container import process_start_time
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError

DEFAULT_ROOT = "/run/pyctr-oci"
_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")


def seccomp_cache(root: str) -> str:
    """Where compiled seccomp filters are kept: compiling podman's profile takes ~20 ms, and each
    container of a client such as podman has the same one (seccomp.to_program checks the source)."""
    return os.path.join(root, ".seccomp")


def check_id(container_id: str) -> None:
    """[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}, checked without re (nor is pathlib used here): with
    what they import, they were ~4 ms of each short pyctr-oci command."""
    if not container_id:
        raise PyctrError("container id cannot be empty")
    if not (container_id[0].isascii() and container_id[0].isalnum() and len(container_id) <= 1024
            and _ID_CHARACTERS.issuperset(container_id)):
        raise PyctrError(f"invalid container id {container_id!r}")


class StateDir:
    def __init__(self, root: str, container_id: str):
        check_id(container_id)
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.state_path = os.path.join(self.dir, "state.json")
        self.config_path = os.path.join(self.dir, "config.json")
        self.fifo_path = os.path.join(self.dir, "exec.fifo")
        self.lock = jsonstore.locked(os.path.join(self.dir, "lock"))
        self.record: dict = {}

    # --- making and finding ------------------------------------------------------------------
    def make(self) -> None:
        os.makedirs(os.path.dirname(self.dir), mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.dir, mode=0o711)  # searchable, for the init's fifo; ROOT itself is 0700
        except FileExistsError:
            raise ConflictError(f"container with id {self.id} already exists") from None
        os.chmod(self.dir, 0o711)  # whatever the umask

    def load(self) -> "StateDir":
        record = jsonstore.read_json(self.state_path)
        if record is None:
            raise NotFoundError(f"container {self.id} does not exist")
        self.record = record
        return self

    def save(self, **changes) -> None:
        self.record.update(changes)
        write_private_json(self.state_path, self.record)


    # --- what it is now ----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.record.get("pid", 0)

    def alive(self) -> bool:
        """The init (or the program it became) still runs: same PID and start time, not a zombie."""
        return bool(self.pid) and process_start_time(self.pid) == self.record.get("pidStartTime")

    def status(self) -> str:
        if self.record.get("creating"):
            return "creating" if self.alive() or not self.pid else "stopped"
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo_path):
            return "created"
        return "paused" if self.record.get("paused") else "running"

    def oci_state(self) -> dict:
        """The state the runtime spec defines (`state ID`, and every hook's stdin)."""
        status = self.status()
        state = {"ociVersion": self.record.get("ociVersion", "1.1.0"), "id": self.id, "status": status,
                 "bundle": self.record.get("bundle", ""), "annotations": self.record.get("annotations", {})}
        if status != "stopped":
            state["pid"] = self.pid
        return state


def all_ids(root: str) -> list[str]:
    try:
        return sorted(name for name in os.listdir(root) if os.path.exists(os.path.join(root, name, "state.json")))
    except FileNotFoundError:
        return []


def write_private_json(path: str, data) -> None:
    """0600 whatever the umask: the folder is searchable (see make), its files are root's alone.
    Compact, as runc's: only programs read them."""
    old = os.umask(0o077)
    try:
        jsonstore.write_json(path, data, compact=True)
    finally:
        os.umask(old)
