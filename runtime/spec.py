"""The OCI runtime spec (config.json, runtime-spec 1.0 to 1.1) as one model every part reads.

`load(bundle)` reads and checks a bundle's config.json. Every field pyctr cannot honour is
refused here, at create, with its name (`linux.intelRdt: not supported by pyctr`); none is
ignored silently. Both front ends end here: `pyctr-oci create` reads the bundle a client
wrote, and `pyctr run` writes one (runtime/bundle.py) from the image and its flags.

Names follow the JSON (camelCase there, snake_case here); `raw` keeps the document as read.
"""

import os
import resource
from _signal import NSIG  # signal's enums would import enum and functools: ~2 ms of each create

from pyctr.runtime import jsonstore
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.syscalls import (MS_BIND, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
                                    MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_SHARED, MS_SILENT,
                                    MS_SLAVE, MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE, MS_DIRSYNC,
                                    MS_MANDLOCK, MS_LAZYTIME)

SPEC_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("1.0.", "1.1.")

NAMESPACE_TYPES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"}
# Our own annotations: what a Docker-style front end needs beyond the spec (README, "One core").
OVERLAY_ANNOTATION = "run.pyctr.rootfs.overlay"  # lowerdir=...,upperdir=...,workdir=... mounted at root.path
USER_ANNOTATION = "run.pyctr.user"  # Docker's USER[:GROUP], resolved in the container's /etc/passwd
PRIVILEGED_ANNOTATION = "run.pyctr.privileged"  # --privileged: the overlay without nodev


class SpecError(PyctrError):
    """A config.json pyctr cannot honour; the message starts with the field's name."""


def _fail(field: str, problem: str):
    raise SpecError(f"{field}: {problem}")


def _get(data: dict, key: str, kind, field: str, default=None):
    value = data.get(key, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool):
        _fail(field, "must be a number")
    if not isinstance(value, kind):
        _fail(field, f"must be {getattr(kind, '__name__', kind)}")
    return value


def _known(data: dict, field: str, allowed: set[str], refused: dict[str, str] | None = None) -> None:
    """Unknown keys are an error (a typo must not pass for an honoured setting), and so are
    keys pyctr knows it cannot honour."""
    for key in data:
        if refused and key in refused and data[key] not in (None, {}, [], ""):
            _fail(f"{field}.{key}" if field else key, refused[key])
        if key not in allowed and not (refused and key in refused):
            # The spec's extensibility rule: an unknown property is no error. Said, not silent.
            from pyctr.runtime import log

            log.warning(f"{field}.{key}: unknown field, ignored" if field else f"{key}: unknown field, ignored")


# --- process -------------------------------------------------------------------------------
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def _kernel_capabilities() -> set[str]:
    from pyctr.runtime import security

    return {"CAP_" + name for name in security.kernel_cap_names()}


class User:
    def __init__(self, data: dict, field: str):
        _known(data, field, {"uid", "gid", "umask", "additionalGids", "username"})
        self.uid = _get(data, "uid", int, f"{field}.uid", 0)
        self.gid = _get(data, "gid", int, f"{field}.gid", 0)
        self.umask = _get(data, "umask", int, f"{field}.umask")
        self.additional_gids = list(_get(data, "additionalGids", list, f"{field}.additionalGids", []))


class Rlimit:
    def __init__(self, data: dict, field: str):
        _known(data, field, {"type", "soft", "hard"})
        self.type = _get(data, "type", str, f"{field}.type", "")
        name = self.type.removeprefix("RLIMIT_")
        if not self.type.startswith("RLIMIT_") or not hasattr(resource, "RLIMIT_" + name):
            _fail(f"{field}.type", f"unknown resource limit {self.type!r}")
        self.resource = getattr(resource, "RLIMIT_" + name)
        self.soft = _get(data, "soft", int, f"{field}.soft", 0)
        self.hard = _get(data, "hard", int, f"{field}.hard", 0)
        if self.soft > self.hard:
            _fail(field, f"soft limit {self.soft} is above the hard limit {self.hard}")


