"""Privileges of the container's process: capability sets, no_new_privs, and the user it runs as."""

from pyctr.runtime import explain
from pyctr.runtime.errors import PyctrError

# Docker's default capability set.
DEFAULT_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


# Every capability Linux numbers, in order (<linux/capability.h>); the kernel's own last one is
# read from cap_last_cap, so a name here that this kernel lacks is never granted.
CAP_NUMBERS = {name: number for number, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE"))}


def kernel_cap_names() -> list[str]:
    """The capabilities this kernel has (names without CAP_), read on the host."""
    last = remember_host_cap_last_cap()
    return [name for name, number in CAP_NUMBERS.items() if number <= last]


def cap_mask(names: list[str]) -> int:
    """A bit mask for capset(2) from names as the spec writes them (CAP_SYS_ADMIN)."""
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[normalize_cap(name)]
    return mask


def all_cap_names() -> list[str]:
    import prctl

    # python-prctl lists friendly names ("sys_time"); "last_cap" is a marker, not a capability.
    return [n.upper() for n in prctl.ALL_CAP_NAMES if n != "last_cap" and hasattr(prctl, "CAP_" + n.upper())]


def normalize_cap(name: str) -> str:
    """`cap_sys_time`, `SYS_TIME` and `CAP_SYS_TIME` all mean SYS_TIME; ALL stays ALL."""
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def validate_caps(names: list[str]) -> list[str]:
    known = set(all_cap_names()) | {"ALL"}
    result = []
    for name in names:
        cap = normalize_cap(name)
        if cap not in known:
            raise PyctrError(f"unknown capability: {name!r}")
        result.append(cap)
    return result


def effective_caps(cap_add: list[str], cap_drop: list[str], privileged: bool) -> list[str]:
    """Docker's rule: start from the default set (or all), then add, then drop; ALL works both ways."""
    everything = all_cap_names()
    if privileged:
        return everything
    caps = set(DEFAULT_CAPS)
    if "ALL" in cap_add:
        caps = set(everything)
    caps |= {c for c in cap_add if c != "ALL"}
    if "ALL" in cap_drop:
        caps = {c for c in cap_add if c != "ALL"} if "ALL" not in cap_add else set()
    caps -= {c for c in cap_drop if c != "ALL"}
    return [c for c in everything if c in caps]


CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
_host_cap_last_cap: int | None = None


def remember_host_cap_last_cap() -> int:
    """The kernel's highest capability number, read from the host's /proc by the parent before it
    forks the container's process, which inherits it. The container's own /proc comes from its
    image, which could say 0 there and keep every capability in the bounding set."""
    global _host_cap_last_cap
    if _host_cap_last_cap is None:
        with open(CAP_LAST_CAP) as f:
            _host_cap_last_cap = int(f.read())
    return _host_cap_last_cap


def drop_bounding_set(keep: list[str]) -> None:
    """Shrink the bounding set; needs CAP_SETPCAP, so it runs before anything else is dropped."""
    import prctl

    if _host_cap_last_cap is None:  # a bug in pyctr: never trust the container's /proc instead
        raise PyctrError("internal error: cap_last_cap was not read on the host before the container started")

    # No single shell command does this and then execs later; setpriv is the closest.
    explain.comment("setpriv --bounding-set=-all," + ",".join("+" + c.lower() for c in keep)
                    + "  (the capabilities the container keeps)")
    kept = {CAP_NUMBERS[c] for c in keep}
    # Count to the kernel's last capability, not the library's list, so that none newer survives.
    for number in range(_host_cap_last_cap + 1):
        if number not in kept:
            prctl.capbset_drop(number)


def set_no_new_privs() -> None:
    import prctl

    explain.comment("setpriv --no-new-privs  (setuid binaries cannot gain privileges)")
    prctl.set_no_new_privs(1)


def resolve_user(spec: str | None, passwd: str = "/etc/passwd",
                 group: str = "/etc/group") -> tuple[int, int, list[int], str]:
    """USER[:GROUP] or UID[:GID], resolved in the container's own files (we are past pivot_root).

    Returns (uid, gid, supplementary gids, home).
    """
    if not spec:
        spec = "0"
    user, _, grp = spec.partition(":")
    users = _read_db(passwd)
    groups = _read_db(group)
    entry = None
    if user.isdigit():
        uid = int(user)
        entry = next((e for e in users if e[2] == user), None)
    else:
        entry = next((e for e in users if e[0] == user), None)
        if entry is None:
            raise PyctrError(f"unable to find user {user}: no matching entries in passwd file", 126)
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry and len(entry) > 5 else "/"
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            match = next((g for g in groups if g[0] == grp), None)
            if match is None:
                raise PyctrError(f"unable to find group {grp}: no matching entries in group file", 126)
            gid = int(match[2])
    name = entry[0] if entry else None
    extra = sorted({int(g[2]) for g in groups if name and len(g) > 3 and name in g[3].split(",")} - {gid})
    return uid, gid, extra, home


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home folder the container's /etc/passwd gives `uid`, or / (as runc sets HOME)."""
    entry = next((e for e in _read_db(passwd) if len(e) > 5 and e[2] == str(uid)), None)
    return entry[5] if entry else "/"


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []
