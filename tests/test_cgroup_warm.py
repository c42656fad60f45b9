"""runtime/cgroups/warm.py: the lock of cgroup moves, kept warm ahead of PID 1's join. Each check
runs in a Python of its own (moves of the test process itself would be its business, not ours).
"""

import subprocess
import sys
import textwrap

import pytest

# A move of this process into the cgroup it is in (no change), timed: after the lock has been idle,
# and while warm.keep() keeps it warm. Medians of five, in milliseconds.
TIMED_MOVES = textwrap.dedent("""
    import os, statistics, sys, time
    from pyctr.runtime.cgroups import warm

    procs = warm._own_procs_file()
    if procs is None:
        print("none"); sys.exit()
    def timed_move():
        fd = os.open(procs, os.O_WRONLY)
        start = time.perf_counter()
        os.write(fd, b"0")
        took = (time.perf_counter() - start) * 1000
        os.close(fd)
        return took
    cold, warm_moves = [], []
    for _ in range(5):
        time.sleep(0.3)  # long enough for the lock to go idle again
        cold.append(timed_move())
        warm.keep(0.2)
        time.sleep(0.05)
        warm_moves.append(timed_move())
        time.sleep(0.2)
    print(statistics.median(cold), statistics.median(warm_moves))
""")


def python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_a_move_finds_the_lock_warm_while_it_is_kept_so():
    out = python(TIMED_MOVES)
    if out == "none":
        pytest.skip("no cgroup hierarchy to move in")
    cold, warm = map(float, out.split())
    if cold < 2:
        pytest.skip(f"a move after an idle lock takes {cold:.2f} ms here: nothing to hide")
    assert warm < cold / 3, f"kept warm, a move took {warm:.2f} ms; after an idle lock {cold:.2f} ms"


def test_keeping_warm_moves_nothing_and_stops_after_its_while():
    out = python(textwrap.dedent("""
        import os, time
        from pyctr.runtime.cgroups import warm

        before = open("/proc/self/cgroup").read()
        warm.keep(0.1)
        time.sleep(0.02)
        during = len(os.listdir("/proc/self/task"))
        warm.keep(0.1)  # extends the while of the thread that runs: no second thread
        time.sleep(0.02)
        again = len(os.listdir("/proc/self/task"))
        time.sleep(0.3)
        after = len(os.listdir("/proc/self/task"))
        print(during, again, after, open("/proc/self/cgroup").read() == before)
    """))
    assert out == "2 2 1 True"


def test_a_fork_keeps_the_lock_warm_with_a_thread_of_its_own():
    out = python(textwrap.dedent("""
        import os, time
        from pyctr.runtime.cgroups import warm

        warm.keep(0.3)
        pid = os.fork()
        if pid == 0:
            warm.keep(0.3)  # the parent's thread is not in the fork
            time.sleep(0.02)
            os.write(1, b"%d" % len(os.listdir("/proc/self/task")))
            os._exit(0)
        os.waitpid(pid, 0)
    """))
    assert out == "2"


def test_stop_returns_once_the_thread_has_made_its_last_move_and_a_fork_does_not_wait_for_its_parents():
    # What a caller of stop() relies on: no move (an fd opened, written, closed) after it returns.
    # The thread itself may still be listed in /proc/self/task for a moment after its last move.
    out = python(textwrap.dedent("""
        import os, time
        from pyctr.runtime.cgroups import warm

        moves = []
        real_move = warm._move_self
        warm._move_self = lambda procs: (moves.append(1), real_move(procs))
        warm.KEEP_INTERVAL = 0.05  # stop() must not just stop the next move: it waits for this one
        warm.keep(60)
        time.sleep(0.02)
        started = time.monotonic()
        warm.stop()
        took = time.monotonic() - started
        moved_by_stop = len(moves)
        time.sleep(0.2)  # longer than the thread's pause: a thread still running moves again
        moved_later = len(moves) - moved_by_stop
        warm.keep(60)
        pid = os.fork()
        if pid == 0:
            warm.stop()  # the parent's thread is not ours: nothing to wait for
            os._exit(0)
        os.waitpid(pid, 0)
        warm.stop()
        deadline = time.monotonic() + 5
        while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(moved_by_stop > 0, moved_later, took < 1, len(os.listdir("/proc/self/task")))
    """))
    assert out == "True 0 True 1"


def test_run_start_restart_and_exec_warm_the_lock_before_they_make_anything(monkeypatch, capsys):
    """A detached start's keeper joins PID 1 to its cgroup ~20 ms after the CLI began, and exec's
    process joins the container's: the CLI warms the lock at its first step (restart: once the
    stop is done), so that the join does not wait (~10 ms of each `run -d`, `start`, `restart`
    and `exec`). In the CLI's own process: the keeper is a fork of the host monitor, exec's
    process a fork of the CLI."""
    from types import SimpleNamespace

    from pyctr.runtime import commands, lifecycle, nsenter
    from pyctr.runtime import container as records
    from pyctr.runtime.cgroups import warm

    calls = []
    created = SimpleNamespace(id="c0ffee", running=False)
    monkeypatch.setattr(warm, "keep", lambda *_: calls.append("keep"))
    monkeypatch.setattr(lifecycle, "create", lambda _args: calls.append("create") or created)
    monkeypatch.setattr(lifecycle, "start", lambda c, attach, interactive=False: calls.append("start"))
    monkeypatch.setattr(records, "find", lambda ref: calls.append("find") or created)
    assert commands.cmd_run(SimpleNamespace(detach=True, rm=False, interactive=False)) == 0
    assert commands.cmd_start(SimpleNamespace(attach=False, interactive=False, containers=["c0ffee"])) == 0
    assert calls == ["keep", "create", "start", "keep", "find", "start"]
    assert capsys.readouterr().out == "c0ffee\nc0ffee\n"
    calls.clear()
    created.running = True
    monkeypatch.setattr(nsenter, "exec_in", lambda c, args: calls.append("exec_in") or 0)
    assert commands.cmd_exec(SimpleNamespace(container="c0ffee", command=["true"])) == 0
    assert calls == ["keep", "find", "exec_in"]
    calls.clear()
    monkeypatch.setattr(lifecycle, "stop", lambda c, timeout: calls.append("stop"))
    monkeypatch.setattr(records, "load", lambda container_id: calls.append("load") or created)
    assert commands.cmd_restart(SimpleNamespace(containers=["c0ffee"], time=10)) == 0
    assert calls == ["find", "stop", "keep", "load", "start"]