class Process:
    def __init__(self, data: dict, field: str = "process"):
        self.raw = data
        _known(data, field, {"terminal", "consoleSize", "user", "args", "env", "cwd", "capabilities",
                             "rlimits", "noNewPrivileges", "oomScoreAdj", "apparmorProfile", "selinuxLabel"},
               refused={"commandLine": "Windows only", "ioPriority": "not supported by pyctr",
                        "scheduler": "not supported by pyctr", "execCPUAffinity": "not supported by pyctr"})
        self.terminal = _get(data, "terminal", bool, f"{field}.terminal", False)
        size = _get(data, "consoleSize", dict, f"{field}.consoleSize")
        self.console_size = (size.get("height", 0), size.get("width", 0)) if size else None
        self.user = User(_get(data, "user", dict, f"{field}.user", {}), f"{field}.user")
        self.args = [str(a) for a in _get(data, "args", list, f"{field}.args", [])]
        if not self.args:
            _fail(f"{field}.args", "must name the program to run")
        self.env = [str(e) for e in _get(data, "env", list, f"{field}.env", [])]
        self.cwd = _get(data, "cwd", str, f"{field}.cwd", "/")
        if not self.cwd.startswith("/"):
            _fail(f"{field}.cwd", f"must be an absolute path, not {self.cwd!r}")
        caps = _get(data, "capabilities", dict, f"{field}.capabilities")
        self.capabilities: dict[str, list[str]] | None = None
        if caps is not None:
            _known(caps, f"{field}.capabilities", set(CAPABILITY_SETS))
            known = _kernel_capabilities()
            self.capabilities = {}
            for name in CAPABILITY_SETS:
                values = _get(caps, name, list, f"{field}.capabilities.{name}", [])
                for cap in values:
                    if cap not in known:
                        _fail(f"{field}.capabilities.{name}", f"unknown capability {cap!r}")
                self.capabilities[name] = list(values)
        self.rlimits = [Rlimit(r, f"{field}.rlimits[{i}]")
                        for i, r in enumerate(_get(data, "rlimits", list, f"{field}.rlimits", []))]
        self.no_new_privileges = _get(data, "noNewPrivileges", bool, f"{field}.noNewPrivileges", False)
        self.oom_score_adj = _get(data, "oomScoreAdj", int, f"{field}.oomScoreAdj")
        if self.oom_score_adj is not None and not -1000 <= self.oom_score_adj <= 1000:
            _fail(f"{field}.oomScoreAdj", "must be between -1000 and 1000")
        for key, what in (("apparmorProfile", "AppArmor"), ("selinuxLabel", "SELinux")):
            if data.get(key):
                _fail(f"{field}.{key}", f"{what} is not available to pyctr on this host")

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(pair.partition("=")[::2] for pair in self.env)


# --- mounts --------------------------------------------------------------------------------
# Option -> (flags it sets, flags it clears), as mount(8) reads them.
MOUNT_FLAGS = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0), "mand": (MS_MANDLOCK, 0), "nomand": (0, MS_MANDLOCK),
    "atime": (0, MS_NOATIME), "noatime": (MS_NOATIME, 0),
    "diratime": (0, MS_NODIRATIME), "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME), "silent": (MS_SILENT, 0),
    "defaults": (0, 0),
}
PROPAGATION_FLAGS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


