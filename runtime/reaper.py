"""The long, idle part of a detached container's monitor, kept as small as Python gets.

Once PID 1 runs, the forked monitor execs `python -I -S reaper.py …`: a fresh interpreter with no
site and no pyctr holds about half the memory of a fork of the CLI, and one of these stays for
every running container. It copies the container's output into Docker's json-file log, reaps
PID 1, then execs `python -I -m pyctr.runtime.monitor finish ID STATUS` to record the exit and
clean up. An exec keeps the PID, so the monitor stays PID 1's parent throughout. Both run
isolated (-I) in /: the container may have written Python files into the caller's directory.

Usage: python -I -S reaper.py PID CONTAINER_ID LOG_PATH FD:STREAM...
"""

import json
import os
import select
import sys
import time


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def capture(log_path: str, streams: dict[int, str], tee: dict[int, int] | None = None) -> None:
    """Copy the container's output into json-file lines until every stream reaches EOF; `tee`
    also copies each stream, as it comes, to another fd (a foreground run's terminal)."""
    pending = {fd: b"" for fd in streams}
    tee = tee or {}
    with open(log_path, "ab", buffering=0) as log:
        while pending:
            readable, _, _ = select.select(list(pending), [], [])
            for fd in readable:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the pty's other side is gone
                    chunk = b""
                if chunk and fd in tee:
                    _write_all(tee[fd], chunk)
                *lines, rest = (pending[fd] + chunk).split(b"\n")
                out = [_entry(streams[fd], line + b"\n") for line in lines]
                if chunk:
                    pending[fd] = rest
                else:
                    if rest:
                        out.append(_entry(streams[fd], rest))
                    del pending[fd]
                    os.close(fd)
                if out:
                    log.write(b"".join(out))


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the reader went away (`| head`): the log still gets everything


def _entry(stream: str, data: bytes) -> bytes:
    entry = {"log": data.decode("utf-8", "replace"), "stream": stream, "time": now_rfc3339()}
    return json.dumps(entry).encode() + b"\n"


def reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 255 << 8


def main(argv: list[str]) -> None:
    pid, container_id, log_path = int(argv[1]), argv[2], argv[3]
    streams = {int(fd): name for fd, _, name in (arg.partition(":") for arg in argv[4:])}
    os.chdir("/")
    capture(log_path, streams)
    status = reap(pid)
    # Not hosttools.python(): this interpreter runs without pyctr (and without site).
    os.execv(sys.executable, [sys.executable, "-I", "-m", "pyctr.runtime.monitor", "finish",
                              container_id, str(status)])


if __name__ == "__main__":
    main(sys.argv)
