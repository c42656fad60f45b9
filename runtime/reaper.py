"""The container's output into Docker's json-file log, as its monitor copies it.

Standard library only, and nothing of pyctr: container.py takes its clock from here.
"""

import os
import select
import time


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


# Docker's json-file splits a line at 16 KiB: an entry whose "log" lacks the final newline is a
# partial line, and the entries of one line, printed in order, give its bytes back.
MAX_ENTRY = 16 * 1024
READ_SIZE = 65536


class LineSplitter:
    """One stream's bytes into json-file entries of at most MAX_ENTRY bytes, in linear time and
    constant memory: it holds at most one unfinished entry."""

    def __init__(self, stream: str):
        self.stream = stream
        self.pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        entries = []
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            self._take(chunk[start:newline + 1], entries)
            entries.append(_entry(self.stream, bytes(self.pending)))
            self.pending.clear()
            start = newline + 1
        self._take(chunk[start:], entries)
        return entries

    def end(self) -> list[bytes]:
        """At EOF, what is left goes out as a last partial entry."""
        entries = [_entry(self.stream, bytes(self.pending))] if self.pending else []
        self.pending.clear()
        return entries

    def _take(self, data: bytes, entries: list[bytes]) -> None:
        self.pending += data
        while len(self.pending) > MAX_ENTRY or (len(self.pending) == MAX_ENTRY and self.pending[-1:] != b"\n"):
            cut = _utf8_boundary(self.pending, MAX_ENTRY)
            entries.append(_entry(self.stream, bytes(self.pending[:cut])))
            del self.pending[:cut]


def _utf8_boundary(data: bytearray, limit: int) -> int:
    """The largest cut <= limit that does not split a UTF-8 character (so that each entry
    decodes on its own and the whole prints back unchanged)."""
    lead = limit - 1
    while lead > limit - 4 and lead > 0 and data[lead] & 0xC0 == 0x80:
        lead -= 1
    byte = data[lead]
    length = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
    return lead if lead > 0 and lead + length > limit else limit


def capture(log_path: str, streams: dict[int, str], tee: dict[int, int] | None = None) -> None:
    """Copy the container's output into json-file lines until every stream reaches EOF; `tee`
    also copies each stream, as it comes, to another fd (a foreground run's terminal)."""
    splitters = {fd: LineSplitter(name) for fd, name in streams.items()}
    tee = tee or {}
    with open(log_path, "ab", buffering=0) as log:
        while splitters:
            readable, _, _ = select.select(list(splitters), [], [])
            for fd in readable:
                try:
                    chunk = os.read(fd, READ_SIZE)
                except OSError:  # EIO: the pty's other side is gone
                    chunk = b""
                if chunk:
                    if fd in tee:
                        _write_all(tee[fd], chunk)
                    out = splitters[fd].feed(chunk)
                else:
                    out = splitters.pop(fd).end()
                    os.close(fd)
                if out:
                    log.write(b"".join(out))


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the reader went away (`| head`): the log still gets everything


# surrogateescape turns each byte that is not UTF-8 into one lone surrogate; each becomes U+FFFD,
# as in Docker's json-file log (one per byte, where "replace" gives one per broken sequence).
_NOT_UTF8 = {code: "\ufffd" for code in range(0xDC80, 0xDD00)}


def _entry(stream: str, data: bytes) -> bytes:
    import json  # here, not above: the records' clock (now_rfc3339) must not bring in json's decoder and re

    text = data.decode("utf-8", "surrogateescape").translate(_NOT_UTF8)
    entry = {"log": text, "stream": stream, "time": now_rfc3339()}
    return json.dumps(entry).encode() + b"\n"
