"""The per-container monitor: parent of the container's PID 1 for as long as it runs.

It reaps PID 1, captures a detached container's output into Docker's json-file log,
records the exit code and finish time, and tidies up (network, cgroup, and everything on
--rm). It is a forked copy of the CLI that imports nothing more until the container exits.
"""

import json
import os
import select
import signal
import time

from pyctr.runtime import container as records


def exit_code_of(status: int) -> int:
    """Docker's convention: the exit code, or 128+N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def ignore_terminal_signals() -> None:
    # ctrl-c on a foreground run reaches the whole process group; the monitor must outlive it
    # to record the exit. The CLI forwards signals to the container itself.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)


def capture_output(log_path, streams: dict[int, str]) -> None:
    """Copy the container's output into json-file lines until every stream reaches EOF."""
    pending = {fd: b"" for fd in streams}
    with open(log_path, "ab", buffering=0) as log:
        while pending:
            readable, _, _ = select.select(list(pending), [], [])
            for fd in readable:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the pty's other side is gone
                    chunk = b""
                data = pending[fd] + chunk
                *lines, rest = data.split(b"\n")
                out = [_log_line(streams[fd], line + b"\n") for line in lines]
                if not chunk:
                    if rest:
                        out.append(_log_line(streams[fd], rest))
                    del pending[fd]
                    os.close(fd)
                else:
                    pending[fd] = rest
                if out:
                    log.write(b"".join(out))


def _log_line(stream: str, data: bytes) -> bytes:
    entry = {"log": data.decode("utf-8", "replace"), "stream": stream, "time": records.now_rfc3339()}
    return json.dumps(entry).encode() + b"\n"


def wait_for(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 255 << 8
        except InterruptedError:
            continue


def finish(c: records.Container, status: int) -> int:
    """Record the exit, then undo what only a running container needs."""
    from pyctr.runtime import lifecycle

    code = exit_code_of(status)
    c.update_state(persist=True, Status="exited", Running=False, Pid=0, ExitCode=code,
                   FinishedAt=records.now_rfc3339(), OOMKilled=lifecycle.oom_killed(c))
    lifecycle.release_runtime_resources(c)
    if c.config["HostConfig"].get("AutoRemove"):
        lifecycle.remove_files(c)
    return code


def wait_briefly_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if records.process_start_time(pid) is None:
            return True
        time.sleep(0.02)
    return False
