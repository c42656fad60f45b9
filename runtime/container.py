"""The container record: its configuration (under --root) and its runtime state (under --state).

config.json is written at create time and holds Docker-shaped keys (Config, HostConfig,
NetworkSettings). state.json holds State{Status, Pid, ExitCode, ...}; a copy of the last
state is kept beside the config, so that after a reboot (an empty --state) a container shows
as exited and can still be removed.
"""

import os
import time

from pyctr.runtime import jsonstore
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError
from pyctr.runtime.settings import current as settings
from pyctr.runtime.settings import make_private

_ADJECTIVES = ("brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid",
               "merry", "nifty", "proud", "quirky", "sharp", "tender", "vivid", "witty", "zen")
_NOUNS = ("bardeen", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
          "meitner", "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak")

_boot_id: str | None = None


def boot_id() -> str:
    global _boot_id
    if _boot_id is None:  # read once: `ps` asks for every container, and it is fixed until a reboot
        with open("/proc/sys/kernel/random/boot_id") as f:
            _boot_id = f.read().strip()
    return _boot_id


def now_rfc3339() -> str:
    from pyctr.runtime import reaper  # one clock for the log entries and the records

    return reaper.now_rfc3339()


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; with the PID it names one process, even after PID reuse.
    Read with os.read, in three system calls where open() makes seven: `ps` reads one for
    every running container."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)  # the whole line (a few hundred bytes) in one read
        finally:
            os.close(fd)
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":  # a zombie has finished running
        return None
    return int(fields[19])


