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


# pidfd_getfd(2), Linux 5.6, one number everywhere too.
_SYS_PIDFD_GETFD = 438


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A copy of another process's descriptor (close-on-exec), as SCM_RIGHTS would pass it."""
    return _check(_libc.syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(target_fd),
                                ctypes.c_uint(0)), "pidfd_getfd")


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


# <sys/socket.h>
AF_UNIX = 1
SOCK_STREAM = 1
SOCK_CLOEXEC = 0o2000000


def unix_socketpair() -> tuple[int, int]:
    """Two connected AF_UNIX stream sockets, close-on-exec, as plain fds (what
    socket.socketpair() makes): for one call, the socket module and its enums cost a start ~3 ms."""
    fds = (ctypes.c_int * 2)()
    _check(_libc.socketpair(ctypes.c_int(AF_UNIX), ctypes.c_int(SOCK_STREAM | SOCK_CLOEXEC), ctypes.c_int(0), fds),
           "socketpair")
    return fds[0], fds[1]


MADV_POPULATE_WRITE = 23  # Linux 5.14


def populate_writable(start: int, length: int) -> None:
    """madvise(MADV_POPULATE_WRITE): take the write faults of a mapped range now, as a write to
    each page would (a page shared copy-on-write with the parent is copied), without writing."""
    _check(_libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), ctypes.c_int(MADV_POPULATE_WRITE)),
           "madvise")


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


# bpf(2), for cgroup v2 device programs (BPF_PROG_TYPE_CGROUP_DEVICE). <linux/bpf.h>; the attr
# structures below are the leading members of `union bpf_attr` each command reads (the kernel
# takes a shorter attr and zero-fills the rest).
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 2
BPF_OBJ_NAME_LEN = 16


class BpfProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class BpfAttachAttr(ctypes.Structure):
    """BPF_PROG_ATTACH and BPF_PROG_DETACH."""
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


class BpfQueryAttr(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32), ("query_flags", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32), ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class BpfGetIdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class BpfInfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class BpfProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info, up to its name (the kernel fills what info_len asks)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN)]


def bpf(cmd: int, attr: ctypes.Structure, what: str = "bpf") -> int:
    """bpf(2) with `attr` (one of the structures above, filled in and updated in place)."""
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"{what}: bpf(2) is not known on {os.uname().machine}")
    return _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                                ctypes.c_uint(ctypes.sizeof(attr))), what)


def bpf_prog_load(prog_type: int, instructions: bytes, license: str, name: str = "") -> int:
    """Load a program (8 bytes an instruction); returns its fd. A verifier refusal is loaded again
    with a log, whose end goes into the OSError's message."""
    code = ctypes.create_string_buffer(instructions, len(instructions))
    licence = ctypes.create_string_buffer(license.encode())
    attr = BpfProgLoadAttr(prog_type=prog_type, insn_cnt=len(instructions) // 8, insns=ctypes.addressof(code),
                           license=ctypes.addressof(licence), prog_name=name.encode()[:BPF_OBJ_NAME_LEN - 1])
    try:
        return bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EACCES):
            raise
        log = ctypes.create_string_buffer(1 << 16)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            return bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
        except OSError as again:
            tail = " | ".join(log.value.decode(errors="replace").strip().splitlines()[-3:])
            raise OSError(again.errno, f"bpf(BPF_PROG_LOAD): {os.strerror(again.errno)}"
                                       + (f" (verifier: {tail})" if tail else "")) from None


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    bpf(BPF_PROG_ATTACH, BpfAttachAttr(target_fd, prog_fd, attach_type, flags), "bpf(BPF_PROG_ATTACH)")


def bpf_prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    bpf(BPF_PROG_DETACH, BpfAttachAttr(target_fd, prog_fd, attach_type), "bpf(BPF_PROG_DETACH)")


def bpf_prog_query(target_fd: int, attach_type: int) -> list[int]:
    """The ids of the programs attached to the cgroup `target_fd` itself (not its ancestors')."""
    count = 64  # the kernel's limit of programs a cgroup and attach type
    while True:
        ids = (ctypes.c_uint32 * count)()
        attr = BpfQueryAttr(target_fd=target_fd, attach_type=attach_type, prog_ids=ctypes.addressof(ids),
                            prog_cnt=count)
        try:
            bpf(BPF_PROG_QUERY, attr, "bpf(BPF_PROG_QUERY)")
        except OSError as error:
            if error.errno == errno.ENOSPC and attr.prog_cnt > count:  # more than asked for: the real count
                count = attr.prog_cnt
                continue
            raise
        return list(ids[:attr.prog_cnt])


def bpf_prog_get_fd_by_id(prog_id: int) -> int:
    return bpf(BPF_PROG_GET_FD_BY_ID, BpfGetIdAttr(prog_id), f"bpf(BPF_PROG_GET_FD_BY_ID {prog_id})")


def bpf_prog_info(prog_fd: int) -> BpfProgInfo:
    info = BpfProgInfo()
    bpf(BPF_OBJ_GET_INFO_BY_FD, BpfInfoAttr(prog_fd, ctypes.sizeof(info), ctypes.addressof(info)),
        "bpf(BPF_OBJ_GET_INFO_BY_FD)")
    return info
