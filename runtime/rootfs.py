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
                                    MS_RDONLY, MS_REC, MS_REMOUNT, MS_SHARED, MS_SLAVE,
                                    MS_STRICTATIME, mount,
                                    pivot_root, umount2)

DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore"}


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


# --- the root filesystem from the OCI spec: root, mounts in order, devices, masks ------------
DEFAULT_DEVICES = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7), "/dev/random": (1, 8),
                   "/dev/urandom": (1, 9), "/dev/tty": (5, 0)}
_KERNEL_FILESYSTEMS = ("proc", "sysfs")
# A device node bound from the host's /dev (and /dev/null over a masked file): read-only, so that
# its inode, the host's own, cannot be chmod'ed or chown'ed; never nodev, or it would not work.
DEVICE_BIND_FLAGS = MS_RDONLY | MS_NOSUID | MS_NOEXEC


def mount_root(spec, staging: str, before_pivot=None, no_pivot: bool = False, in_user_namespace: bool = False,
               before_cgroup_mount=None, mounted_root: str | None = None) -> None:
    """Everything under spec.root.path, in the spec's order, then pivot_root into it.
    `before_pivot` runs the createContainer hooks, in the container's namespaces but still seeing
    the host's paths, as the spec places them. `mounted_root`: where the root is mounted
    already (by runtime/userns_root.py), instead of mounting it at spec.root.path."""
    from pyctr.runtime import spec as specs

    os.umask(0o022)  # what we create has Docker's and runc's modes, whatever the caller's umask
    # Nothing we mount may propagate back to the host; rootfsPropagation asks for more sharing.
    propagation = specs.PROPAGATION_FLAGS.get(spec.linux.rootfs_propagation or "rprivate")
    wanted = "rslave" if propagation & (MS_SHARED | MS_SLAVE) else "rprivate"
    _mount(None, "/", None, MS_REC | specs.PROPAGATION_FLAGS[wanted], shown=["mount", f"--make-{wanted}", "/"])
    root = mounted_root or spec.root.path
    overlay = spec.annotations.get(specs.OVERLAY_ANNOTATION)
    if mounted_root:
        pass
    elif overlay:
        nodev = 0 if spec.annotations.get(specs.PRIVILEGED_ANNOTATION) else MS_NODEV
        _mount_fs("overlay", root, nodev, overlay)
    else:
        _mount(root, root, None, MS_BIND | MS_REC, shown=["mount", "--rbind", root, root])
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        host_cgroups = None
        for m in spec.mounts:
            if m.type == "cgroup" and before_cgroup_mount:
                # It shows the cgroups we are in: wait until we are in ours (paths as the host sees them).
                host_cgroups = before_cgroup_mount()
            _apply_mount(root_fd, m, spec, staging, host_cgroups)
        _make_devices(root_fd, spec, in_user_namespace)
        if before_pivot:
            before_pivot()
    except BaseException:
        os.close(root_fd)
        raise
    if no_pivot:
        _move_root(root_fd)
    else:
        _pivot(root_fd)


def finish_root(spec) -> None:
    """After pivot_root (and the sysctls, which need /proc/sys writable): propagation, masks,
    read-only paths, a read-only root."""
    from pyctr.runtime import spec as specs

    if spec.linux.rootfs_propagation:
        flags = specs.PROPAGATION_FLAGS[spec.linux.rootfs_propagation]
        _mount(None, "/", None, flags, shown=["mount", f"--make-{spec.linux.rootfs_propagation}", "/"])
    for path in spec.linux.masked_paths:
        _mask(path)
    for path in spec.linux.readonly_paths:
        if os.path.lexists(path):
            _bind(path, path, readonly=True, extra=_locked_flags(path))
    if spec.root.readonly:
        _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags("/"),
               shown=["mount", "-o", "remount,bind,ro", "/"])


def _locked_flags(path: str) -> int:
    """nosuid, nodev and noexec as the mount has them: a bind remount must keep them (a user
    namespace may not clear them), and dropping them would weaken the mount."""
    flag = os.statvfs(path).f_flag
    return flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _mask(path: str) -> None:
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        _mount_fs("tmpfs", path, MS_RDONLY)
    else:  # /dev/null is the host's (see _make_device): read-only here too
        _bind("/dev/null", path, recursive=False, readonly=True, extra=DEVICE_BIND_FLAGS & ~MS_RDONLY)