class Mount:
    def __init__(self, data: dict, field: str):
        _known(data, field, {"destination", "type", "source", "options"},
               refused={"uidMappings": "idmapped mounts per mount are not supported by pyctr",
                        "gidMappings": "idmapped mounts per mount are not supported by pyctr"})
        self.destination = _get(data, "destination", str, f"{field}.destination", "")
        if not self.destination:
            _fail(f"{field}.destination", "is required")
        self.type = _get(data, "type", str, f"{field}.type", "")
        self.source = _get(data, "source", str, f"{field}.source", "")
        self.options = [str(o) for o in _get(data, "options", list, f"{field}.options", [])]
        self.flags = 0  # MS_* to mount with
        self.propagation: list[int] = []  # applied one by one after the mount
        self.bind = self.type == "bind"
        self.recursive = False
        data_options = []
        for option in self.options:
            if option in ("bind", "rbind"):
                self.bind = True
                self.recursive = self.recursive or option == "rbind"
            elif option in MOUNT_FLAGS:
                set_flags, clear_flags = MOUNT_FLAGS[option]
                self.flags = (self.flags | set_flags) & ~clear_flags
            elif option in PROPAGATION_FLAGS:
                self.propagation.append(PROPAGATION_FLAGS[option])
            elif option in ("tmpcopyup", "idmap", "ridmap") or option.startswith("x-"):
                _fail(f"{field}.options", f"option {option!r} is not supported by pyctr")
            else:
                data_options.append(option)  # for the filesystem: mode=755, size=65536k, ...
        self.data = ",".join(data_options)
        if self.bind and not self.source:
            _fail(f"{field}.source", "a bind mount needs a source")
        if not self.bind and not self.type:
            _fail(f"{field}.type", "is required for a mount that is not a bind")


# --- linux ---------------------------------------------------------------------------------
class Namespace:
    def __init__(self, data: dict, field: str):
        _known(data, field, {"type", "path"})
        self.type = _get(data, "type", str, f"{field}.type", "")
        if self.type == "time":
            _fail(f"{field}.type", "time namespaces are not supported by pyctr")
        if self.type not in NAMESPACE_TYPES:
            _fail(f"{field}.type", f"unknown namespace type {self.type!r}")
        self.path = _get(data, "path", str, f"{field}.path") or None


class Device:
    def __init__(self, data: dict, field: str):
        _known(data, field, {"path", "type", "major", "minor", "fileMode", "uid", "gid"})
        self.path = _get(data, "path", str, f"{field}.path", "")
        if not self.path.startswith("/dev/") and self.path != "/dev":
            _fail(f"{field}.path", f"must be under /dev, not {self.path!r}")
        self.type = _get(data, "type", str, f"{field}.type", "")
        if self.type not in ("c", "b", "u", "p"):
            _fail(f"{field}.type", f"must be c, b, u or p, not {self.type!r}")
        self.major = _get(data, "major", int, f"{field}.major", 0)
        self.minor = _get(data, "minor", int, f"{field}.minor", 0)
        self.file_mode = _get(data, "fileMode", int, f"{field}.fileMode")
        self.uid = _get(data, "uid", int, f"{field}.uid")
        self.gid = _get(data, "gid", int, f"{field}.gid")


