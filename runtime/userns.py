"""User namespaces: id maps, the parent/child handshake, and a rootfs the remapped root can use.

Container ids map to host ids through `IdMap`s (the OCI spec's linux.uidMappings/gidMappings).
A user namespace is made by the child (unshare(CLONE_NEWUSER)); its maps can only be written
from outside, once, by a process with CAP_SETUID/CAP_SETGID over the parent namespace: pyctr's
own process, root on the host. `UsernsSync` is the handshake: the child unshares and waits, the
parent writes /proc/CHILD/{uid,gid}_map (and may hand over fds, such as idmapped mounts), then
the child becomes root inside.

setgroups: the kernel demands "deny" in /proc/PID/setgroups before gid_map only when the writer
lacks CAP_SETGID in the parent namespace (the rootless case). pyctr writes as root, so it leaves
"allow": the container can then drop the host root's supplementary groups (which `become_root`
does; they would otherwise still grant group access to host files) and set its own, as runc.

The image's rootfs belongs to host uid 0, which the container's root (say host 100000) does not
own. Two ways to give it the right owners:
  - an idmapped mount (Linux 5.12; overlayfs takes idmapped lower layers since 5.19): the same
    files, seen through the container's map. Nothing is copied. `supports_idmapped_mounts`
    probes (once per filesystem) whether the kernel and the filesystem allow it.
  - otherwise a copy with every owner shifted (Docker's way with --userns-remap), made once per
    image and mapping: `chowned_copy`.

Choosing the maps, as the Docker-style CLI does:
  --userns-remap=default|USER[:GROUP]  (dockerd's) the ranges of USER in /etc/subuid and of GROUP
      (default: USER) in /etc/subgid; "default" is user `dockremap`, created with a 65536-id range
      when missing, as dockerd does (`ensure_remap_user`).
  --userns=auto  (podman's) a free range of `size` ids (65536 by default) from the pool podman
      users already have: the /etc/subuid and /etc/subgid ranges of user `containers`. Each
      container's allocation is recorded in $PYCTR_ROOT/userns-auto.json, under a lock, until
      `release_auto_range`. Unlike podman, the size is not guessed from the image's files.
"""

import array
import errno
import fcntl
import os
import shutil
import socket
import stat
import struct
import subprocess
from pathlib import Path
from typing import NamedTuple

from pyctr.runtime import jsonstore, settings
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.syscalls import (AT_EMPTY_PATH, AT_FDCWD, AT_RECURSIVE, CLONE_NEWUSER,
                                    MOUNT_ATTR_IDMAP, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH,
                                    OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE, mount_setattr, move_mount,
                                    open_tree, unshare)

MAX_MAP_LINES = 340  # the kernel's limit since 4.15
ID_LIMIT = 2**32 - 1  # (uid_t)-1 is no id
UID_FIELD = "linux.uidMappings"
GID_FIELD = "linux.gidMappings"
DEFAULT_SIZE = 65536
FIRST_SUBID = 100000  # where useradd starts subordinate ids (SUB_UID_MIN)
REMAP_USER = "dockremap"
AUTO_POOL_USER = "containers"
NO_IDMAP_ENV = "PYCTR_USERNS_NO_IDMAP"


# -- id maps -------------------------------------------------------------------------------------


class IdMap(NamedTuple):
    """Container ids container_id.. (size of them) are host ids host_id.."""
    container_id: int
    host_id: int
    size: int

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.size}\n"

    def to_spec(self) -> dict:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


def maps_from_spec(entries, field: str = UID_FIELD) -> list[IdMap]:
    """The OCI spec's [{"containerID", "hostID", "size"}...] as IdMaps, checked."""
    if not isinstance(entries, list):
        raise PyctrError(f"{field}: expected a list of mappings, got {type(entries).__name__}")
    maps = []
    for i, entry in enumerate(entries):
        try:
            values = [entry[k] for k in ("containerID", "hostID", "size")]
        except (KeyError, TypeError):
            raise PyctrError(f"{field}[{i}]: needs containerID, hostID and size") from None
        if not all(type(v) is int for v in values):
            raise PyctrError(f"{field}[{i}]: containerID, hostID and size must be integers")
        maps.append(IdMap(*values))
    check_maps(maps, field)
    return maps


