"""The host monitor and the keepers (runtime/hostmonitor.py): one process watches every detached
container, each kept by a `sleep infinity` that is PID 1's parent. Nothing is lost when either is
SIGKILLed: the containers run on, their output reaches the log, their exit codes are recorded.
"""

import json
import os
import signal
import time
from pathlib import Path

from test_runtime import NONE, run_ok, wait_until


def state_of(run_pyctr, ref) -> dict:
    return json.loads(run_ok(run_pyctr, "inspect", ref).stdout)[0]["State"]


def stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def parent_of(pid: int) -> int:
    return int(stat_fields(pid)[1])


def running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def environment(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError(f"no Pss in /proc/{pid}/smaps_rollup")


def host_monitors(env) -> list[int]:
    """The host monitors of this test's state folder."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and "pyctr.runtime.hostmonitor" in cmdline(int(entry.name)) \
                    and env["PYCTR_STATE"] in cmdline(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def processes_with(env) -> list[int]:
    marker = f"PYCTR_STATE={env['PYCTR_STATE']}"
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and marker in environment(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_each_container_is_kept_by_a_small_sleep_and_all_are_watched_by_one_host_monitor(run_pyctr, pyctr_env):
    ids = [run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip() for _ in range(3)]
    monitors = set()
    for cid in ids:
        pid = state_of(run_pyctr, cid)["Pid"]
        keeper = parent_of(pid)
        assert Path(cmdline(keeper)[0]).name == "sleep" and cmdline(keeper)[1:] == ["infinity"]
        assert f"PYCTR_CONTAINER={cid}" in environment(keeper)
        # What pyctr keeps per container: a sleep's own pages (libc is shared with every other).
        assert pss_kib(keeper) < 512, f"the keeper of {cid[:12]} holds {pss_kib(keeper)} KiB"
        monitors.add(parent_of(keeper))
    assert len(monitors) == 1 and monitors == set(host_monitors(pyctr_env))
    # Only root reaches the socket that starts containers.
    socket_mode = os.stat(Path(pyctr_env["PYCTR_STATE"]) / "monitor.sock").st_mode & 0o777
    assert socket_mode == 0o600 and os.stat(pyctr_env["PYCTR_STATE"]).st_mode & 0o777 == 0o700
    run_ok(run_pyctr, "rm", "-f", *ids)
    # It leaves once it watches nothing: no process of pyctr's stays behind.
    wait_until(lambda: not processes_with(pyctr_env), "the host monitor to leave", timeout=10)


def test_sigkill_of_the_host_monitor_loses_no_container_no_output_and_no_exit_code(run_pyctr, pyctr_env, tmp_path):
    # 200 KiB after the kill: more than a pipe holds, so the writer must wait for the next monitor.
    writer = ("echo before; while [ ! -e /src/go ]; do sleep 0.05; done; "
              "seq 1 40000; echo after; exit 42")
    noisy = run_ok(run_pyctr, "run", "-d", *NONE, "-v", f"{tmp_path}:/src", "alpine", "sh", "-c", writer).stdout.strip()
    with_tty = run_ok(run_pyctr, "run", "-dt", *NONE, "-v", f"{tmp_path}:/src", "alpine", "sh", "-c",
                      "while [ ! -e /src/go ]; do sleep 0.05; done; echo tty-after; exit 3").stdout.strip()
    idle = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    pids = {cid: state_of(run_pyctr, cid)["Pid"] for cid in (noisy, with_tty, idle)}
    wait_until(lambda: "before" in run_ok(run_pyctr, "logs", noisy).stdout, "the first line in the log")
    [monitor] = host_monitors(pyctr_env)
    os.kill(monitor, signal.SIGKILL)  # a PID this test's pyctr started
    wait_until(lambda: not running(monitor), "the host monitor to die")

    (tmp_path / "go").touch()
    time.sleep(1)  # the containers go on meanwhile: the tty one exits, the writer fills its pipe
    assert running(pids[noisy]) and running(pids[idle]), "a container died with the host monitor"
    assert not running(pids[with_tty])  # it ran to its end: no SIGHUP when the monitor died

    # The next command brings a host monitor back, which adopts them from their keepers.
    assert run_ok(run_pyctr, "wait", noisy, timeout=60).stdout.strip() == "42"
    assert run_ok(run_pyctr, "wait", with_tty, timeout=60).stdout.strip() == "3"
    lines = run_ok(run_pyctr, "logs", noisy).stdout.splitlines()
    assert lines == ["before", *map(str, range(1, 40001)), "after"]
    assert run_ok(run_pyctr, "logs", with_tty).stdout.replace("\r", "") == "tty-after\n"
    assert state_of(run_pyctr, noisy)["Error"] == ""
    [new_monitor] = host_monitors(pyctr_env)
    assert new_monitor != monitor
    # The keepers are orphans now (init's), but the new host monitor watches their containers.
    run_ok(run_pyctr, "stop", "-t", "1", idle)
    assert state_of(run_pyctr, idle)["ExitCode"] == 137  # sleep ignores SIGTERM as PID 1
    run_ok(run_pyctr, "rm", noisy, with_tty, idle)


def test_sigkill_of_a_keeper_keeps_the_container_and_its_exit_code(run_pyctr, pyctr_env):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sh", "-c", "echo hi; sleep 60").stdout.strip()
    pid = state_of(run_pyctr, cid)["Pid"]
    keeper = parent_of(pid)
    os.kill(keeper, signal.SIGKILL)  # the keeper this test's container got
    [monitor] = host_monitors(pyctr_env)
    wait_until(lambda: parent_of(pid) == monitor, "PID 1 to come to the host monitor (a subreaper)")
    assert state_of(run_pyctr, cid)["Running"] is True
    os.kill(pid, signal.SIGKILL)  # the container's own PID 1
    assert run_ok(run_pyctr, "wait", cid).stdout.strip() == "137"
    assert state_of(run_pyctr, cid)["Error"] == ""
    assert run_ok(run_pyctr, "logs", cid).stdout == "hi\n"
    run_ok(run_pyctr, "rm", cid)


def test_a_pid_1_named_like_a_stat_line_still_gets_its_own_exit_code(run_pyctr, pyctr_env):
    # The attacker: PID 1 renames itself so that /proc/PID/stat, read by the first ")", would show
    # a zombie with other fields; the host monitor reads the status from the zombie's stat.
    fake = "x) Z 1 1 1 1 1"
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sh", "-c",
                 f"echo -n '{fake}' > /proc/self/comm; cat /proc/1/comm; sleep 0.3; exit 42").stdout.strip()
    assert run_ok(run_pyctr, "wait", cid).stdout.strip() == "42"
    assert run_ok(run_pyctr, "logs", cid).stdout == fake + "\n"  # the rename took
    state = state_of(run_pyctr, cid)
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 42, "")
    run_ok(run_pyctr, "rm", cid)
