"""Unpack a rootfs tarball so that nothing in it can write outside the rootfs.

Python's own extraction filters do not fit a root filesystem (checked on 3.11.7 with Alpine 3.20.3):
  - "data" drops ownership and refuses absolute symlinks, and every Alpine rootfs has hundreds
    of them (bin/ls -> /bin/busybox);
  - "tar" keeps ownership but clears the setuid, setgid and sticky bits: /tmp loses its 1777.
So each member is checked here, in archive order and against what is already on disk, and tarfile
is then told to trust the checked member ("fully_trusted") and keep all of its attributes.

A member is refused when
  - its name is absolute or has a ".." component;
  - it would be written through a symlink unpacked before it (etc -> /etc, then etc/passwd);
  - it is a symlink whose target leaves the rootfs, read as the container reads it: an absolute
    target starts at the top of the rootfs, a relative one at the link's folder, and ".." may not
    climb above the top;
  - it is a hardlink whose target is outside, or is reached through a symlink (link(2) would follow it
    to a file of the host);
  - it is a character or block device: a rootfs needs none, the runtime mounts /dev itself.
"""

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path

from pyctr.images import compression
from pyctr.runtime import explain
from pyctr.runtime.errors import PyctrError


# tar's one-letter flags, for --explain (none for zstd: tarfile, and so unpack, cannot read it).
_TAR_FLAG = {"gzip": "z", "xz": "J", "bzip2": "j"}


class UnsafeArchiveError(PyctrError):
    """The archive tries to reach outside its rootfs, or holds what a rootfs must not."""


MAX_EXTENDED_HEADER = 1 << 20  # bytes, as Go's archive/tar (Docker's) allows
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                     tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header, refusing a pax or GNU long-name header larger than 1 MiB: tarfile reads
    one whole into memory, so a few KB of gzip would otherwise cost gigabytes. For
    tarfile.open(..., tarinfo=BoundedTarInfo)."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        return _bounded(super().frombuf(buf, encoding, errors))

    # tarfile has no public hook before it reads a header's payload. Older tarfiles (Debian 12's
    # 3.11.2-6+deb12u6) read every header through frombuf; newer ones, with CPython's 2025 tarfile
    # fixes (Debian's +deb12u9), route frombuf through _frombuf and read the header after a pax
    # or long-name one through _frombuf alone. Bounding both covers either.
    if hasattr(tarfile.TarInfo, "_frombuf"):
        @classmethod
        def _frombuf(cls, buf, encoding, errors, **kwargs):
            return _bounded(super()._frombuf(buf, encoding, errors, **kwargs))


def _bounded(info: tarfile.TarInfo) -> tarfile.TarInfo:
    if info.type in _EXTENDED_HEADERS and info.size > MAX_EXTENDED_HEADER:
        # Not a tarfile.HeaderError: tarfile takes some of those for the end of the archive.
        raise UnsafeArchiveError(f"refusing to read a tar archive with an extended header of "
                                 f"{info.size} bytes (pyctr reads at most {MAX_EXTENDED_HEADER})")
    return info