def check_maps(maps: list[IdMap], field: str) -> None:
    """What the kernel would refuse with a bare EINVAL, said in one line naming the field."""
    if not maps:
        raise PyctrError(f"{field}: no mappings")
    if len(maps) > MAX_MAP_LINES:
        raise PyctrError(f"{field}: {len(maps)} mappings, the kernel takes at most {MAX_MAP_LINES}")
    for m in maps:
        if m.size < 1 or m.container_id < 0 or m.host_id < 0:
            raise PyctrError(f"{field}: {m.line().strip()!r}: ids must be >= 0 and size >= 1")
        if max(m.container_id, m.host_id) + m.size > ID_LIMIT:
            raise PyctrError(f"{field}: {m.line().strip()!r} goes past the largest id {ID_LIMIT - 1}")
    for side in ("container_id", "host_id"):
        ranges = sorted((getattr(m, side), m) for m in maps)
        for (start_a, a), (start_b, b) in zip(ranges, ranges[1:]):
            if start_a + a.size > start_b:
                raise PyctrError(f"{field}: {a.line().strip()!r} and {b.line().strip()!r} overlap "
                                 f"in their {side.replace('_id', '')} ids")


def host_id(maps: list[IdMap], container_id: int) -> int | None:
    """The host id a container id maps to, or None when it is not mapped."""
    for m in maps:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return None


def write_mappings(pid: int, uid_maps: list[IdMap], gid_maps: list[IdMap],
                   deny_setgroups: bool | None = None) -> None:
    """Write /proc/PID/uid_map and gid_map of a child that has unshared its user namespace.
    setgroups becomes "deny" when asked, or by default only when we are not root (see above)."""
    check_maps(uid_maps, UID_FIELD)
    check_maps(gid_maps, GID_FIELD)
    if deny_setgroups is None:
        deny_setgroups = os.geteuid() != 0
    if deny_setgroups:
        _write_proc(pid, "setgroups", "deny", "setgroups")
    _write_proc(pid, "uid_map", "".join(m.line() for m in uid_maps), UID_FIELD)
    _write_proc(pid, "gid_map", "".join(m.line() for m in gid_maps), GID_FIELD)


def _write_proc(pid: int, name: str, text: str, field: str) -> None:
    # One write(2): the kernel takes a map in a single write, and only once.
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PyctrError(f"{field}: process {pid} is gone") from None
    try:
        os.write(fd, text.encode())
    except OSError as e:
        hint = {errno.EPERM: "the host ids are not ours to map, or the map was already written",
                errno.EINVAL: "the kernel refused the ranges"}.get(e.errno, os.strerror(e.errno))
        shown = text.strip().replace("\n", "; ")
        raise PyctrError(f"{field}: writing {shown!r} to /proc/{pid}/{name}: {hint}") from None
    finally:
        os.close(fd)


# -- the handshake -------------------------------------------------------------------------------