class Linux:
    def __init__(self, data: dict, field: str = "linux"):
        _known(data, field, {"namespaces", "uidMappings", "gidMappings", "devices", "resources",
                             "cgroupsPath", "sysctl", "maskedPaths", "readonlyPaths", "rootfsPropagation",
                             "seccomp", "mountLabel", "personality"},
               refused={"intelRdt": "not supported by pyctr", "timeOffsets": "not supported by pyctr",
                        "memoryPolicy": "not supported by pyctr", "netDevices": "not supported by pyctr"})
        self.namespaces = [Namespace(n, f"{field}.namespaces[{i}]")
                           for i, n in enumerate(_get(data, "namespaces", list, f"{field}.namespaces", []))]
        seen = set()
        for i, ns in enumerate(self.namespaces):
            if ns.type in seen:
                _fail(f"{field}.namespaces[{i}]", f"namespace {ns.type} is listed twice")
            seen.add(ns.type)
        uid_maps = _get(data, "uidMappings", list, f"{field}.uidMappings", [])
        gid_maps = _get(data, "gidMappings", list, f"{field}.gidMappings", [])
        self.uid_mappings = self.gid_mappings = []
        if uid_maps or gid_maps:  # userns is a large import: only for a spec that maps
            from pyctr.runtime import userns

            self.uid_mappings = userns.maps_from_spec(uid_maps, f"{field}.uidMappings") if uid_maps else []
            self.gid_mappings = userns.maps_from_spec(gid_maps, f"{field}.gidMappings") if gid_maps else []
        user = self.namespace("user")
        if (self.uid_mappings or self.gid_mappings) and (user is None or user.path):
            _fail(f"{field}.uidMappings", "mappings need a new user namespace in linux.namespaces")
        if user is not None and not user.path and not (self.uid_mappings and self.gid_mappings):
            _fail(f"{field}.namespaces", "a new user namespace needs linux.uidMappings and linux.gidMappings")
        self.devices = [Device(d, f"{field}.devices[{i}]")
                        for i, d in enumerate(_get(data, "devices", list, f"{field}.devices", []))]
        self.resources = _get(data, "resources", dict, f"{field}.resources", {})
        self.cgroups_path = _get(data, "cgroupsPath", str, f"{field}.cgroupsPath") or None
        self.sysctl = {str(k): str(v) for k, v in _get(data, "sysctl", dict, f"{field}.sysctl", {}).items()}
        self.masked_paths = list(_get(data, "maskedPaths", list, f"{field}.maskedPaths", []))
        self.readonly_paths = list(_get(data, "readonlyPaths", list, f"{field}.readonlyPaths", []))
        self.rootfs_propagation = _get(data, "rootfsPropagation", str, f"{field}.rootfsPropagation") or None
        if self.rootfs_propagation and self.rootfs_propagation not in PROPAGATION_FLAGS:
            _fail(f"{field}.rootfsPropagation", f"unknown propagation {self.rootfs_propagation!r}")
        self.seccomp = _get(data, "seccomp", dict, f"{field}.seccomp")
        if data.get("mountLabel"):
            _fail(f"{field}.mountLabel", "SELinux is not available to pyctr on this host")
        personality = _get(data, "personality", dict, f"{field}.personality")
        if personality and personality.get("domain", "LINUX") != "LINUX" or (personality or {}).get("flags"):
            _fail(f"{field}.personality", "only the LINUX domain without flags is supported by pyctr")

    def namespace(self, kind: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == kind), None)

    def new_namespace(self, kind: str) -> bool:
        ns = self.namespace(kind)
        return ns is not None and ns.path is None


# --- hooks ---------------------------------------------------------------------------------
HOOK_KINDS = {"prestart": "prestart", "createRuntime": "create_runtime", "createContainer": "create_container",
              "startContainer": "start_container", "poststart": "poststart", "poststop": "poststop"}


class Hook:
    def __init__(self, data: dict, field: str):
        _known(data, field, {"path", "args", "env", "timeout"})
        self.path = _get(data, "path", str, f"{field}.path", "")
        if not self.path.startswith("/"):
            _fail(f"{field}.path", f"must be an absolute path, not {self.path!r}")
        self.args = [str(a) for a in _get(data, "args", list, f"{field}.args", [])] or [self.path]
        self.env = [str(e) for e in _get(data, "env", list, f"{field}.env", [])]
        self.timeout = _get(data, "timeout", int, f"{field}.timeout")
        if self.timeout is not None and self.timeout <= 0:
            _fail(f"{field}.timeout", "must be positive")


class Hooks:
    def __init__(self, data: dict, field: str = "hooks"):
        _known(data, field, set(HOOK_KINDS))
        for key, attribute in HOOK_KINDS.items():
            entries = _get(data, key, list, f"{field}.{key}", [])
            setattr(self, attribute, [Hook(h, f"{field}.{key}[{i}]") for i, h in enumerate(entries)])


# --- the whole document --------------------------------------------------------------------
class Root:
    def __init__(self, data: dict, bundle: str, field: str = "root"):
        _known(data, field, {"path", "readonly"})
        path = _get(data, "path", str, f"{field}.path", "")
        if not path:
            _fail(f"{field}.path", "is required")
        self.path = os.path.normpath(os.path.join(bundle, path))
        self.readonly = _get(data, "readonly", bool, f"{field}.readonly", False)