def _apply_mount(root_fd: int, m, spec, staging: str, host_cgroups: dict | None = None) -> None:
    destination = os.path.normpath("/" + m.destination.lstrip("/"))
    if m.bind:
        source = m.source if os.path.isabs(m.source) else os.path.join(spec.bundle, m.source)
        if not os.path.exists(source):
            raise PyctrError(f"mount {destination}: the source {source} does not exist", 1)
        directory = os.path.isdir(source)
        _explain_making(root_fd, destination, directory)
        target_fd = inroot.make_path(root_fd, destination, directory)
        try:
            _bind_into_root(source, target_fd, _staging_place(staging, directory), bool(m.flags & MS_RDONLY),
                            recursive=m.recursive, extra=m.flags & ~MS_RDONLY)
        finally:
            os.close(target_fd)
        _set_propagation(root_fd, destination, m.propagation)
        return
    if m.type in _KERNEL_FILESYSTEMS or destination in ("/proc", "/sys", "/dev"):
        target_fd = _kernel_path(root_fd, destination)
    else:
        _explain_making(root_fd, destination, True)
        target_fd = inroot.make_path(root_fd, destination, directory=True)
    try:
        try:
            _mount_fs("tmpfs" if m.type == "cgroup" else m.type, target_fd,
                      (MS_NOSUID | MS_NODEV | MS_NOEXEC) if m.type == "cgroup" else m.flags,
                      "mode=755" if m.type == "cgroup" else (m.data or None),
                      source="tmpfs" if m.type == "cgroup" else (m.source or m.type))
        except PermissionError:
            if m.type != "sysfs":
                raise
            # In a user namespace without a network namespace of its own, the kernel refuses a
            # new sysfs; the host's, read-only, is what runc gives then.
            _bind_fd("/sys", target_fd, True)
            _remount_new(root_fd, destination, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    finally:
        os.close(target_fd)
    if m.type == "cgroup":
        _mount_cgroups(root_fd, destination, m, host_cgroups or own_cgroups())
    _set_propagation(root_fd, destination, m.propagation)


def _bind_fd(source: str, target_fd: int, recursive: bool) -> None:
    _mount(source, inroot.fd_path(target_fd), None, MS_BIND | (MS_REC if recursive else 0),
           shown=["mount", "--rbind" if recursive else "--bind", source, inroot.shown(target_fd)])


def _on_new_mount(root_fd: int, destination: str, action) -> None:
    """Run action(path) on the mount now at `destination`: a descriptor taken before the mount
    names the folder under it, so the path is resolved again, still inside the root."""
    fd = inroot.open_path(root_fd, destination)
    try:
        action(inroot.fd_path(fd), inroot.shown(fd))
    finally:
        os.close(fd)


def _remount_new(root_fd: int, destination: str, flags: int) -> None:
    _on_new_mount(root_fd, destination,
                  lambda path, shown: _remount(path, shown, bool(flags & MS_RDONLY), flags & ~MS_RDONLY))


def _set_propagation(root_fd: int, destination: str, propagation: list[int]) -> None:
    from pyctr.runtime import spec as specs

    names = {v: k for k, v in specs.PROPAGATION_FLAGS.items()}
    for flags in propagation:
        _on_new_mount(root_fd, destination, lambda path, shown: _mount(
            None, path, None, flags, shown=["mount", f"--make-{names[flags]}", shown]))


def _kernel_path(root_fd: int, destination: str) -> int:
    """Where proc, sysfs or /dev go: a plain folder, never a symlink in the image, which would
    send the kernel's files (and what is read from them) wherever the image likes (runc
    CVE-2019-16884, CVE-2019-19921)."""
    parent, _, name = destination.rpartition("/")
    _explain_making(root_fd, parent or "/", True)
    parent_fd = inroot.make_path(root_fd, parent or "/", directory=True)
    try:
        return _kernel_dir(parent_fd, name)
    finally:
        os.close(parent_fd)


def _mount_cgroups(root_fd: int, destination: str, m, own: dict[str, str]) -> None:
    """A `cgroup` mount, on the tmpfs just mounted there: the container's own cgroups, one
    folder per v1 hierarchy bound from the host (`own`: their paths as the host sees them, also
    with a cgroup namespace, in which /proc/self/cgroup says "/"), or cgroup2 alone on a pure v2
    host, as runc mounts them."""
    from pyctr.runtime import cgroups

    readonly = bool(m.flags & MS_RDONLY)
    locked = MS_NOSUID | MS_NODEV | MS_NOEXEC
    layout = cgroups.detect()
    if layout.mode == "v2":
        _on_new_mount(root_fd, destination, lambda path, shown: _mount(
            "cgroup", path, "cgroup2", m.flags | locked, shown=["mount", "-t", "cgroup2", "cgroup", shown]))
        return

    def fill(target: str, shown: str) -> None:
        own_by_set = {frozenset(options.split(",")): path for options, path in own.items()}
        for options, host_mount in _v1_hierarchies().items():
            path = own_by_set.get(frozenset(options.split(",")))
            if path is None:  # not ours to show: never the hierarchy's root in its place
                continue
            name = os.path.basename(host_mount)
            os.mkdir(f"{target}/{name}", 0o755)
            _bind(host_mount + path, f"{target}/{name}", readonly=readonly, extra=locked, recursive=False)
            for controller in options.split(","):
                if controller != name and not os.path.lexists(f"{target}/{controller}"):
                    os.symlink(name, f"{target}/{controller}")
        if layout.unified and layout.mode == "hybrid" and "" in own:
            os.mkdir(f"{target}/unified", 0o755)
            _bind(str(layout.unified) + own[""], f"{target}/unified", readonly=readonly, extra=locked,
                  recursive=False)
        if readonly:
            _mount(None, target, None, MS_REMOUNT | MS_RDONLY | locked, "mode=755",
                   shown=["mount", "-o", "remount,ro", shown])

    _on_new_mount(root_fd, destination, fill)


def own_cgroups() -> dict[str, str]:
    """This process's cgroup in each hierarchy (controllers -> path), as /proc/self/cgroup says:
    as the host sees it, unless the process is in a cgroup namespace of its own."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[",".join(c for c in controllers.split(",") if not c.startswith("name="))] = path
    return own


def _v1_hierarchies() -> dict[str, str]:
    """The host's v1 controller hierarchies: "cpu,cpuacct" -> /sys/fs/cgroup/cpu,cpuacct."""
    from pyctr.runtime import cgroups

    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            parts, tail_parts = fields.split(), tail.split()
            if len(tail_parts) >= 3 and tail_parts[0] == "cgroup":
                controllers = [o for o in tail_parts[2].split(",") if o in cgroups.V1_CONTROLLERS]
                if controllers:
                    found.setdefault(",".join(controllers), parts[4])
    return found


def _make_devices(root_fd: int, spec, in_user_namespace: bool) -> None:
    """The default devices every container has, and linux.devices: made with mknod, or bound
    from the host's where mknod is not allowed (a user namespace), as runc does."""
    wanted = {path: ("c", major, minor, 0o666, 0, 0) for path, (major, minor) in DEFAULT_DEVICES.items()}
    for d in spec.linux.devices:
        wanted[d.path] = (d.type, d.major, d.minor, d.file_mode if d.file_mode is not None else 0o666,
                          d.uid or 0, d.gid or 0)
    try:
        dev_fd = inroot.open_path(root_fd, "/dev")
    except FileNotFoundError:
        return
    dev = inroot.fd_path(dev_fd)
    try:
        for path, (kind, major, minor, mode, uid, gid) in wanted.items():
            _make_device(root_fd, path, kind, major, minor, mode, uid, gid,
                         in_user_namespace or path in DEFAULT_DEVICES)
        for name, target in DEV_LINKS.items():  # the links every Linux system has
            if not os.path.lexists(f"{dev}/{name}"):
                explain.step("ln", "-s", target, f"{inroot.shown(dev_fd)}/{name}")
                os.symlink(target, f"{dev}/{name}", dir_fd=None)
    finally:
        os.close(dev_fd)


def _make_device(root_fd: int, path: str, kind: str, major: int, minor: int, mode: int, uid: int, gid: int,
                 bind: bool) -> None:
    folder, _, name = os.path.normpath(path).rpartition("/")
    folder_fd = inroot.make_path(root_fd, folder, directory=True)
    try:
        shown = f"{inroot.shown(folder_fd)}/{name}"
        if os.path.lexists(f"{inroot.fd_path(folder_fd)}/{name}"):
            os.unlink(name, dir_fd=folder_fd)
        if bind:
            explain.step("touch", shown)
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644,
                             dir_fd=folder_fd))
            target_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
            try:
                _bind_fd(path, target_fd, False)
            finally:
                os.close(target_fd)
            # Read-only: the node is the host's own inode, which the container's root could else
            # chmod or chown for the whole host. A device's I/O does not need a writable mount.
            _remount_new(root_fd, path, DEVICE_BIND_FLAGS)
            return
        kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
        explain.step("mknod", "-m", f"{mode & 0o7777:o}", shown, kind, *((major, minor) if kind != "p" else ()))
        os.mknod(name, kinds[kind] | (mode & 0o7777), os.makedev(major, minor), dir_fd=folder_fd)
        os.chmod(name, mode & 0o7777, dir_fd=folder_fd)  # mknod's mode passes through our umask
        os.chown(name, uid, gid, dir_fd=folder_fd, follow_symlinks=False)
    finally:
        os.close(folder_fd)


def _move_root(root_fd: int) -> None:
    """--no-pivot: move the root over / and chroot into it (for a root on a ramfs, where
    pivot_root cannot work)."""
    explain.step("cd", inroot.shown(root_fd))
    os.fchdir(root_fd)
    os.close(root_fd)
    explain.step("mount", "--move", ".", "/")
    mount(".", "/", None, MS_MOVE)
    explain.step("chroot", ".")
    os.chroot(".")
    os.chdir("/")