class Container:
    def __init__(self, config: dict, state: dict):
        self.config = config
        self.state = state

    # --- identity and places -------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.config["Id"]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.config["Name"]

    # The places are Paths for the commands that build on them; the read-only commands (ps,
    # inspect, logs) use the strings of file() and log_file, so they need not import pathlib.
    @property
    def dir(self) -> "Path":
        return settings().containers_dir / self.id

    @property
    def state_path(self) -> "Path":
        return settings().container_state_dir / f"{self.id}.json"

    @property
    def lock_path(self) -> "Path":
        return settings().locks_dir / f"{self.id}.lock"

    @property
    def log_path(self) -> "Path":
        return self.dir / f"{self.id}-json.log"

    @property
    def explain_log_path(self) -> "Path":
        """Where a detached container's monitor writes its --explain lines (its stderr is /dev/null)."""
        return self.dir / "explain.log"

    def file(self, *names: str) -> str:
        """A path in the container's folder, as a string."""
        return os.path.join(_record_dir(self.id), *names)

    @property
    def log_file(self) -> str:
        return self.file(f"{self.id}-json.log")

    @property
    def lower_dirs(self) -> list[str]:
        """The image's folders the overlay stacks, top first (one for an Alpine image; a
        container of an older pyctr has only "Rootfs")."""
        return self.config.get("LowerDirs") or [self.config["Rootfs"]]

    def make_dirs(self, image_root: dict | None = None) -> None:
        """The container's folder, 0700 whatever the umask: its layer may hold setuid files, which
        no host user may reach (Docker CVE-2021-41091). upper/ becomes the container's "/", so it
        takes the mode and owner of the image's root instead: `image_root` ({"Uid", "Gid",
        "Mode"}: a layered image's, from its top-most layer with a root entry), else those of
        the top folder of the stack."""
        from pyctr.runtime import explain

        explain.step("mkdir", "-p", "-m", "700", self.dir)
        make_private(self.dir)
        if image_root is None:
            st = os.stat(self.lower_dirs[0])
            image_root = {"Uid": st.st_uid, "Gid": st.st_gid, "Mode": st.st_mode & 0o7777}
        uid, gid, mode = image_root["Uid"], image_root["Gid"], image_root["Mode"]
        upper = self.dir / "upper"
        explain.step("mkdir", "-p", upper)
        upper.mkdir(exist_ok=True)
        explain.step("chown", f"{uid}:{gid}", upper)
        os.chown(upper, uid, gid)
        explain.step("chmod", f"{mode:o}", upper)
        os.chmod(upper, mode)
        subs = ("work", "merged")
        explain.step("mkdir", "-p", "-m", "700", *(self.dir / sub for sub in subs))
        for sub in subs:
            make_private(self.dir / sub)

    # --- state ---------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.state.get("Status", "created")

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def pid(self) -> int:
        return self.state.get("Pid", 0)

    def save_config(self) -> None:
        jsonstore.write_json(self.dir / "config.json", self.config, durable=True)

    def save_state(self, persist: bool = False) -> None:
        """Runtime state goes to --state; `persist` also keeps a copy under --root."""
        jsonstore.write_json(self.state_path, self.state)
        if persist:
            jsonstore.write_json(self.dir / "state.json", self.state)

    def update_state(self, persist: bool = False, **changes) -> None:
        """Change the state under the container's lock, on top of what is on disk now."""
        with jsonstore.locked(self.lock_path):
            self.state = _load_state(self) | changes
            self.save_state(persist)

    def refresh(self) -> "Container":
        """Tell the truth even if pyctr or the monitor was SIGKILLed: a `running` container whose
        PID 1 is gone has exited."""
        if self.running and self.state.get("Keeper"):
            _host_monitor_for(self)
        if self.running and not self.process_alive():
            # PID 1 is gone; a live monitor is about to record how it ended.
            deadline = time.monotonic() + 5.0
            while self.recorder_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
                self.state = _load_state(self)
                if not self.running:
                    return self
            with jsonstore.locked(self.lock_path):
                self.state = _load_state(self)
                if self.running and not self.process_alive():
                    self.state.update(Status="exited", Running=False, Pid=0,
                                      ExitCode=self.state.get("ExitCode") or 255,
                                      FinishedAt=now_rfc3339(),
                                      Error="the container's monitor died before recording its exit")
                    self.save_state(persist=True)
        return self

    def process_alive(self) -> bool:
        pid = self.state.get("Pid")
        if not pid or self.state.get("BootId") != boot_id():
            return False
        return process_start_time(pid) == self.state.get("PidStartTime")

    def monitor_alive(self) -> bool:
        pid = self.state.get("MonitorPid")
        if not pid or self.state.get("BootId") != boot_id():
            return False
        return process_start_time(pid) == self.state.get("MonitorStartTime")

    def recorder_alive(self) -> bool:
        """Whether someone lives who will record this container's exit: its monitor (for a
        detached container, its keeper), or the host monitor, which records a detached
        container's exit, and adopts its PID 1 when the keeper was killed."""
        return self.monitor_alive() or (bool(self.state.get("Keeper")) and _host_monitor_alive())

    # --- Docker's inspect shape ----------------------------------------------------------
    def inspect(self) -> dict:
        c = self.config
        s = self.state
        return {
            "Id": self.id,
            "Created": c["Created"],
            "Path": c["Path"],
            "Args": c["Args"],
            "State": {
                "Status": self.status,
                "Running": self.running,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": s.get("OOMKilled", False),
                "Dead": False,
                "Pid": s.get("Pid", 0) if self.running else 0,
                "ExitCode": s.get("ExitCode", 0),
                "Error": s.get("Error", ""),
                "StartedAt": s.get("StartedAt", "0001-01-01T00:00:00Z"),
                "FinishedAt": s.get("FinishedAt", "0001-01-01T00:00:00Z"),
            },
            "Image": c["ImageID"],
            "LogPath": self.log_file,
            "ExplainLog": self.file("explain.log"),
            "Name": "/" + self.name,
            "Driver": "overlay",
            "HostConfig": c["HostConfig"],
            "Config": c["Config"],
            "NetworkSettings": c.get("NetworkSettings") or empty_network_settings(),
            "GraphDriver": {"Name": "overlay", "Data": {
                "LowerDir": ":".join(self.lower_dirs), "UpperDir": self.file("upper"),
                "WorkDir": self.file("work"), "MergedDir": self.file("merged")}},
        }


_host_monitor_checked = False


def _host_monitor_for(c: Container) -> None:
    """A detached container's output and exit are collected by the host monitor: if it was
    killed, start another, which adopts the container from its keeper (once per command)."""
    global _host_monitor_checked
    if _host_monitor_checked or not c.monitor_alive():
        return
    _host_monitor_checked = True
    if _host_monitor_alive():
        return
    from pyctr.runtime import hostmonitor

    hostmonitor.ensure_running(settings().state_dir)


