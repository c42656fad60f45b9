"""The container's filesystem, built by its init inside its own mount namespace.

Everything here runs after unshare(CLONE_NEWNS), so none of these mounts ever appears in the
host's mount table, and all of them vanish with the container's last process.
"""

import os

from pyctr.runtime import explain
from pyctr.runtime.syscalls import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                                    MS_RDONLY, MS_REC, MS_REMOUNT, MS_STRICTATIME, mount, pivot_root,
                                    umount2)

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}
# The paths runc masks and makes read-only by default.
MASKED_PATHS = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                "/proc/acpi", "/proc/latency_stats", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class Bind:
    def __init__(self, source: str, target: str, readonly: bool = False):
        self.source = source
        self.target = target  # inside the container
        self.readonly = readonly


class RootfsSpec:
    def __init__(self, lower: str, upper: str, work: str, merged: str, binds: list[Bind],
                 etc_files: dict[str, str], readonly: bool, privileged: bool):
        self.lower, self.upper, self.work, self.merged = lower, upper, work, merged
        self.binds = binds
        self.etc_files = etc_files  # container path -> host file
        self.readonly = readonly
        self.privileged = privileged


def _mount(source, target, fstype, flags=0, data=None, *, shown: list[str]) -> None:
    explain.step(*shown)
    mount(source, target, fstype, flags, data)


def _options(flags: int, data: str | None = None) -> str:
    names = [(MS_RDONLY, "ro"), (MS_NOSUID, "nosuid"), (MS_NODEV, "nodev"), (MS_NOEXEC, "noexec"),
             (MS_STRICTATIME, "strictatime")]
    opts = [n for bit, n in names if flags & bit]
    if data:
        opts.append(data)
    return ",".join(opts)


def _mount_fs(fstype: str, target: str, flags: int, data: str | None = None, source: str | None = None) -> None:
    source = source or fstype
    shown = ["mount", "-t", fstype]
    opts = _options(flags, data)
    if opts:
        shown += ["-o", opts]
    _mount(source, target, fstype, flags, data, shown=shown + [source, target])


def _bind(source: str, target: str, readonly: bool = False, recursive: bool = True, extra: int = 0) -> None:
    flags = MS_BIND | (MS_REC if recursive else 0)
    _mount(source, target, None, flags, shown=["mount", "--rbind" if recursive else "--bind", source, target])
    if readonly or extra:
        remount = MS_BIND | MS_REMOUNT | extra | (MS_RDONLY if readonly else 0)
        _mount(None, target, None, remount,
               shown=["mount", "-o", "remount,bind," + _options(remount & ~MS_BIND & ~MS_REMOUNT), target])


def _touch(path: str) -> None:
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass


def resolve_in_root(root: str, path: str, follow_last: bool = True) -> str:
    """The host path of container path `path`, resolving symlinks as the container would see
    them: an absolute link target starts again at `root`, and `..` stops at `root`. So a mount
    target can never land outside the container, yet Alpine's /var/run -> /run still works."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        full = os.path.join(root, *resolved, part)
        if os.path.islink(full) and (parts or follow_last):
            links += 1
            if links > 40:
                from pyctr.runtime.errors import PyctrError

                raise PyctrError(f"too many levels of symbolic links in {path!r}")
            target = os.readlink(full)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def prepare(spec: RootfsSpec) -> None:
    """Mount everything under spec.merged, then pivot_root into it."""
    # Nothing we mount may propagate back to the host.
    _mount(None, "/", None, MS_REC | MS_PRIVATE, shown=["mount", "--make-rprivate", "/"])
    nodev = 0 if spec.privileged else MS_NODEV
    _mount_fs("overlay", spec.merged, nodev,
              f"lowerdir={spec.lower},upperdir={spec.upper},workdir={spec.work}")
    root = spec.merged

    # Binds under /dev go on the container's own /dev, which would hide them if mounted first.
    in_dev = [b for b in spec.binds if _in_dev(b.target)]
    _bind_user_mounts(root, [b for b in spec.binds if b not in in_dev], nodev)

    _mount_fs("proc", f"{root}/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount_dev(root)
    _bind_user_mounts(root, in_dev, nodev)
    os.makedirs(f"{root}/sys", exist_ok=True)
    _mount_fs("sysfs", f"{root}/sys", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    for path, source in spec.etc_files.items():
        target = resolve_in_root(root, path, follow_last=False)
        if os.path.islink(target):  # e.g. a resolv.conf symlink: a file of our own replaces it
            os.unlink(target)
        _touch(target)
        _bind(source, target, recursive=False)

    _pivot(root)
    if not spec.privileged:
        _mask_paths()
    if spec.readonly:
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | nodev,
               shown=["mount", "-o", "remount,bind,ro", "/"])


def _in_dev(target: str) -> bool:
    path = os.path.normpath("/" + target.lstrip("/"))
    return path == "/dev" or path.startswith("/dev/")


def _bind_user_mounts(root: str, binds: list[Bind], nodev: int) -> None:
    for bind in binds:
        target = resolve_in_root(root, bind.target)
        if os.path.isdir(bind.source):
            os.makedirs(target, exist_ok=True)
        else:
            _touch(target)
        _bind(bind.source, target, bind.readonly, extra=nodev)


def _mount_dev(root: str) -> None:
    """A private /dev: a tmpfs (nodev, so mknod there gives no access) holding bind mounts of
    the few host devices a container needs, plus its own devpts, shm and mqueue."""
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    _mount_fs("tmpfs", dev, MS_NOSUID | MS_STRICTATIME | MS_NODEV, "mode=755,size=65536k")
    for name in DEVICES:
        _touch(f"{dev}/{name}")
        _bind(f"/dev/{name}", f"{dev}/{name}", recursive=False)
    for name, target in DEV_LINKS.items():
        explain.step("ln", "-s", target, f"{dev}/{name}")
        os.symlink(target, f"{dev}/{name}")
    for sub in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{sub}")
    _mount_fs("devpts", f"{dev}/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    _mount_fs("tmpfs", f"{dev}/shm", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k", source="shm")
    _mount_fs("mqueue", f"{dev}/mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _pivot(root: str) -> None:
    """pivot_root(".", ".") stacks the old root on top of the new one; a lazy unmount of "."
    then removes it, with no old-root directory left in the container."""
    explain.step("cd", root)
    os.chdir(root)
    explain.step("pivot_root", ".", ".")
    pivot_root(".", ".")
    explain.step("umount", "-l", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def _mask_paths() -> None:
    for path in MASKED_PATHS:
        if not os.path.exists(path):
            continue
        if os.path.isdir(path):
            _mount_fs("tmpfs", path, MS_RDONLY)
        else:
            _bind("/dev/null", path, recursive=False)
    for path in READONLY_PATHS:
        if os.path.exists(path):
            _bind(path, path, readonly=True, extra=MS_NOSUID | MS_NODEV | MS_NOEXEC)
