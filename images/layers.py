"""Image layers: each layer blob unpacked once, into a folder of its own, for overlayfs to stack.

    $PYCTR_ROOT/images/_layers/HEX/        HEX: the layer's diff_id (sha256 of the uncompressed tar)
      diff/                                the layer's files: one lowerdir of a container's overlay
      layer.json                           DiffID, Size, RootDir (the tar's own "./" entry, if any)
      diff-UID.GID/                        a copy with owners shifted, for a user namespace where
                                           idmapped mounts are not possible (runtime/bundle.py)

A layer blob is a tar, plain, gzip or zstd. Its diff_id is computed while it is unpacked and must
be the one the image's config lists (rootfs.diff_ids): otherwise nothing is kept. The files are
checked as a rootfs tarball's are (unpack.MemberChecker: no escape by "..", absolute names or
links, no device nodes). The OCI image spec's whiteouts become overlayfs's:

    DIR/.wh.NAME      "NAME is deleted": a character device 0/0 named NAME, which hides NAME of
                      the layers below (made here, never taken from the tar)
    DIR/.wh..wh..opq  "DIR hides everything below it": the xattr trusted.overlay.opaque=y on DIR

A whiteout applies only to the layers below: a NAME that this layer itself holds stays.

Extended attributes in the tar (PAX SCHILY.xattr.*) are kept for security.capability (file
capabilities, as Docker keeps them: ping's cap_net_raw) and user.*; never trusted.* (overlayfs's
own, such as the opaque mark, come only from whiteouts) nor security labels.
"""

import errno
import os
import shutil
import stat
import tarfile
from pathlib import Path

from pyctr.images import compression
from pyctr.runtime import explain, jsonstore, settings
from pyctr.runtime.errors import PyctrError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
PAX_XATTR = "SCHILY.xattr."
RECORD = "layer.json"


def layers_dir() -> Path:
    return settings.current().images_dir / "_layers"


def layer_folder(diff_id: str) -> Path:
    """The folder of the layer with this diff_id (it holds diff/ and layer.json)."""
    from pyctr.images import oci

    return layers_dir() / oci.check_digest(diff_id)


def diff_dir(diff_id: str) -> Path:
    """The layer's files, as overlayfs takes them for a lowerdir."""
    return layer_folder(diff_id) / "diff"


def read_record(diff_id: str) -> dict | None:
    record = jsonstore.read_json(layer_folder(diff_id) / RECORD)
    return record if isinstance(record, dict) else None


