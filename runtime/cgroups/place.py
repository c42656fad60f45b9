"""Where a container's cgroup lies in each hierarchy, from the OCI `linux.cgroupsPath`.

  None or ""   pyctr/<id> under each hierarchy's root (the Docker-style front end's place);
  "/a/b"       a/b under each hierarchy's root ("relative to the cgroups mount point", the spec);
  "a/b"        relative to a runtime-determined place: as runc, the runtime's own cgroup in each
               v1 hierarchy, and the parent of its own cgroup in the unified one (a cgroup2 folder
               that holds processes cannot delegate controllers to children).
A relative path depends on the calling process, so the place is kept as `spec` (a JSON-able
dict, with which parents pyctr made) for the later commands, which run as other processes.
"""

from pyctr.runtime.errors import PyctrError

PARENT = "pyctr"
UNIFIED = "unified"  # the cgroup2 hierarchy's key, beside the v1 controllers' names


class Place:
    def __init__(self, cgroups_path: str | None, common: str, per_key: dict[str, str] | None = None,
                 made: dict[str, int] | None = None):
        self.cgroups_path = cgroups_path  # as the spec gave it; None for pyctr's own place
        self.common = common  # the path under a hierarchy's root, without a leading /
        self.per_key = dict(per_key or {})  # hierarchies where it differs (relative paths)
        self.made = dict(made or {})  # key -> how many parents of the leaf pyctr made there

    @classmethod
    def default(cls, container_id: str) -> "Place":
        return cls(None, f"{PARENT}/{container_id}")

    @classmethod
    def of(cls, container_id: str, cgroups_path, own: dict[str, str] | None = None) -> "Place":
        """The place for `linux.cgroupsPath`, or a `spec` kept from an earlier command."""
        if isinstance(cgroups_path, dict):
            return cls(cgroups_path.get("cgroupsPath"), cgroups_path["common"], cgroups_path.get("perKey"),
                       cgroups_path.get("made"))
        if not cgroups_path:
            return cls.default(container_id)
        if not isinstance(cgroups_path, str) or ".." in cgroups_path.split("/") or "\0" in cgroups_path:
            raise PyctrError(f"linux.cgroupsPath: {cgroups_path!r} is not a path inside the cgroup hierarchy")
        inner = _relative(cgroups_path)
        if not inner:
            raise PyctrError("linux.cgroupsPath: '/' is the root cgroup, which a container cannot have")
        if cgroups_path.startswith("/"):
            return cls(cgroups_path, inner)
        own = own_cgroups() if own is None else own
        per_key = {}
        for key, base in own.items():
            if key == UNIFIED:
                base = _relative(base).rpartition("/")[0]  # its parent
            per_key[key] = _relative(base, inner)
        return cls(cgroups_path, inner, per_key)

    @property
    def is_default(self) -> bool:
        return self.cgroups_path is None

    def inner(self, key: str) -> str:
        return self.per_key.get(key, self.common)

    @property
    def spec(self) -> dict | None:
        """What a later command passes to `for_spec` to find this cgroup (None: pyctr's own)."""
        if self.is_default:
            return None
        return {"cgroupsPath": self.cgroups_path, "common": self.common, "perKey": self.per_key,
                "made": self.made}


def _relative(*paths: str) -> str:
    """The paths joined, without empty or "." parts, nor a leading "/": "/a//b/./c" is "a/b/c"."""
    return "/".join(part for path in paths for part in path.split("/") if part not in ("", "."))


def own_cgroups(text: str | None = None) -> dict[str, str]:
    """This process's cgroup in each hierarchy (/proc/self/cgroup): v1 controller -> path, and
    UNIFIED -> its cgroup2 path. Co-mounted controllers (cpu,cpuacct) each get the path."""
    if text is None:
        with open("/proc/self/cgroup") as f:
            text = f.read()
    own = {}
    for line in text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            own[UNIFIED] = path
        else:
            for controller in controllers.split(","):
                if controller and not controller.startswith("name="):
                    own[controller] = path
    return own
