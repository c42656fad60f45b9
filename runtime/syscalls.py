"""The few Linux syscalls Python's os module lacks, through ctypes, each checked for errno.

Every wrapper raises OSError(errno, message) on failure, so callers handle them like any
other os.* error.
"""

import ctypes
import errno
import os

# The interpreter is already linked against libc: CDLL(None) finds its symbols without
# ctypes.util.find_library, which runs `ldconfig -p` (about 15 ms on every start).
_libc = ctypes.CDLL(None, use_errno=True)

# <sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# <linux/openat2.h>
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
_SYS_OPENAT2 = 437  # one number on every architecture: it came after the tables were unified


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
        f"mount {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    # glibc has no wrapper; 155 is SYS_pivot_root on x86_64, 41 on aarch64.
    nr = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217}[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat(2) with RESOLVE_* rules (Linux 5.6); ENOSYS on older kernels. Returns the fd."""
    how = _OpenHow(flags, mode, resolve)
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), _b(path),
                                ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))), f"openat2 {path}")


# close_range(2) has the same number on every architecture (it came after the tables were unified).
_SYS_CLOSE_RANGE = 436
CLOSE_RANGE_CLOEXEC = 1 << 2
_MAX_FD = 0xFFFFFFFF


def close_range(first: int, last: int, flags: int = 0) -> None:
    _check(_libc.syscall(ctypes.c_long(_SYS_CLOSE_RANGE), ctypes.c_uint(first), ctypes.c_uint(last),
                         ctypes.c_uint(flags)), "close_range")


def mark_cloexec_from(first: int) -> None:
    """Every fd from `first` up closes at the next execve(), whoever opened it."""
    try:
        close_range(first, _MAX_FD, CLOSE_RANGE_CLOEXEC)
    except OSError as e:
        # ENOSYS, EINVAL: before Linux 5.9 / 5.11 (the flag); EPERM: a seccomp profile without it
        if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            raise
        import fcntl

        for fd in _open_fds(first):
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
            except OSError:  # the listing's own fd, closed by now
                pass


def close_fds_except(keep) -> None:
    """Close every fd from 3 up but those in `keep`: what the caller of pyctr left open
    (a directory, a lock) must not be reachable through /proc/self/fd in the container."""
    kept = sorted({fd for fd in keep if fd >= 3})
    try:
        first = 3
        for fd in kept + [_MAX_FD + 1]:
            if first < fd:
                close_range(first, fd - 1)
            first = fd + 1
    except OSError as e:
        if e.errno != errno.ENOSYS:  # before Linux 5.9
            raise
        for fd in _open_fds(3):
            if fd not in kept:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _open_fds(first: int) -> list[int]:
    return [fd for fd in map(int, os.listdir("/proc/self/fd")) if fd >= first]


# <linux/keyctl.h>; glibc has no wrapper for keyctl(2).
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "armv7l": 311, "ppc64le": 271, "s390x": 280}
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str | None = None) -> int:
    """A new session keyring (anonymous without a name): the caller's keys stay out of reach.
    Returns its serial number."""
    nr = _SYS_KEYCTL[os.uname().machine]
    return _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), _b(name)),
                  "keyctl(KEYCTL_JOIN_SESSION_KEYRING)")


# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_mode_filter(program: bytes, flags: int = 0) -> None:
    """seccomp(2) with a classic BPF program (8 bytes an instruction), as runc loads its filters."""
    nr = {"x86_64": 317, "aarch64": 277, "armv7l": 383, "ppc64le": 358, "s390x": 348,
          "riscv64": 277}[os.uname().machine]
    code = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(code))
    _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_ulong(SECCOMP_SET_MODE_FILTER), ctypes.c_ulong(flags),
                         ctypes.byref(fprog)), "seccomp")


# <linux/capability.h>: capset(2) sets the effective, permitted and inheritable sets at once.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Each argument is a bit mask of capability numbers (1 << CAP_X)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for word in range(2):
        shift = 32 * word
        data[word] = _CapData((effective >> shift) & 0xFFFFFFFF, (permitted >> shift) & 0xFFFFFFFF,
                              (inheritable >> shift) & 0xFFFFFFFF)
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# <linux/prctl.h>
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2


def raise_ambient_capability(number: int) -> None:
    _check(_libc.prctl(ctypes.c_int(PR_CAP_AMBIENT), ctypes.c_ulong(PR_CAP_AMBIENT_RAISE), ctypes.c_ulong(number),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl(PR_CAP_AMBIENT_RAISE, {number})")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, ctypes.c_size_t(len(raw))), "setdomainname")


# User namespaces and the new mount API (Linux 5.2; mount_setattr 5.12). These numbers came after
# the syscall tables were unified: one number on every architecture (x86_64's unistd_64.h and
# asm-generic/unistd.h, which aarch64 uses, agree: 428, 429, 442).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442

# <linux/fcntl.h>, <linux/mount.h>
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x01
MOUNT_ATTR_NOSUID = 0x02
MOUNT_ATTR_NODEV = 0x04
MOUNT_ATTR_NOEXEC = 0x08
MOUNT_ATTR_IDMAP = 0x00100000


class MountAttr(ctypes.Structure):
    """struct mount_attr (MOUNT_ATTR_SIZE_VER0, 32 bytes)."""
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def open_tree(dir_fd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount at `path` (AT_RECURSIVE:
    with the mounts under it), attached nowhere until move_mount. Returns its fd."""
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(dir_fd), _b(path),
                                ctypes.c_uint(flags)), f"open_tree {path}")


def mount_setattr(dir_fd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    """mount_setattr(2): change a mount's attributes; MOUNT_ATTR_IDMAP with `userns_fd` makes
    it an idmapped mount (only on a detached mount that is not idmapped yet)."""
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(dir_fd), _b(path),
                         ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr")


def move_mount(from_dir_fd: int, from_path: str, to_dir_fd: int, to_path: str, flags: int) -> None:
    """move_mount(2): attach (or move) a mount; MOVE_MOUNT_F_EMPTY_PATH takes the mount from an
    open_tree fd, MOVE_MOUNT_T_EMPTY_PATH mounts on the folder `to_dir_fd` itself."""
    _check(_libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(from_dir_fd), _b(from_path),
                         ctypes.c_int(to_dir_fd), _b(to_path), ctypes.c_uint(flags)),
           f"move_mount {to_path or to_dir_fd}")