def _host_monitor_alive() -> bool:
    """Whether the host monitor of this state folder runs. It writes "PID START_TIME" into its
    lock file: read here without importing it (and fcntl), as `ps` would pay for that."""
    try:
        fd = os.open(os.path.join(settings().state_dir, "monitor.lock"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid, _, started = os.read(fd, 64).decode().partition(" ")
        finally:
            os.close(fd)
        return bool(pid) and process_start_time(int(pid)) == int(started)
    except (OSError, ValueError):
        return False


def empty_network_settings() -> dict:
    return {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "", "Ports": {},
            "Networks": {}}


def _containers_dir() -> str:
    return os.path.join(settings().root_dir, "containers")


def _record_dir(container_id: str) -> str:
    return os.path.join(_containers_dir(), container_id)


def _load_state(c: Container) -> dict:
    state = jsonstore.read_json(os.path.join(settings().state_dir, "containers", f"{c.id}.json"))
    if state is None:
        state = jsonstore.read_json(c.file("state.json"), {"Status": "created"})
    return state


def load(container_id: str) -> Container:
    config = jsonstore.read_json(os.path.join(_record_dir(container_id), "config.json"))
    if config is None:
        raise NotFoundError(f"No such container: {container_id}")
    c = Container(config, {})
    c.state = _load_state(c)
    return c


def all_ids() -> list[str]:
    try:
        return [e.name for e in os.scandir(_containers_dir())
                if e.is_dir() and os.path.exists(os.path.join(e.path, "config.json"))]
    except FileNotFoundError:
        return []


def list_all() -> list[Container]:
    result = []
    try:
        entries = list(os.scandir(_containers_dir()))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        try:
            result.append(load(entry.name).refresh())
        except (NotFoundError, NotADirectoryError, ValueError):
            continue  # not a container's folder, removed while we listed, or half-written by a crashed create
    result.sort(key=lambda c: c.config["Created"], reverse=True)
    return result


def find(ref: str) -> Container:
    """A full ID, a unique ID prefix, or a name (Docker's rules)."""
    if not ref:
        raise NotFoundError("No such container: ''")
    name = ref.lstrip("/")  # Docker shows names as /NAME
    if _valid_name(name):
        try:
            with open(os.path.join(settings().root_dir, "names", name)) as f:
                return load(f.read().strip()).refresh()
        except (FileNotFoundError, NotADirectoryError, NotFoundError):
            pass
    ids = all_ids()
    if ref in ids:
        return load(ref).refresh()
    matches = [i for i in ids if i.startswith(ref.lower())] if all(ch in "0123456789abcdef" for ch in ref.lower()) else []
    if len(matches) == 1:
        return load(matches[0]).refresh()
    if len(matches) > 1:
        raise PyctrError(f"multiple containers match the prefix {ref!r}; give more characters")
    raise NotFoundError(f"No such container: {ref}")


def new_id() -> str:
    return os.urandom(32).hex()


def reserve_name(name: str | None, container_id: str) -> str:
    """Names are claimed with O_EXCL files: unique without a global lock or a scan of all containers."""
    names = settings().root / "names"
    names.mkdir(parents=True, exist_ok=True)
    generated = name is None
    for attempt in range(50):
        if generated:
            # os.urandom rather than secrets/random: both cost milliseconds to import.
            a, b = os.urandom(2)
            name = f"{_ADJECTIVES[a % len(_ADJECTIVES)]}_{_NOUNS[b % len(_NOUNS)]}"
            if attempt > 10:
                name += f"_{os.urandom(2).hex()}"
        elif not _valid_name(name):
            raise PyctrError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        try:
            fd = os.open(names / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if not generated:
                owner = (names / name).read_text().strip()
                raise ConflictError(f'the container name "/{name}" is already in use by container "{owner}"')
            continue
        with os.fdopen(fd, "w") as f:
            f.write(container_id)
        return name
    raise PyctrError("could not generate a unique container name")


def release_name(name: str, container_id: str) -> None:
    path = settings().root / "names" / name
    try:
        if path.read_text().strip() == container_id:
            path.unlink()
    except FileNotFoundError:
        pass


_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _valid_name(name: str) -> bool:
    """Docker's [a-zA-Z0-9][a-zA-Z0-9_.-]*, without re (and enum with it: ~5 ms of `logs NAME`)."""
    return name[:1].isascii() and name[:1].isalnum() and _NAME_CHARACTERS.issuperset(name)