class UsernsSync:
    """The handshake around unshare(CLONE_NEWUSER), over a socketpair made before fork().

        sync = UsernsSync()
        pid = os.fork()
        child:   fds = sync.enter(extra_flags=CLONE_NEWNS)     # unshare, wait for maps, become root
        parent:  sync.wait_unshared()
                 write_mappings(pid, uid_maps, gid_maps)      # on error: sync.fail(str(error))
                 sync.proceed(fds=[...])                      # optional fds for the child

    CLONE_NEWUSER is unshared first, alone or together with `extra_flags`: namespaces made with
    or after it belong to it, so the container's root may mount in its mount namespace.
    """

    def __init__(self, timeout: float | None = 30):
        # `timeout`: how long the parent waits for the child to unshare.
        self._parent, self._child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._parent, self._child):
            end.settimeout(timeout)

    # the child's side
    def enter(self, extra_flags: int = 0, as_root: bool = True) -> list[int]:
        """Unshare the user namespace (and `extra_flags`' ones), wait for the parent's maps,
        become root in it. Returns the fds the parent handed over."""
        self._parent.close()
        self._child.settimeout(None)  # the parent may take its time; if it dies, we read EOF
        try:
            unshare(CLONE_NEWUSER | extra_flags)
        except OSError as e:
            self._child.send(f"Euser namespace: {e}".encode())
            raise
        self._child.send(b"U")
        message, fds = recv_with_fds(self._child)
        self._child.close()
        if message != b"M":
            for fd in fds:
                os.close(fd)
            raise PyctrError(message[1:].decode() or "user namespace: the parent went away")
        if as_root:
            become_root()
        return fds

    # the parent's side
    def wait_unshared(self) -> None:
        self._child.close()
        try:
            message = self._parent.recv(4096)
        except TimeoutError:
            raise PyctrError("user namespace: the child did not unshare in time") from None
        if message != b"U":
            raise PyctrError(message[1:].decode() or "user namespace: the child exited before unsharing")

    def proceed(self, fds: list[int] = ()) -> None:
        socket.send_fds(self._parent, [b"M"], list(fds))
        self._parent.close()

    def fail(self, reason: str) -> None:
        """Tell the child the maps could not be written, so it exits instead of waiting."""
        try:
            self._parent.send(b"E" + reason.encode())
        except OSError:
            pass
        self._parent.close()


def recv_with_fds(sock: socket.socket, max_fds: int = 16) -> tuple[bytes, list[int]]:
    """A message and the fds that came with it, close-on-exec: an fd the init does not use must
    not reach the container's program. (socket.recv_fds ignores its flags before Python 3.12.)"""
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(max_fds * fds.itemsize),
                                            socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return message, list(fds)


def become_root() -> None:
    """In a mapped user namespace: uid and gid 0, no supplementary groups (the host's would
    otherwise still count in access checks), when setgroups is allowed."""
    with open("/proc/self/setgroups") as f:
        if f.read().strip() == "allow":
            os.setgroups([])
    for field, call in ((GID_FIELD, os.setresgid), (UID_FIELD, os.setresuid)):
        try:
            call(0, 0, 0)
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise PyctrError(f"{field}: container id 0 is not mapped") from None
            raise


def open_userns(uid_maps: list[IdMap], gid_maps: list[IdMap]) -> int:
    """An fd of a new user namespace with these maps and no process in it, for idmapped mounts
    made before (or without) the container. The caller closes it."""
    sync = UsernsSync()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sync.enter(as_root=False)
            code = 0
        finally:
            os._exit(code)
    try:
        sync.wait_unshared()
        write_mappings(pid, uid_maps, gid_maps)
        userns_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException as e:
        sync.fail(str(e))
        raise
    else:
        sync.proceed()  # the child exits; the fd keeps its namespace
        return userns_fd
    finally:
        os.waitpid(pid, 0)


# -- rootfs ownership: idmapped mounts -------------------------------------------------------------


