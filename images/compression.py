"""Compressed tar streams: their compression, told by their first bytes, and their bytes uncompressed.

The first bytes decide, never a file name or a media type (as Docker does: media types lie more
often than magic numbers). A compression is "" (plain), "gzip", "zstd", "xz" or "bzip2".
"""

import hashlib
import os

from pyctr.runtime.errors import PyctrError

HEAD = 6  # the first bytes that tell every compression below
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh"}
_CHUNK = 1 << 20

# The decompressors are imported when a stream needs one: the CLI starts without them.


def sniff(head: bytes) -> str:
    """The compression of a stream whose first bytes (HEAD of them, or more) are `head`."""
    return next((name for name, magic in _MAGIC.items() if head.startswith(magic)), "")


def sniff_file(source) -> str:
    """The compression of a file: a path, or a binary file object at its start (left there)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return sniff(f.read(HEAD))
    head = source.read(HEAD)
    source.seek(0)
    return sniff(head)


def open_uncompressed(source, compression: str):
    """A reader of the bytes `source` (a path, or a binary file object) holds, decompressed as
    they are read."""
    if compression == "gzip":
        import gzip

        return gzip.open(source, "rb")  # reads every member of a multi-member gzip
    if compression == "zstd":
        import zstandard

        raw = open(source, "rb") if isinstance(source, (str, os.PathLike)) else source
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
    if compression == "xz":
        import lzma

        return lzma.open(source, "rb")
    if compression == "bzip2":
        import bz2

        return bz2.open(source, "rb")
    if compression:
        raise PyctrError(f"pyctr cannot decompress a {compression} stream")
    return open(source, "rb") if isinstance(source, (str, os.PathLike)) else source


def uncompressed_digest(path: "str | os.PathLike", what: str, compression: str | None = None
                        ) -> tuple[str, int]:
    """(sha256:HEX, size) of the bytes the file holds uncompressed: the diff_id of the tar it
    holds. `compression` None: told by the file's first bytes. `what` names the file in errors."""
    if compression is None:
        compression = sniff_file(path)
    sha256, size = hashlib.sha256(), 0
    try:
        with open_uncompressed(path, compression) as stream:
            while chunk := stream.read(_CHUNK):
                sha256.update(chunk)
                size += len(chunk)
    except _stream_errors(compression) as e:
        raise PyctrError(f"{what} is not a sound {compression} stream: {e or 'it ends early'}") from None
    return "sha256:" + sha256.hexdigest(), size


def _stream_errors(compression: str) -> tuple[type[BaseException], ...]:
    """What a broken stream of this compression raises when it is read."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError)
    if compression == "gzip":
        import zlib

        errors += (zlib.error,)
    elif compression == "zstd":
        import zstandard

        errors += (zstandard.ZstdError,)
    elif compression == "xz":
        import lzma

        errors += (lzma.LZMAError,)
    return errors


class HashingReader:
    """A reader that hashes every byte read through it: a tar's diff_id in the pass that reads it."""

    def __init__(self, inner):
        self.inner, self.sha256 = inner, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        try:
            # `size` bytes unless at the end: tarfile takes a short read for the end of the data,
            # and a decompressor may return less than asked.
            data = self.inner.read(size)
            while 0 < len(data) < size:
                more = self.inner.read(size - len(data))
                if not more:
                    break
                data += more
        except Exception as e:  # a broken zstd stream is an OSError, as a broken gzip one is
            if isinstance(e, (OSError, EOFError)) or type(e).__name__ != "ZstdError":
                raise
            raise OSError(f"bad zstd data: {e}") from None
        self.sha256.update(data)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass
