"""The container's filesystem, built by its init inside its own mount namespace.

Everything here runs after unshare(CLONE_NEWNS), so none of these mounts ever appears in the
host's mount table, and all of them vanish with the container's last process.

Every mount target inside the container's root is found, and created, through file descriptors
(inroot), and mounted on through /proc/self/fd/N: a volume that another container shares can
change while we work, and a path string would follow its symlinks to the host.
"""

import os
import stat

from pyctr.runtime import explain, inroot
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.syscalls import (MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID,
                                    MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_STRICTATIME, mount,
                                    pivot_root, umount2)

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}
# The paths runc masks and makes read-only by default.
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class Bind:
    def __init__(self, source: str, target: str, readonly: bool = False):
        self.source = source
        self.target = target  # inside the container
        self.readonly = readonly


class RootfsSpec:
    def __init__(self, lower: str, upper: str, work: str, merged: str, staging: str, binds: list[Bind],
                 etc_files: dict[str, str], readonly: bool, privileged: bool):
        self.lower, self.upper, self.work, self.merged = lower, upper, work, merged
        self.staging = staging  # a root-only folder where a bind is made read-only before it moves in
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


def _mount_fs(fstype: str, target: str | int, flags: int, data: str | None = None, source: str | None = None) -> None:
    """A new filesystem on `target`: a path, or a descriptor from inroot (mounted through /proc/self/fd)."""
    source = source or fstype
    shown = ["mount", "-t", fstype]
    opts = _options(flags, data)
    if opts:
        shown += ["-o", opts]
    if isinstance(target, int):
        _mount(source, inroot.fd_path(target), fstype, flags, data, shown=shown + [source, inroot.shown(target)])
    else:
        _mount(source, target, fstype, flags, data, shown=shown + [source, target])


def _bind(source: str, target: str, readonly: bool = False, recursive: bool = True, extra: int = 0) -> None:
    """A bind mount by path, for places no container can reach or change (our own /dev and /proc)."""
    flags = MS_BIND | (MS_REC if recursive else 0)
    _mount(source, target, None, flags, shown=["mount", "--rbind" if recursive else "--bind", source, target])
    if readonly or extra:
        _remount(target, target, readonly, extra)


def _remount(target: str, shown_target: str, readonly: bool, extra: int) -> None:
    remount = MS_BIND | MS_REMOUNT | extra | (MS_RDONLY if readonly else 0)
    _mount(None, target, None, remount,
           shown=["mount", "-o", "remount,bind," + _options(remount & ~MS_BIND & ~MS_REMOUNT), shown_target])


def _bind_into_root(source: str, target_fd: int, staging: str, readonly: bool = False,
                    recursive: bool = True, extra: int = 0) -> None:
    """Bind `source` onto the file `target_fd` holds (from inroot), with its options.

    A remount needs a path to the new mount, and a path inside a shared volume can change under
    us; so the bind is made, and made read-only, on a staging folder only root can reach, then
    moved onto the target through /proc/self/fd/N in one step. Shown as the commands a person
    would type for the same result."""
    target = inroot.shown(target_fd)
    explain.step("mount", "--rbind" if recursive else "--bind", source, target)
    mount(source, staging, None, MS_BIND | (MS_REC if recursive else 0))
    try:
        if readonly or extra:
            _remount(staging, target, readonly, extra)
        mount(staging, inroot.fd_path(target_fd), None, MS_MOVE)
    except BaseException:
        umount2(staging, MNT_DETACH)
        raise


def _staging_place(staging: str, directory: bool) -> str:
    """An empty folder or file in the staging folder, to bind onto before the move."""
    place = os.path.join(staging, "dir" if directory else "file")
    if directory:
        os.makedirs(place, mode=0o700, exist_ok=True)
    else:
        os.makedirs(staging, mode=0o700, exist_ok=True)
        os.close(os.open(place, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    return place


def _kernel_dir(root_fd: int, name: str) -> int:
    """The image's /proc, /dev or /sys, which must be a plain folder: a symlink there would point
    the kernel's files, and what is read from them (cap_last_cap), wherever the image likes."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    except FileNotFoundError:
        explain.step("mkdir", "-m", "755", f"{inroot.shown(root_fd)}/{name}")
        os.mkdir(name, 0o755, dir_fd=root_fd)
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISDIR(mode):
        os.close(fd)
        what = "a symlink" if stat.S_ISLNK(mode) else "a file"
        raise PyctrError(f"the image's /{name} is {what}, not a folder: refusing to mount {name} there")
    return fd


def prepare(spec: RootfsSpec) -> None:
    """Mount everything under spec.merged, then pivot_root into it."""
    # What we create in the container (and the container's own files) get Docker's umask, not the caller's.
    os.umask(0o022)
    # Nothing we mount may propagate back to the host.
    _mount(None, "/", None, MS_REC | MS_PRIVATE, shown=["mount", "--make-rprivate", "/"])
    nodev = 0 if spec.privileged else MS_NODEV
    _mount_fs("overlay", spec.merged, nodev,
              f"lowerdir={spec.lower},upperdir={spec.upper},workdir={spec.work}")
    root = spec.merged
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    # Binds under /dev go on the container's own /dev, which would hide them if mounted first.
    in_dev = [b for b in spec.binds if _in_dev(b.target)]
    _bind_user_mounts(spec, root_fd, [b for b in spec.binds if b not in in_dev], nodev)

    for name, fstype, flags in (("proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
                                ("dev", "tmpfs", MS_NOSUID | MS_STRICTATIME | MS_NODEV),
                                ("sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)):
        fd = _kernel_dir(root_fd, name)
        try:
            _mount_fs(fstype, fd, flags, "mode=755,size=65536k" if name == "dev" else None)
        finally:
            os.close(fd)
        if name == "dev":
            _fill_dev(f"{root}/dev")
            _bind_user_mounts(spec, root_fd, in_dev, nodev)

    for path, source in spec.etc_files.items():
        folder, _, name = path.rpartition("/")
        target_fd = _etc_file(root_fd, folder, name)
        try:
            _bind_into_root(source, target_fd, _staging_place(spec.staging, False), spec.readonly,
                            recursive=False)
        finally:
            os.close(target_fd)

    _pivot(root_fd)
    if not spec.privileged:
        _mask_paths()
    if spec.readonly:
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | nodev,
               shown=["mount", "-o", "remount,bind,ro", "/"])


def _in_dev(target: str) -> bool:
    path = os.path.normpath("/" + target.lstrip("/"))
    return path == "/dev" or path.startswith("/dev/")


def _bind_user_mounts(spec: RootfsSpec, root_fd: int, binds: list[Bind], nodev: int) -> None:
    for bind in binds:
        directory = os.path.isdir(bind.source)
        _explain_making(root_fd, bind.target, directory)
        target_fd = inroot.make_path(root_fd, bind.target, directory)
        try:
            _bind_into_root(bind.source, target_fd, _staging_place(spec.staging, directory),
                            bind.readonly, extra=nodev)
        finally:
            os.close(target_fd)


def _explain_making(root_fd: int, path: str, directory: bool) -> None:
    """The mkdir or touch a person would type for a mount point that make_path creates."""
    if not explain.enabled:
        return
    try:
        os.close(inroot.open_path(root_fd, path))
        return
    except OSError:
        pass
    path = os.path.normpath("/" + path.lstrip("/"))
    shown = inroot.shown(root_fd) + path
    if directory:
        explain.step("mkdir", "-p", shown)
    else:
        _explain_making(root_fd, os.path.dirname(path), directory=True)
        explain.step("touch", shown)


def _etc_file(root_fd: int, folder: str, name: str) -> int:
    """The file in the container that pyctr's /etc/NAME covers: a symlink there (a resolv.conf
    pointing elsewhere) gives way to a file of our own."""
    _explain_making(root_fd, folder, directory=True)
    folder_fd = inroot.make_path(root_fd, folder, directory=True)
    try:
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
                explain.step("rm", f"{inroot.shown(folder_fd)}/{name}")
                os.unlink(name, dir_fd=folder_fd)
        except FileNotFoundError:
            pass
        _explain_making(folder_fd, name, directory=False)
        return inroot.make_path(folder_fd, name, directory=False)
    finally:
        os.close(folder_fd)


def _fill_dev(dev: str) -> None:
    """Our new /dev, a tmpfs (nodev, so mknod there gives no access): bind mounts of the few host
    devices a container needs, plus its own devpts, shm and mqueue. The tmpfs is fresh and in no
    one else's reach, so paths are safe in it."""
    for name in DEVICES:
        explain.step("touch", f"{dev}/{name}")
        os.close(os.open(f"{dev}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        _bind(f"/dev/{name}", f"{dev}/{name}", recursive=False)
    for name, target in DEV_LINKS.items():
        explain.step("ln", "-s", target, f"{dev}/{name}")
        os.symlink(target, f"{dev}/{name}")
    for sub in ("pts", "shm", "mqueue"):
        explain.step("mkdir", f"{dev}/{sub}")
        os.mkdir(f"{dev}/{sub}")
    _mount_fs("devpts", f"{dev}/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    _mount_fs("tmpfs", f"{dev}/shm", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k", source="shm")
    _mount_fs("mqueue", f"{dev}/mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _pivot(root_fd: int) -> None:
    """pivot_root(".", ".") stacks the old root on top of the new one; a lazy unmount of "."
    then removes it, with no old-root directory left in the container."""
    explain.step("cd", inroot.shown(root_fd))
    os.fchdir(root_fd)
    os.close(root_fd)
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
