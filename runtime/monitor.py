"""The per-container monitor: parent of the container's PID 1 for as long as it runs.

It copies the container's output into Docker's json-file log (reaper.py), reaps PID 1, records
the exit code and finish time, and tidies up (network, cgroup, and everything on --rm). For a
foreground container it is a fork of the CLI, or the runner itself when a host monitor runs the
CLI's command (runclient.py); for a detached one, a keeper forked by the host monitor
(hostmonitor.py). The code is in lifecycle (_monitor, _RunnerAsMonitor, keep).
"""

import _signal  # the C module: signal's enums import enum, functools and collections
import os
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
    for sig in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGTSTP):
        _signal.signal(sig, _signal.SIG_IGN)


def pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits; None before Linux 5.3."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


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
    from pyctr.runtime import explain, lifecycle

    explain.side(explain.HOST, again=True)  # after the container's own lines
    code = exit_code_of(status)
    oom_killed = lifecycle.oom_killed(c)
    if not c.state.get("RemovalInProgress"):
        # Before the exit is recorded: once `wait` returns, nothing of ours changes the state folder.
        lifecycle.delete_oci_container(c)
    auto_remove = c.config["HostConfig"].get("AutoRemove")
    # The copy under --root is for after a reboot: a --rm container's goes right away.
    c.update_state(persist=not auto_remove, Status="exited", Running=False, Pid=0, ExitCode=code,
                   FinishedAt=records.now_rfc3339(), OOMKilled=oom_killed)
    if c.state.get("RemovalInProgress"):
        pass  # `rm -f` removes it all, and prints its steps
    elif auto_remove:
        lifecycle.remove_files(c, oci_deleted=True)
    else:
        lifecycle.release_network(c)
    return code


def wait_briefly_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if records.process_start_time(pid) is None:
            return True
        time.sleep(0.02)
    return False
