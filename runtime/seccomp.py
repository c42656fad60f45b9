"""Seccomp: Docker's profiles, turned into the OCI runtime spec's linux.seccomp, compiled by libseccomp.

Each step is usable alone (an OCI runtime starts at to_program with its config.json's linux.seccomp):

    profile_for(security_opts)  SecurityOpt -> a profile in Docker's format, or None (unconfined)
    to_oci(profile, caps)       -> linux.seccomp for this machine and capability set: Docker's
                                   includes/excludes (caps, arches, minKernel) and archMap resolved
    to_program(linux_seccomp)   -> a Program: the BPF that libseccomp compiles (Filter), and
                                   Program.load(), the last step before execve

libseccomp takes ~50 ms to import, build and compile Docker's profile for three arches (x86_64,
x86, x32), so programs are cached under the state folder, each beside the linux.seccomp and the
libseccomp version it was compiled from: a start then reads ~20 KB and makes one seccomp(2)
call, as runc does after its own compilation. The binding (pyseccomp) is imported only on a
cache miss.
"""

import os

from pyctr.runtime import explain, jsonstore
from pyctr.runtime.errors import PyctrError

# json and pathlib are not imported: with re and enum, ~10 ms of each pyctr-oci create
DEFAULT_PROFILE = os.path.join(os.path.dirname(__file__), "seccomp_default.json")
DEFAULT_ERRNO = 1  # EPERM, as runc when a profile names no errnoRet

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
             "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
          "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
          "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
          "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
          "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64")
FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")

# uname -m -> (the arch name Docker's includes/excludes use, libseccomp's name for it)
_MACHINES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"), "i686": ("x86", "SCMP_ARCH_X86"),
    "i386": ("x86", "SCMP_ARCH_X86"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"), "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"), "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"), "loongarch64": ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
}


class ProfileError(PyctrError):
    """A seccomp profile that cannot be used: one line, exit 125, at create."""


# --- SecurityOpt -> profile ------------------------------------------------------------------
def split_security_opt(opt: str) -> tuple[str, str | None]:
    """Docker's syntax: KEY=VALUE, or KEY:VALUE; no-new-privileges alone has no value."""
    key, sep, value = opt.partition("=")
    if not sep and key != "no-new-privileges":
        key, sep, value = opt.partition(":")
    return key, value if sep else None


def _setting(security_opts: list[str] | None) -> str:
    """builtin (Docker's default), unconfined, or a profile's JSON: the last seccomp= wins."""
    setting = "builtin"
    for opt in security_opts or ():
        key, value = split_security_opt(opt)
        if key == "seccomp" and value:
            setting = value
    return setting


def profile_for(security_opts: list[str] | None) -> dict | None:
    """The profile a container's HostConfig.SecurityOpt asks for: Docker's default unless it says
    `seccomp=unconfined` (None) or carries a profile (`seccomp=` and the profile's JSON)."""
    setting = _setting(security_opts)
    if setting == "unconfined":
        return None
    if setting == "builtin":
        return default_profile()
    return jsonstore.loads(setting)


def default_profile() -> dict:
    return jsonstore.read_json(DEFAULT_PROFILE)


def for_container(host_config: dict, caps: list[str]) -> "Program | None":
    """The compiled filter for a container's processes (PID 1 and every exec), or None when
    unconfined. --privileged means unconfined, as in Docker."""
    if host_config.get("Privileged"):
        return None
    opts = host_config.get("SecurityOpt")
    setting = _setting(opts)
    if setting == "unconfined":
        return None
    label = "Docker's default profile" if setting == "builtin" else "the profile given with --security-opt"
    return to_program(to_oci(profile_for(opts), caps), label, pyctr_cache())


def check_security_opts(security_opts: list[str], caps: list[str], privileged: bool) -> None:
    """At create: compile a user's profile for the container's capabilities, so that whatever
    libseccomp refuses is refused now, in one line (and the start finds it in the cache)."""
    if privileged or not any(split_security_opt(o)[0] == "seccomp" for o in security_opts):
        return
    for_container({"SecurityOpt": security_opts}, caps)


