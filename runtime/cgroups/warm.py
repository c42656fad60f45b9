"""The grace period of the first cgroup move, started before the move that needs it.

Moving a process into a cgroup takes a lock (cgroup_threadgroup_rwsem, one for every hierarchy)
whose first writer waits for an RCU grace period: ~10-15 ms on this kind of VM, while it also
holds cgroup_mutex, so that making a cgroup (mkdir) waits as well. A writer that comes while the
previous one is recent (about one grace period after it) does not wait. So a thread moves this
process into the cgroup it is in already (no change) ahead of the real move, and again every few
milliseconds for a while, so that whenever the real move comes within that while, it finds the
lock warm. Whoever starts a container keeps it warm from its first
step: the runner of a foreground run, the monitor, a detached container's keeper.
"""

import os
import time

KEEP_INTERVAL = 0.004  # well within one grace period, so that the lock never cools in between
FOR_A_START = 0.15  # seconds: a start's cgroup joins come ~20 ms after its first step, more under load

_keep_until = 0.0
_kept_by = 0  # the PID whose thread keeps the lock warm: a fork has no such thread
_thread_ended = None  # a lock the thread holds until it ends (stop() waits on it)


def _own_procs_file() -> str | None:
    """The cgroup.procs of the cgroup this process is in now, in one hierarchy (any: the lock is
    shared), or None where there is none to write."""
    from pyctr.runtime import cgroups
    from pyctr.runtime.errors import PyctrError

    try:
        layout = cgroups.detect()
        with open("/proc/self/cgroup") as f:
            own = dict(line.rstrip("\n").split(":", 2)[1:] for line in f)
    except (OSError, PyctrError, ValueError):
        return None
    if layout.unified is not None and "" in own:  # "0::/path": the cgroup2 hierarchy
        return f"{layout.unified}{own['']}/cgroup.procs"
    if layout.v1_root is not None and "pids" in own:
        return f"{layout.v1_root}/pids{own['pids']}/cgroup.procs"
    return None


def _move_self(procs: str) -> None:
    try:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError:
        pass


def keep(seconds: float = FOR_A_START) -> None:
    """Keep the lock warm for the next `seconds` (from now; a later call extends it), from a
    thread of this process."""
    global _keep_until, _kept_by, _thread_ended
    _keep_until = max(_keep_until, time.monotonic() + seconds)
    if _kept_by == os.getpid():
        return
    procs = _own_procs_file()
    if procs is None:
        return
    import _thread  # rather than threading: no import in a fork

    ended = _thread.allocate_lock()
    ended.acquire()
    _kept_by, _thread_ended = os.getpid(), ended

    def moves() -> None:
        global _kept_by
        try:
            while True:
                _move_self(procs)
                if time.monotonic() >= _keep_until:
                    return
                time.sleep(KEEP_INTERVAL)
        finally:
            _kept_by = 0
            ended.release()

    _thread.start_new_thread(moves, ())


def stop() -> None:
    """End the thread, and wait until it has: before this process closes descriptors it did not
    open, or puts one at a fixed number. Each move opens and closes one, at the lowest free
    number: one closed or replaced under the thread would be closed again by it, in its new use
    (a keeper lost its container's output so), and a "0" written into it."""
    global _keep_until
    _keep_until = 0.0
    if _kept_by == os.getpid() and _thread_ended is not None:
        _thread_ended.acquire()  # released as the thread ends
        _thread_ended.release()
