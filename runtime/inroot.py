"""Paths inside a container's root, resolved and created through file descriptors.

A mount target such as /a/b/c may lie in a volume that another container shares and changes
while we work: resolve it as a string, and a folder swapped for a symlink between the check and
the mkdir or mount sends either one to the host (runc CVE-2021-30465). So every step here is
relative to a file descriptor we hold, symlinks are followed as the container would see them (an
absolute target starts again at the container's root, `..` stops there), and the caller mounts on
the result through /proc/self/fd/N. Alpine's /var/run -> /run still works; leaving the root does not.

    open_path(root_fd, path, follow_last=True) -> fd    O_PATH fd of an existing path
    make_path(root_fd, path, directory) -> fd            the same, creating what is missing
"""

import errno
import os
import stat

from pyctr.runtime import syscalls
from pyctr.runtime.errors import PyctrError

_O_PATH = os.O_PATH | os.O_CLOEXEC
MAX_LINKS = 40  # the kernel's limit too
_openat2_works: bool | None = None  # None: not tried yet


def open_path(root_fd: int, path: str, follow_last: bool = True) -> int:
    """An O_PATH descriptor of container path `path`, never outside the root."""
    global _openat2_works
    relative = "/".join(_parts(path)) or "."
    flags = _O_PATH | (0 if follow_last else os.O_NOFOLLOW)
    if _openat2_works is not False:
        for _ in range(16):  # EAGAIN: a rename raced with the kernel's walk; try again
            try:
                fd = syscalls.openat2(root_fd, relative, flags,
                                      syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS)
                _openat2_works = True
                return fd
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    _openat2_works = False
                    break
                if e.errno != errno.EAGAIN:
                    raise
        else:
            raise OSError(errno.EAGAIN, f"cannot resolve {path}: it keeps changing")
    return _walk(root_fd, relative, follow_last)


def _walk(root_fd: int, path: str, follow_last: bool) -> int:
    """open_path without openat2 (before Linux 5.6): one component at a time, O_NOFOLLOW, with
    the symlinks read and resolved here, and `..` taken from our own stack of descriptors."""
    stack = [os.dup(root_fd)]
    parts = _parts(path)
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, _O_PATH | os.O_NOFOLLOW, dir_fd=stack[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) and (parts or follow_last):
                target = os.readlink("", dir_fd=fd)  # the link we opened, not whatever has its name now
                os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts = _parts(target) + parts
                continue
            stack.append(fd)
            if parts and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, f"{name} in {path} is not a directory")
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def make_path(root_fd: int, path: str, directory: bool) -> int:
    """open_path, after creating what is missing: folders (0755), and the last part as a folder
    or an empty file. A symlink met on the way (dangling, or swapped in while we work) is followed
    inside the root, as the kernel would, and what it points to is created there."""
    for _ in range(MAX_LINKS):
        made = _make_once(root_fd, path, directory)
        if isinstance(made, int):
            return made
        path = made
    raise OSError(errno.ELOOP, f"too many levels of symbolic links in {path}")


def _make_once(root_fd: int, path: str, directory: bool) -> int | str:
    """The descriptor of `path`, or the path to try next when a symlink was in the way."""
    try:
        return open_path(root_fd, path)
    except FileNotFoundError:
        pass
    parts = _parts(path)
    # The longest part of the path that exists; "" is the root itself.
    for have in range(len(parts) - 1, -1, -1):
        try:
            parent = open_path(root_fd, "/".join(parts[:have]))
            break
        except FileNotFoundError:
            continue
    try:
        for index in range(have, len(parts)):
            name = parts[index]
            if name == "..":  # refused at create; never climb from a descriptor we made
                raise PyctrError(f"invalid mount destination {path!r}")
            child = _make_entry(parent, name, index == len(parts) - 1 and not directory, path)
            if isinstance(child, str):  # a symlink: where it points, then the rest of the path
                base = "" if child.startswith("/") else "/".join(parts[:index])
                return "/".join([base, child, *parts[index + 1:]])
            os.close(parent)
            parent = child
        made, parent = parent, -1
        return made
    finally:
        if parent >= 0:
            os.close(parent)


def _make_entry(parent: int, name: str, as_file: bool, path: str) -> int | str:
    """Create NAME in the folder `parent` unless it is there; its descriptor, or, if it is a
    symlink, where that points."""
    try:
        if as_file:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644, dir_fd=parent))
        else:
            os.mkdir(name, 0o755, dir_fd=parent)
    except FileExistsError:
        pass  # there already, or made meanwhile: what it is now is checked below
    fd = os.open(name, _O_PATH | os.O_NOFOLLOW, dir_fd=parent)
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) if as_file else stat.S_ISDIR(mode):
        return fd
    try:
        if stat.S_ISLNK(mode):
            return os.readlink("", dir_fd=fd)  # the link we opened, whatever has its name now
    finally:
        os.close(fd)
    wanted, found = ("a file", "a folder") if as_file else ("a folder", "a file")
    raise PyctrError(f"cannot create the mount point {path}: {name} is {found}, not {wanted}")


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def shown(fd: int) -> str:
    """Where a descriptor points, as a path a person would type (for --explain and errors)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"/proc/self/fd/{fd}"


def fd_path(fd: int) -> str:
    """The path that makes mount(2) act on exactly this descriptor's file, as runc does."""
    return f"/proc/self/fd/{fd}"