# --- Docker's format -> the OCI runtime spec's linux.seccomp ---------------------------------
def to_oci(profile: dict, caps: list[str], machine: str | None = None,
           kernel: str | None = None) -> dict:
    """Resolve a Docker-format profile for one machine and one capability set (the bounding set,
    as Docker compares it). `caps` are names as pyctr keeps them (SYS_ADMIN) or CAP_SYS_ADMIN."""
    check_profile(profile)
    machine = machine or os.uname().machine
    kernel = kernel or os.uname().release
    arch, scmp_arch = _MACHINES.get(machine, (machine, None))
    held = {c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in caps}

    architectures = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == scmp_arch:
            architectures = [scmp_arch, *(entry.get("subArchitectures") or [])]
    model = {"defaultAction": profile["defaultAction"], "architectures": architectures, "syscalls": []}
    for key in ("defaultErrnoRet", "flags"):
        if profile.get(key) is not None:
            model[key] = profile[key]

    for rule in profile.get("syscalls") or []:
        if not _applies(rule, arch, held, kernel):
            continue
        names = rule.get("names") or [rule["name"]]
        syscall = {"names": list(names), "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            syscall["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            syscall["args"] = [{"index": a["index"], "value": a.get("value", 0),
                                "valueTwo": a.get("valueTwo", 0), "op": a["op"]} for a in rule["args"]]
        model["syscalls"].append(syscall)
    return model


def _applies(rule: dict, arch: str, held: set[str], kernel: str) -> bool:
    """Docker's semantics: every included cap must be held, no excluded one; the native arch
    must be among included arches and not among excluded ones; minKernel against uname -r."""
    excludes, includes = rule.get("excludes") or {}, rule.get("includes") or {}
    if arch in (excludes.get("arches") or ()):
        return False
    if held & set(excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and _kernel_at_least(kernel, excludes["minKernel"]):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if not set(includes.get("caps") or ()) <= held:
        return False
    if includes.get("minKernel") and not _kernel_at_least(kernel, includes["minKernel"]):
        return False
    return True


def _version(text: str) -> tuple[int, int]:
    """MAJOR.MINOR of "4.8" or of a release such as "6.1.0-13-amd64"."""
    import re

    match = re.match(r"(\d+)\.(\d+)", text)
    if not match:
        raise ValueError(text)
    return int(match.group(1)), int(match.group(2))


def _kernel_at_least(release: str, minimum: str) -> bool:
    return _version(release) >= _version(minimum)


# --- validation --------------------------------------------------------------------------------
def check_profile(profile) -> None:
    """Refuse, in one line, what Docker or runc would refuse, and what pyctr cannot honour."""
    def fail(where: str, problem: str):
        raise ProfileError(f"invalid seccomp profile: {where}: {problem}")

    def check_keys(obj, allowed: set[str], where: str):
        if not isinstance(obj, dict):
            fail(where, "must be an object")
        unknown = sorted(set(obj) - allowed - {"comment"})
        if unknown:
            fail(where, f"unknown field {unknown[0]!r}")

    def check_names(values, where: str, known=None):
        if values is None:
            return
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            fail(where, "must be a list of names")
        for value in values:
            if known is not None and value not in known:
                fail(where, f"unknown name {value!r}")

    def check_number(value, where: str, limit: int):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            fail(where, f"must be a whole number from 0 to {limit}")

    def check_action(action, errno_ret, where: str):
        if action == "SCMP_ACT_NOTIFY":
            fail(where, "SCMP_ACT_NOTIFY needs a seccomp agent, which pyctr does not have")
        if action not in ACTIONS:
            fail(where, f"unknown action {action!r}")
        if errno_ret is not None:
            check_number(errno_ret, where + ".errnoRet", 4095)

    def check_filter(obj, where: str):
        if obj is None:
            return
        check_keys(obj, {"caps", "arches", "minKernel"}, where)
        check_names(obj.get("caps"), where + ".caps")
        check_names(obj.get("arches"), where + ".arches")
        if obj.get("minKernel") is not None:
            try:
                _version(str(obj["minKernel"]))
            except ValueError:
                fail(where + ".minKernel", f"not a kernel version: {obj['minKernel']!r}")

    check_keys(profile, {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls",
                         "flags", "listenerPath", "listenerMetadata"}, "the profile")
    if not profile.get("defaultAction"):
        fail("defaultAction", "missing (say SCMP_ACT_ALLOW for a deny-list, or use seccomp=unconfined)")
    check_action(profile["defaultAction"], profile.get("defaultErrnoRet"), "defaultAction")
    if profile.get("listenerPath"):
        fail("listenerPath", "a seccomp agent is not supported")
    check_names(profile.get("flags"), "flags", FLAGS)
    if profile.get("architectures") and profile.get("archMap"):
        fail("the profile", "both 'architectures' and 'archMap' are given; use one")
    check_names(profile.get("architectures"), "architectures", ARCHES)
    arch_map = profile.get("archMap") or []
    if not isinstance(arch_map, list):
        fail("archMap", "must be a list")
    for i, entry in enumerate(arch_map):
        check_keys(entry, {"architecture", "subArchitectures"}, f"archMap[{i}]")
        if entry.get("architecture") not in ARCHES:
            fail(f"archMap[{i}].architecture", f"unknown name {entry.get('architecture')!r}")
        check_names(entry.get("subArchitectures"), f"archMap[{i}].subArchitectures", ARCHES)

    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        fail("syscalls", "must be a list")
    for i, rule in enumerate(syscalls):
        where = f"syscalls[{i}]"
        check_keys(rule, {"name", "names", "action", "errnoRet", "args", "includes", "excludes"}, where)
        if rule.get("name") and rule.get("names"):
            fail(where, "both 'name' and 'names' are given; use one")
        if not (rule.get("names") or rule.get("name")):
            fail(where, "names no syscall")
        if rule.get("name") is not None and not isinstance(rule["name"], str):
            fail(where + ".name", "must be a string")
        check_names(rule.get("names"), where + ".names")
        check_action(rule.get("action"), rule.get("errnoRet"), where + ".action")
        args = rule.get("args") or []
        if not isinstance(args, list):
            fail(where + ".args", "must be a list of conditions")
        for j, arg in enumerate(args):
            check_keys(arg, {"index", "value", "valueTwo", "op"}, f"{where}.args[{j}]")
            check_number(arg.get("index"), f"{where}.args[{j}].index", 5)
            check_number(arg.get("value", 0), f"{where}.args[{j}].value", 2**64 - 1)
            check_number(arg.get("valueTwo", 0), f"{where}.args[{j}].valueTwo", 2**64 - 1)
            if arg.get("op") not in OPERATORS:
                fail(f"{where}.args[{j}].op", f"unknown operator {arg.get('op')!r}")
        check_filter(rule.get("includes"), where + ".includes")
        check_filter(rule.get("excludes"), where + ".excludes")


def load_profile_file(path: str) -> str:
    """`--security-opt seccomp=PATH`: the file's JSON, compact (Docker keeps the content, not the path)."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ProfileError(f"opening seccomp profile ({path}) failed: {e.strerror}")
    try:
        profile = jsonstore.loads(text)
    except ValueError as e:
        raise ProfileError(f"seccomp profile ({path}) is not valid JSON: {e}")
    try:
        check_profile(profile)
    except ProfileError as e:
        raise ProfileError(f"{path}: {e}")
    return jsonstore.dumps(profile, separators=(",", ":"))


# --- linux.seccomp -> a program, compiled once ------------------------------------------------
class Program:
    """Classic BPF as libseccomp compiles it, and the seccomp(2) flags to load it with."""

    def __init__(self, bpf: bytes, linux_seccomp: dict, label: str = "a seccomp profile"):
        if not bpf or len(bpf) % 8:
            raise ProfileError("seccomp: the compiled filter is damaged")
        self.bpf = bpf
        self.flags = 0
        from pyctr.runtime import syscalls

        for flag in linux_seccomp.get("flags") or ():
            self.flags |= {"SECCOMP_FILTER_FLAG_LOG": syscalls.SECCOMP_FILTER_FLAG_LOG,
                           "SECCOMP_FILTER_FLAG_SPEC_ALLOW": syscalls.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                           }.get(flag, 0)  # TSYNC: the process has one thread at exec
        self.label = label
        self.syscall_names = len({n for rule in linux_seccomp.get("syscalls") or () for n in rule["names"]})
        self.default_action = linux_seccomp["defaultAction"]

    def describe(self) -> str:
        return (f"seccomp: {self.label}, {self.syscall_names} syscalls named, others "
                f"{self.default_action}; {len(self.bpf) // 8} BPF instructions loaded just before "
                "exec (no shell command loads a filter)")

    def explain(self) -> None:
        explain.comment(self.describe())

    def load(self) -> None:
        """Needs no_new_privs or CAP_SYS_ADMIN. The process keeps the filter across execve."""
        from pyctr.runtime import syscalls

        syscalls.seccomp_set_mode_filter(self.bpf, self.flags)


def pyctr_cache() -> str:
    """Where pyctr's own front end keeps compiled filters: under its --state. (pyctr-oci keeps
    them under its --root: ocistate.seccomp_cache.)"""
    from pyctr.runtime import settings

    return os.path.join(settings.current().state, "seccomp")


def to_program(linux_seccomp: dict, label: str = "a seccomp profile", cache: str | None = None) -> Program:
    """Compile linux.seccomp, or find it compiled in `cache` (a folder; None: compile, keep
    nothing).

    A cached program is used only when the source it was compiled from, kept at the head of its
    file, is this one exactly: the whole model (which already holds the arches, caps and kernel it
    was resolved for) and libseccomp's version. The file is named by a CRC of that source, so a
    collision only costs a compilation; no cryptographic hash is needed (hashlib costs a start
    ~4 ms to load OpenSSL)."""
    if cache is None:
        return Program(Filter(linux_seccomp).export(), linux_seccomp, label)
    import zlib

    source = f"{_libseccomp_version()}\n{jsonstore.dumps(linux_seccomp, sort_keys=True, separators=(',', ':'))}\n"
    head = source.encode()
    path = os.path.join(cache, f"{zlib.crc32(head):08x}-{len(head)}.bpf")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(head):
            return Program(data[len(head):], linux_seccomp, label)
    except (FileNotFoundError, ProfileError):
        pass
    bpf = Filter(linux_seccomp).export()
    try:
        _write_atomically(path, head + bpf)
    except OSError:
        pass  # a read-only state folder: compile again next time
    return Program(bpf, linux_seccomp, label)


def _write_atomically(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _libseccomp_version() -> str:
    """seccomp_version() without the binding: dlopen is cheap, pyseccomp's import is not."""
    import ctypes

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL(_SONAMES["seccomp"])
        lib.seccomp_version.restype = ctypes.POINTER(Version)
        version = lib.seccomp_version().contents
        return f"libseccomp {version.major}.{version.minor}.{version.micro}"
    except (OSError, AttributeError):
        return "libseccomp unknown"


# --- linux.seccomp -> a libseccomp filter -------------------------------------------------------
class Filter:
    """A libseccomp filter built from linux.seccomp (the OCI runtime spec's shape).

    Built as runc builds it: a rule whose action is the default is skipped; a syscall libseccomp
    does not know is ignored (it cannot be called on this kernel's arches anyway); conditions on
    distinct arguments must all hold, while several on one argument are alternatives.
    """

    def __init__(self, linux_seccomp: dict):
        lib = _binding()
        default = _action(lib, linux_seccomp["defaultAction"], linux_seccomp.get("defaultErrnoRet"))
        try:
            self._filter = lib.SyscallFilter(default)
            for name in linux_seccomp.get("architectures") or ():
                token = getattr(lib.Arch, name.removeprefix("SCMP_ARCH_"), None)
                if token is None:
                    raise ProfileError(f"seccomp: libseccomp here does not know the architecture {name}")
                if not self._filter.exist_arch(token):
                    self._filter.add_arch(token)
            try:
                # A binary tree of syscall numbers, as runc asks for long lists: every syscall
                # the container makes walks ~log2(n) jumps instead of up to n (compiling it is
                # slower, but that is cached).
                self._filter.set_attr(lib.Attr.CTL_OPTIMIZE, 2)
            except OSError:
                pass  # libseccomp older than 2.5
            for syscall in linux_seccomp.get("syscalls") or ():
                self._add(lib, default, syscall)
        except OSError as e:
            raise ProfileError(f"seccomp: libseccomp refused the filter: {e.strerror or e}")

    def _add(self, lib, default: int, syscall: dict) -> None:
        action = _action(lib, syscall["action"], syscall.get("errnoRet"))
        if action == default:
            return
        conditions = [lib.Arg(a["index"], getattr(lib, a["op"].removeprefix("SCMP_CMP_")),
                              a.get("value", 0), a.get("valueTwo", 0)) for a in syscall.get("args") or ()]
        indexes = [a["index"] for a in syscall.get("args") or ()]
        alternatives = len(set(indexes)) < len(indexes)
        for name in syscall["names"]:
            number = lib.resolve_syscall(lib.Arch.NATIVE, name)
            if number == _NR_SCMP_ERROR:
                continue
            if alternatives:
                for condition in conditions:
                    self._filter.add_rule(action, number, condition)
            else:
                self._filter.add_rule(action, number, *conditions)

    def export(self) -> bytes:
        """The filter as classic BPF (libseccomp's own compilation, without loading it)."""
        import tempfile

        with tempfile.TemporaryFile() as out:
            self._filter.export_bpf(out)
            out.seek(0)
            return out.read()


_NR_SCMP_ERROR = -1


def _action(lib, name: str, errno_ret: int | None) -> int:
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return lib.KILL_THREAD
    if name == "SCMP_ACT_ERRNO":
        return lib.ERRNO(DEFAULT_ERRNO if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return lib.TRACE(DEFAULT_ERRNO if errno_ret is None else errno_ret)
    table = {"SCMP_ACT_KILL_PROCESS": lib.KILL_PROCESS, "SCMP_ACT_TRAP": lib.TRAP,
             "SCMP_ACT_ALLOW": lib.ALLOW, "SCMP_ACT_LOG": lib.LOG}
    if name not in table:
        raise ProfileError(f"seccomp: unknown action {name!r}")
    return table[name]


_SONAMES = {"seccomp": "libseccomp.so.2", "c": "libc.so.6"}


def _binding():
    """pyseccomp, imported on first use. It finds its libraries with ctypes.util.find_library,
    which runs `ldconfig -p` twice (~30 ms); the sonames are stable, so try them first."""
    import sys

    if "pyseccomp" in sys.modules:
        return sys.modules["pyseccomp"]
    import ctypes
    import ctypes.util

    real = ctypes.util.find_library

    def find_library(name):
        soname = _SONAMES.get(name)
        if soname:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        return real(name)

    ctypes.util.find_library = find_library
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as e:
        raise PyctrError(f"seccomp: cannot load libseccomp ({e}); install libseccomp2, "
                         "or run with --security-opt seccomp=unconfined")
    finally:
        ctypes.util.find_library = real
    return pyseccomp