def unpack(archive: Path, rootfs: Path) -> None:
    """Unpack `archive` (tar, tar.gz, tar.xz or tar.bz2) into the new folder `rootfs`.

    On any error the half-written rootfs is removed and the error names the archive and the entry.
    """
    explain.step("mkdir", "-p", rootfs)
    explain.step("tar", f"-x{_compression_flag(archive)}f", archive, "-C", rootfs, "--numeric-owner")
    rootfs.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*", tarinfo=BoundedTarInfo) as tar:
            checker = MemberChecker(str(rootfs), str(archive))
            checked = (checker.check(member) for member in tar)
            tar.extractall(rootfs, members=checked, numeric_owner=True, **trust_checked_members())
    except UnsafeArchiveError:
        shutil.rmtree(rootfs, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(rootfs, ignore_errors=True)
        raise PyctrError(f"cannot unpack {archive}: {describe(e)}") from e


def tree_size(top: Path) -> int:
    """Bytes of the regular files under `top`, each hardlinked file counted once (as `du` does)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(top):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if not stat.S_ISREG(st.st_mode):  # symlinks, fifos: no content to count
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def read_file_inside(rootfs: Path, relative: str, limit: int = 65536) -> str | None:
    """A small text file of the rootfs, or None; never follows a symlink (it could point at the host)."""
    path = str(rootfs)
    for part in relative.strip("/").split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def trust_checked_members() -> dict:
    # Python >= 3.11.4 has extraction filters; name the one that keeps everything, because the
    # default changes to "data" in 3.14 and would strip ownership and modes.
    return {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class MemberChecker:
    """The safety rules above, for the members of one archive unpacked into `rootfs`, in order.

    `source` names the archive in errors ("refusing to unpack SOURCE: entry ..."). Both a rootfs
    tarball (unpack below) and an image layer (layers.py) are checked by it.
    """

    def __init__(self, rootfs: str, source: str):
        self.rootfs = rootfs
        self.source = source

    def refuse(self, name: str, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"refusing to unpack {self.source}: entry {name!r} {why}")

    def safe_parts(self, name: str) -> list[str]:
        """The path components of a member's name, once the name is known not to leave the rootfs:
        not absolute, no "..", and no folder on the way that is a symlink unpacked before."""
        if not name or name.startswith("/"):
            raise self.refuse(name, "has an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(name, "climbs out of the rootfs with '..'")
        through = _first_symlink(self.rootfs, parts[:-1])
        if through:
            raise self.refuse(name, f"would be written through the symlink {through!r}")
        return parts

    def check(self, member: tarfile.TarInfo) -> tarfile.TarInfo:
        """The member, if tarfile may extract it as it is; UnsafeArchiveError if not."""
        name = member.name

        def refuse(why: str) -> UnsafeArchiveError:
            return self.refuse(name, why)

        if not name or name.startswith("/"):
            raise refuse("has an absolute path")
        if member.ischr() or member.isblk():
            raise refuse("is a device node")
        parts = self.safe_parts(name)
        if not parts and not member.isdir():
            raise refuse("would replace the top folder of the rootfs")

        if member.issym():
            start = [] if member.linkname.startswith("/") else parts[:-1]
            if not _stays_inside(start + member.linkname.split("/")):
                raise refuse(f"is a symlink to {member.linkname!r}, outside the rootfs")
        elif member.islnk():
            if member.linkname.startswith("/"):
                raise refuse(f"is a hardlink to the absolute path {member.linkname!r}")
            link_parts = [p for p in member.linkname.split("/") if p not in ("", ".")]
            if ".." in link_parts or not link_parts:
                raise refuse(f"is a hardlink to {member.linkname!r}, outside the rootfs")
            through = _first_symlink(self.rootfs, link_parts)
            if through:
                raise refuse(f"is a hardlink through the symlink {through!r}")
            if not os.path.isfile(os.path.join(self.rootfs, *link_parts)):
                # tarfile would otherwise copy some other member there; a sound archive always
                # stores the file before its hardlinks.
                raise refuse(f"is a hardlink to {member.linkname!r}, which is not a file unpacked before it")

        if parts:
            remove_replaced(os.path.join(self.rootfs, *parts))
        return member


def remove_replaced(target: str) -> None:
    """A later entry replaces an earlier one, as with GNU tar: remove the old one first (unless
    both are folders), since tarfile would open a symlink left there and write wherever it points."""
    if os.path.islink(target) or os.path.lexists(target) and not os.path.isdir(target):
        os.unlink(target)


def _first_symlink(rootfs: str, parts: list[str]) -> str | None:
    """The first of rootfs/parts[0], rootfs/parts[0]/parts[1], ... that is a symlink on disk."""
    path = rootfs
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return "/".join(parts[: i + 1])
        if not os.path.exists(path):
            return None
    return None


def _stays_inside(parts: list[str]) -> bool:
    """Walk path parts from the top of the rootfs: False as soon as '..' would climb above it."""
    depth = 0
    for part in parts:
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return False
    return True


def _compression_flag(archive: Path) -> str:
    """tar's flag for the archive's compression, read from its first bytes (for --explain)."""
    try:
        return _TAR_FLAG.get(compression.sniff_file(archive), "")
    except OSError:
        return ""


def describe(error: BaseException) -> str:
    if isinstance(error, tarfile.ReadError):
        return "not a readable tar archive (tar, tar.gz, tar.xz or tar.bz2)"
    if isinstance(error, EOFError):
        return "the archive ends early (truncated?)"
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror or error}: {posixpath.basename(str(error.filename))}"
    return str(error) or type(error).__name__