class Spec:
    def __init__(self, data: dict, bundle: str):
        if not isinstance(data, dict):
            _fail("config.json", "must hold a JSON object")
        _known(data, "", {"ociVersion", "process", "root", "mounts", "hostname", "domainname", "annotations",
                          "hooks", "linux"},
               refused={"solaris": "not Linux", "windows": "not Linux", "vm": "VM-based containers are not "
                        "supported by pyctr", "zos": "not Linux"})
        self.raw = data
        self.bundle = os.path.abspath(bundle)
        self.oci_version = _get(data, "ociVersion", str, "ociVersion", "")
        if not self.oci_version.startswith(SUPPORTED_VERSIONS):
            _fail("ociVersion", f"{self.oci_version!r} is not a runtime-spec version pyctr reads (1.0 to 1.1)")
        process = _get(data, "process", dict, "process")
        self.process = Process(process) if process is not None else None
        self.root = Root(_get(data, "root", dict, "root", {}), self.bundle)
        self.mounts = [Mount(m, f"mounts[{i}]") for i, m in enumerate(_get(data, "mounts", list, "mounts", []))]
        self.hostname = _get(data, "hostname", str, "hostname")
        self.domainname = _get(data, "domainname", str, "domainname")
        self.annotations = {str(k): str(v) for k, v in _get(data, "annotations", dict, "annotations", {}).items()}
        self.hooks = Hooks(_get(data, "hooks", dict, "hooks", {}))
        self.linux = Linux(_get(data, "linux", dict, "linux", {}))
        if (self.hostname or self.domainname) and self.linux.namespace("uts") is None:
            _fail("hostname", "setting a hostname needs a uts namespace of the container's own in linux.namespaces")
        if self.linux.sysctl:
            self._check_sysctls()

    def _check_sysctls(self) -> None:
        """Only those the container's own namespaces cover, as runc allows: never the host's."""
        for key in self.linux.sysctl:
            ipc = key.startswith(("kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue."))
            net = key.startswith("net.")
            uts = key in ("kernel.hostname", "kernel.domainname")
            if ipc and self.linux.namespace("ipc") is None:
                _fail(f"linux.sysctl.{key}", "needs an ipc namespace of the container's own")
            elif net and self.linux.namespace("network") is None:
                _fail(f"linux.sysctl.{key}", "needs a network namespace of the container's own")
            elif uts and self.linux.namespace("uts") is None:
                _fail(f"linux.sysctl.{key}", "needs a uts namespace of the container's own")
            elif not (ipc or net or uts):
                _fail(f"linux.sysctl.{key}", "is not namespaced: it would change the host")


def load(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = jsonstore.loads(f.read())  # json's decoder imports re and enum: ~7 ms of each create
    except FileNotFoundError:
        raise SpecError(f"config.json: not found in the bundle {bundle}") from None
    except ValueError as e:  # json.JSONDecodeError, or UnicodeDecodeError
        raise SpecError(f"config.json: not valid JSON: {e}") from None
    return Spec(data, bundle)


def signal_number(name: str) -> int:
    """runc's kill accepts KILL, SIGKILL and 9."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if number <= 0 or number >= NSIG:
            raise PyctrError(f"invalid signal {name!r}")
        return number
    import signal

    try:
        return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise PyctrError(f"invalid signal {name!r}") from None


# --- `pyctr-oci spec`: a starting config.json, as `runc spec` writes ------------------------
DEFAULT_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
DEFAULT_MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                        "/proc/scsi", "/sys/devices/virtual/powercap"]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]


def default_spec() -> dict:
    return {
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {name: list(DEFAULT_CAPABILITIES) for name in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyctr",
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }


def features() -> dict:
    """`pyctr-oci features`: what this runtime honours, in runc's shape (runtime-spec features.md)."""
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": sorted([*MOUNT_FLAGS, *PROPAGATION_FLAGS, "bind", "rbind"]),
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": sorted(_kernel_capabilities()),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                                     "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                                     "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                                      "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runc.version": "pyctr", OVERLAY_ANNOTATION: "supported",
                        USER_ANNOTATION: "supported", PRIVILEGED_ANNOTATION: "supported"},
    }