def idmapped_tree(source_dir: str, userns_fd: int, recursive: bool = True) -> int:
    """A detached copy of the mount tree at `source_dir`, idmapped through the user namespace
    `userns_fd`: an fd that move_mount attaches. Made by host root (CAP_SYS_ADMIN over the
    filesystem); it may be attached in another mount namespace, such as the container's
    (pass it over a socket: UsernsSync.proceed(fds=[...]))."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = open_tree(AT_FDCWD, source_dir, flags)
    try:
        mount_setattr(tree, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                      attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    except BaseException:
        os.close(tree)
        raise
    return tree


def attach_tree(tree_fd: int, target: str | int) -> None:
    """Mount a detached tree on `target`: a path, or an fd of the folder (no path lookup: the
    container's root may not be able to walk the host path)."""
    if isinstance(target, int):
        move_mount(tree_fd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    else:
        move_mount(tree_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)


def idmapped_bind(source_dir: str, target: str | int, userns_fd: int) -> None:
    """mount --bind source_dir target, with owners seen through `userns_fd`'s maps: a file of
    host uid 0 shows as the host id that container uid 0 maps to."""
    tree = idmapped_tree(source_dir, userns_fd)
    try:
        attach_tree(tree, target)
    finally:
        os.close(tree)


def supports_idmapped_mounts(path: str) -> bool:
    """Whether `path`'s filesystem can be idmapped and used as an overlay lower layer: Linux >=
    5.19 and a filesystem that allows it (ext4, xfs, btrfs, tmpfs...). Probed once per filesystem.
    PYCTR_USERNS_NO_IDMAP=1 says no, everywhere (a test and debug switch for the chowned copy)."""
    if os.environ.get(NO_IDMAP_ENV) == "1":
        return False
    device = os.stat(path).st_dev
    if device not in _idmap_support:
        _idmap_support[device] = _probe_idmap(path)
    return _idmap_support[device]


_idmap_support: dict[int, bool] = {}  # st_dev -> probed answer


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def _probe_idmap(path: str) -> bool:
    if not _kernel_at_least(5, 19):
        return False
    try:
        userns_fd = open_userns([IdMap(0, FIRST_SUBID, 1)], [IdMap(0, FIRST_SUBID, 1)])
    except (OSError, PyctrError):
        return False
    try:
        os.close(idmapped_tree(path, userns_fd, recursive=False))  # detached: gone once closed
        return True
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP, errno.EBADF):
            return False
        raise
    finally:
        os.close(userns_fd)


# -- rootfs ownership: a chowned copy --------------------------------------------------------------

_CAP_XATTR = "security.capability"
_VFS_CAP_REVISION_MASK = 0xFF000000
_VFS_CAP_REVISION_3 = 0x03000000
_VFS_CAP_FLAGS_EFFECTIVE = 0x1


def chowned_copy_path(rootfs: str, uid_offset: int, gid_offset: int) -> Path:
    """Where chowned_copy keeps an image's shifted copy: beside its rootfs (so it goes with the
    image), named by the mapping, as Docker's /var/lib/docker/UID.GID."""
    rootfs = Path(rootfs)
    return rootfs.with_name(f"{rootfs.name}-{uid_offset}.{gid_offset}")


def chowned_copy(source_dir: str, dest_dir: str, uid_offset: int, gid_offset: int) -> Path:
    """A copy of source_dir at dest_dir, every owner shifted by the offsets (uid 0 -> uid_offset);
    modes with setuid/setgid bits, xattrs, device nodes and hard links kept; file capabilities
    rewritten for the new root. Made once: an existing dest_dir is complete (it is renamed into
    place at the end), and two callers at once build it once (a lock on its parent)."""
    dest = Path(dest_dir)
    if dest.is_dir():
        return dest
    with _dir_lock(dest.parent):
        if dest.is_dir():
            return dest
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):  # left by a copy that crashed
            shutil.rmtree(stale, ignore_errors=True)
        building = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        try:
            done = subprocess.run(["cp", "-a", "--", str(source_dir), str(building)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise PyctrError(f"copying {source_dir} for the remapped root: {done.stderr.strip()}")
            _shift_owners(building, uid_offset, gid_offset)
            os.rename(building, dest)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return dest


class _dir_lock:
    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self):
        self.fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        os.close(self.fd)


def _shift_owners(top: Path, uid_offset: int, gid_offset: int) -> None:
    seen = set()  # (dev, ino) of files with several links: each is shifted once
    _shift_one(str(top), os.lstat(top), uid_offset, gid_offset)
    folders = [str(top)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                _shift_one(entry.path, st, uid_offset, gid_offset)
                if stat.S_ISDIR(st.st_mode):
                    folders.append(entry.path)


def _shift_one(path: str, st: os.stat_result, uid_offset: int, gid_offset: int) -> None:
    caps = None
    if stat.S_ISREG(st.st_mode):
        try:
            caps = os.getxattr(path, _CAP_XATTR, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise
    os.lchown(path, st.st_uid + uid_offset, st.st_gid + gid_offset)
    if stat.S_ISLNK(st.st_mode):
        return
    # chown clears setuid/setgid (even as root) and file capabilities: put them back.
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if caps is not None:
        os.setxattr(path, _CAP_XATTR, _caps_for_root(caps, uid_offset), follow_symlinks=False)


def _caps_for_root(caps: bytes, uid_offset: int) -> bytes:
    """A file capability xattr rewritten as version 3 with its root moved by uid_offset: the
    kernel honours it only for the user namespace whose root is that host uid."""
    if len(caps) < 20:  # version 1 (before Linux 2.6.25): no root id to move
        return caps
    magic, *sets = struct.unpack_from("<5I", caps)
    root = struct.unpack_from("<I", caps, 20)[0] if magic & _VFS_CAP_REVISION_MASK == _VFS_CAP_REVISION_3 else 0
    return struct.pack("<6I", _VFS_CAP_REVISION_3 | (magic & _VFS_CAP_FLAGS_EFFECTIVE), *sets, root + uid_offset)


# -- choosing the maps: --userns-remap and --userns=auto ------------------------------------------


def read_subids(name: str, path: str) -> list[tuple[int, int]]:
    """The (start, count) ranges of NAME in a subuid/subgid file, in file order."""
    ranges = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0].startswith("#"):
            continue
        owner, start, count = parts
        if owner == name:
            try:
                ranges.append((int(start), int(count)))
            except ValueError:
                raise PyctrError(f"{path}: malformed line {line.strip()!r} (format NAME:START:COUNT)") from None
    return ranges


def _maps_from_ranges(ranges: list[tuple[int, int]]) -> list[IdMap]:
    maps, container_id = [], 0
    for start, count in ranges:  # in file order, container ids one after another (as dockerd)
        maps.append(IdMap(container_id, start, count))
        container_id += count
    return maps


def remap_from_subid(user: str, group: str | None = None, *, subuid_path: str = "/etc/subuid",
                     subgid_path: str = "/etc/subgid") -> tuple[list[IdMap], list[IdMap]]:
    """(uid_maps, gid_maps) from USER's ranges in subuid and GROUP's (default USER) in subgid."""
    group = group or user
    uid_ranges = read_subids(user, subuid_path)
    if not uid_ranges:
        raise PyctrError(f"no subordinate uids for {user!r} in {subuid_path} (add a line {user}:START:COUNT)")
    gid_ranges = read_subids(group, subgid_path)
    if not gid_ranges:
        raise PyctrError(f"no subordinate gids for {group!r} in {subgid_path} (add a line {group}:START:COUNT)")
    uid_maps, gid_maps = _maps_from_ranges(uid_ranges), _maps_from_ranges(gid_ranges)
    check_maps(uid_maps, subuid_path)
    check_maps(gid_maps, subgid_path)
    return uid_maps, gid_maps


def userns_remap(value: str, *, root: str = "/") -> tuple[list[IdMap], list[IdMap]]:
    """dockerd's --userns-remap: "default" (user dockremap, created when missing) or
    USER[:GROUP]. `root` is where etc/passwd, etc/subuid... are (another folder in tests)."""
    if value == "default":
        ensure_remap_user(REMAP_USER, root=root)
        user, group = REMAP_USER, REMAP_USER
    else:
        user, _, group = value.partition(":")
        if not user:
            raise PyctrError(f"--userns-remap: {value!r}: expected default or USER[:GROUP]")
    etc = Path(root, "etc")
    return remap_from_subid(user, group or None, subuid_path=str(etc / "subuid"),
                            subgid_path=str(etc / "subgid"))


def _user_exists(name: str, etc: Path) -> bool:
    try:
        with open(etc / "passwd") as f:
            return any(line.split(":", 1)[0] == name for line in f)
    except FileNotFoundError:
        return False


def ensure_remap_user(name: str = REMAP_USER, *, root: str = "/", size: int = DEFAULT_SIZE) -> None:
    """As dockerd: a system user and group NAME, and `size` subordinate uids and gids for it
    after every range already given (from 100000 on), by useradd and usermod."""
    etc = Path(root, "etc")
    prefix = [] if os.path.realpath(root) == "/" else ["--prefix", str(root)]
    if not _user_exists(name, etc):
        _run_tool(["useradd", *prefix, "--system", "--user-group", "--no-create-home",
                   "--shell", "/bin/false", name])
    for option, file in (("--add-subuids", "subuid"), ("--add-subgids", "subgid")):
        path = etc / file
        if read_subids(name, str(path)):
            continue
        if not path.exists():
            path.touch(0o644)  # usermod adds ranges only to a file that exists
        start = max([FIRST_SUBID] + [s + c for s, c in _all_subids(path)])
        _run_tool(["usermod", *prefix, option, f"{start}-{start + size - 1}", name])


def _all_subids(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((int(parts[1]), int(parts[2])))
    return ranges


def _run_tool(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise PyctrError(f"--userns-remap=default needs {argv[0]} (Debian: apt-get install passwd)") from None
    if done.returncode != 0:
        raise PyctrError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _auto_paths(state_path, lock_path) -> tuple[Path, Path]:
    if state_path is None:
        state_path = settings.current().root / "userns-auto.json"
    if lock_path is None:
        lock_path = settings.current().locks_dir / "userns-auto.lock"
    return Path(state_path), Path(lock_path)


def auto_range(owner: str, size: int = DEFAULT_SIZE, *, pool_user: str = AUTO_POOL_USER,
               subuid_path: str = "/etc/subuid", subgid_path: str = "/etc/subgid",
               state_path: str | None = None, lock_path: str | None = None
               ) -> tuple[list[IdMap], list[IdMap]]:
    """podman's --userns=auto: container ids 0..size-1 on the first free host range of `size`
    in pool_user's subuid and subgid ranges, recorded for `owner` (a container id) until
    release_auto_range. Asking again for the same owner gives the same maps."""
    if size < 1:
        raise PyctrError(f"--userns=auto: size must be at least 1, not {size}")
    uid_pool = read_subids(pool_user, subuid_path)
    gid_pool = read_subids(pool_user, subgid_path)
    for pool, path in ((uid_pool, subuid_path), (gid_pool, subgid_path)):
        if not pool:
            raise PyctrError(f"--userns=auto: no ranges for user {pool_user!r} in {path} "
                             f"(as podman: add a line {pool_user}:START:COUNT)")
    state, lock = _auto_paths(state_path, lock_path)
    with jsonstore.updating(state, lock, {}) as allocations:
        if owner in allocations:
            given = allocations[owner]
            return [IdMap(0, given["uid"], given["size"])], [IdMap(0, given["gid"], given["size"])]
        uid = _first_free(uid_pool, [(a["uid"], a["size"]) for a in allocations.values()], size)
        gid = _first_free(gid_pool, [(a["gid"], a["size"]) for a in allocations.values()], size)
        if uid is None or gid is None:
            which = subuid_path if uid is None else subgid_path
            raise PyctrError(f"--userns=auto: no free range of {size} ids left for {pool_user!r} in {which}")
        allocations[owner] = {"uid": uid, "gid": gid, "size": size}
    return [IdMap(0, uid, size)], [IdMap(0, gid, size)]


def release_auto_range(owner: str, *, state_path: str | None = None, lock_path: str | None = None) -> None:
    """Give back `owner`'s range (when its container is removed); nothing if it has none."""
    state, lock = _auto_paths(state_path, lock_path)
    with jsonstore.updating(state, lock, {}) as allocations:
        allocations.pop(owner, None)


def _first_free(pool: list[tuple[int, int]], taken: list[tuple[int, int]], size: int) -> int | None:
    for pool_start, pool_count in pool:
        # A free range starts at the pool's start or right after a taken one.
        for start in sorted({pool_start} | {s + c for s, c in taken}):
            if start < pool_start or start + size > pool_start + pool_count:
                continue
            if all(start + size <= s or s + c <= start for s, c in taken):
                return start
    return None