def ensure_layer(blob: Path, diff_id: str, source: str) -> dict:
    """The layer `diff_id`, unpacked from `blob` unless it is here already; its record.

    Unpacks into a hidden folder beside the others and renames it into place once the diff_id is
    checked, so a layer folder that is there is complete. Call with the store lock held.
    `source` names the blob in errors (such as "layer sha256:abc…").
    """
    folder = layer_folder(diff_id)
    record = read_record(diff_id)
    if record is not None and (folder / "diff").is_dir():
        return record
    top = layers_dir()
    settings.make_private(top)  # only root enters: layers hold setuid files
    for stale in top.glob(f".{folder.name}.tmp-*"):  # left by an unpack that was killed
        shutil.rmtree(stale, ignore_errors=True)
    work = top / f".{folder.name}.tmp-{os.getpid()}"
    try:
        settings.make_private(work)
        explain.comment(f"unpack {source} into {folder / 'diff'}, whiteouts as overlayfs's")
        actual, root_dir = unpack_layer(blob, work / "diff", source)
        if actual != diff_id:
            raise PyctrError(f"{source} does not match the image's config: its uncompressed "
                             f"content has diff_id {actual}, the config says {diff_id}")
        from pyctr.images import unpack

        record = {"DiffID": diff_id, "Size": unpack.tree_size(work / "diff"), "RootDir": root_dir}
        jsonstore.write_json(work / RECORD, record)
        if folder.exists():  # a folder without its layer.json (damaged): replaced
            shutil.rmtree(folder)
        explain.step("mv", work, folder)
        os.rename(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


def remove_layer(diff_id: str) -> None:
    """Remove a layer folder (with its shifted copies): renamed away first, so a half-removed
    layer is never taken for a layer."""
    folder = layer_folder(diff_id)
    if not folder.exists():
        return
    doomed = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-deleting")
    explain.step("rm", "-rf", folder)
    os.rename(folder, doomed)
    shutil.rmtree(doomed)


def unpack_layer(blob: Path, target: Path, source: str) -> tuple[str, dict | None]:
    """Unpack the layer blob into the new folder `target`: (its diff_id, its root's owner and
    mode as {"Uid", "Gid", "Mode"} if the tar has a "./" entry, else None)."""
    from pyctr.images import oci, unpack

    target.mkdir()
    try:
        with open(blob, "rb") as raw:
            kind = compression.sniff_file(raw)
            if kind not in oci.LAYER_COMPRESSION.values():
                kind = ""  # xz or bzip2 is no layer's: read as the plain tar it may be, or refused
            with compression.open_uncompressed(raw, kind) as uncompressed:
                stream = compression.HashingReader(uncompressed)
                with tarfile.open(fileobj=stream, mode="r|", tarinfo=unpack.BoundedTarInfo) as tar:  # one pass, in order
                    applier = _LayerApplier(str(target), source)
                    tar.extractall(target, members=applier.members(tar), numeric_owner=True,
                                   **unpack.trust_checked_members())
                stream.drain()  # the tar's end: its zero blocks count in the diff_id
    except BaseException as e:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(e, (tarfile.TarError, EOFError, OSError, ValueError)):
            raise PyctrError(f"cannot unpack {source}: {_describe(e)}") from e
        raise  # UnsafeArchiveError (which names the entry), KeyboardInterrupt...
    return stream.digest, applier.root_dir


class _LayerApplier:
    """Checks each member and turns whiteouts into overlayfs's, in archive order."""

    def __init__(self, rootfs: str, source: str):
        from pyctr.images import unpack

        self.rootfs = rootfs
        self.checker = unpack.MemberChecker(rootfs, source)
        self.root_dir: dict | None = None

    def members(self, tar: tarfile.TarFile):
        """The members tarfile may extract as they are; whiteouts are applied here instead."""
        for member in tar:
            base = member.name.rstrip("/").rpartition("/")[2]
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(member, base)
                continue
            checked = self.checker.check(member)
            if member.isdir() and not [p for p in member.name.split("/") if p not in ("", ".")]:
                self.root_dir = {"Uid": member.uid, "Gid": member.gid, "Mode": member.mode & 0o7777}
            yield checked
            self._xattrs(checked)  # tarfile asks for the next member once this one is written

    def _xattrs(self, member: tarfile.TarInfo) -> None:
        if not (member.isreg() or member.isdir()):
            return
        for key, value in member.pax_headers.items():
            name = key[len(PAX_XATTR):]
            if not key.startswith(PAX_XATTR) or name != "security.capability" and not name.startswith("user."):
                continue
            path = os.path.join(self.rootfs, *self.checker.safe_parts(member.name))
            explain.step("setfattr", "-n", name, path)
            try:  # tarfile keeps binary values as surrogate escapes
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise

    def _whiteout(self, member: tarfile.TarInfo, base: str) -> None:
        parts = self.checker.safe_parts(member.name)
        folder = os.path.join(self.rootfs, *parts[:-1])
        if base == OPAQUE_MARKER:
            os.makedirs(folder, mode=0o755, exist_ok=True)  # safe_parts: no symlink on the way
            explain.step("setfattr", "-n", OPAQUE_XATTR, "-v", "y", folder)
            os.setxattr(folder, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", "..") or name.startswith(WHITEOUT_PREFIX):
            raise self.checker.refuse(member.name, "is not a whiteout pyctr can apply")
        os.makedirs(folder, mode=0o755, exist_ok=True)
        target = os.path.join(folder, name)
        if os.path.lexists(target):
            return  # this layer's own NAME: a whiteout hides only what is below
        explain.step("mknod", target, "c", "0", "0")
        os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))
        os.lchown(target, member.uid, member.gid)


def _describe(error: BaseException) -> str:
    if isinstance(error, tarfile.ReadError):
        return "not a readable tar archive (plain, gzip or zstd)"
    if isinstance(error, EOFError):
        return "the layer ends early (truncated?)"
    from pyctr.images import unpack

    return unpack.describe(error)
