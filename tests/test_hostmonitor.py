"""The host monitor and the keepers (runtime/hostmonitor.py): one process watches every detached
container, each kept by a `sleep infinity` that is PID 1's parent. Nothing is lost when either is
SIGKILLed: the containers run on, their output reaches the log, their exit codes are recorded.
"""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
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
    return rollup_kib(pid, "Pss")


def rollup_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/smaps_rollup")


def children_of(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def host_monitors(env) -> list[int]:
    """The host monitors of this test's state folder; not their forks (a keeper before it execs
    `sleep`, a runner), which have the same command line for a moment."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and "pyctr.runtime.hostmonitor" in cmdline(int(entry.name)) \
                    and env["PYCTR_STATE"] in cmdline(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    fields = {pid: stat_fields(pid) for pid in found}  # None: gone meanwhile
    return [pid for pid in found if fields[pid] is not None and int(fields[pid][1]) not in found]


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


def test_a_reader_waits_for_the_host_monitor_to_record_an_orphaned_exit(run_pyctr, pyctr_env):
    """Once a keeper is killed, the host monitor records its container's exit, and a command that
    reads the record in between (inspect, wait, ps) must wait for it: it used to record 255, "the
    container's monitor died", because it looked only for the keeper. The host monitor is held
    stopped while PID 1 dies, so that the reader always comes first."""
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    pid = state_of(run_pyctr, cid)["Pid"]
    os.kill(parent_of(pid), signal.SIGKILL)  # the keeper this test's container got
    [monitor] = host_monitors(pyctr_env)
    wait_until(lambda: parent_of(pid) == monitor, "PID 1 to come to the host monitor (a subreaper)")
    os.kill(monitor, signal.SIGSTOP)  # a PID this test's pyctr started; SIGCONT below, whatever happens
    try:
        os.kill(pid, signal.SIGKILL)  # the container's own PID 1: a zombie the host monitor will reap
        wait_until(lambda: not running(pid), "PID 1 to die")
        reader = subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "inspect", cid], env=pyctr_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert reader.poll() is None, f"the reader did not wait for the host monitor: {reader.communicate()}"
    finally:
        os.kill(monitor, signal.SIGCONT)
    out, err = reader.communicate(timeout=30)
    state = json.loads(out)[0]["State"]
    assert (state["ExitCode"], state["Error"], state["Running"]) == (137, "", False), (state, err)
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


# --- foreground runs through the host monitor (runtime/runclient.py) ---------------------------------
@pytest.fixture
def warm_env(pyctr_env):
    """A host monitor that stays while the test runs: foreground runs go through it."""
    env = {**pyctr_env, "PYCTR_HOST_MONITOR_IDLE": "60"}
    [monitor] = start_host_monitor(env)
    yield env
    os.kill(monitor, signal.SIGKILL)  # the one this fixture started; killing it is safe
    wait_until(lambda: not running(monitor), "the host monitor to die")


START_HOST_MONITOR = "from pyctr.runtime import hostmonitor, settings; hostmonitor.start(settings.configure().state_dir)"


def start_host_monitor(env, run=None) -> list[int]:
    """Start a host monitor for env's state folder (with `run`, in a node's namespace); its PID,
    in a list, as host_monitors() finds it."""
    if run is None:
        subprocess.run([sys.executable, "-c", START_HOST_MONITOR], env=env, check=True, timeout=30)
    else:
        run(sys.executable, "-c", START_HOST_MONITOR, env=env)
    return host_monitors(env)


@contextlib.contextmanager
def node_with_a_host_monitor(pyctr_root, role: str):
    """A node namespace of a sandbox of its own, with a host monitor in it (idle for 60 s), which
    the CLI's runs there go through; (node, its environment, the host monitor's PID). The host
    monitor is killed and the sandbox removed after."""
    import netsandbox

    sandbox = netsandbox.Sandbox()
    host = None
    try:
        node = sandbox.node(role, images=pyctr_root / "images")
        env = {**node.env, "PYCTR_HOST_MONITOR_IDLE": "60"}
        [host] = start_host_monitor(env, node.run)
        yield node, env, host
    finally:
        if host is not None:
            os.kill(host, signal.SIGKILL)  # the host monitor this test started
        sandbox.close()


def pyctr(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyctr.runtime", *args]


def monitor_of(run_pyctr, env, name: str) -> int:
    """The foreground monitor of a container, once it runs: PID 1's parent."""
    return parent_of(wait_until(lambda: _running_state(run_pyctr, env, name).get("Pid"), f"{name} to run"))


def _running_state(run_pyctr, env, name: str) -> dict:
    result = run_pyctr("inspect", name, env=env)
    if result.returncode != 0:
        return {}
    state = json.loads(result.stdout)[0]["State"]
    return state if state["Running"] else {}


@pytest.mark.parametrize("command, code", [(["sh", "-c", "echo out; echo err >&2; exit 7"], 7),
                                           (["/no/such/program"], 127), (["/etc"], 126)])
def test_a_foreground_run_through_the_host_monitor_has_the_clis_stdio_and_exit_code(run_pyctr, warm_env,
                                                                                    command, code):
    result = run_pyctr("run", "--name", "fg", *NONE, "alpine", *command, env=warm_env)
    assert result.returncode == code
    if code == 7:
        assert (result.stdout, result.stderr) == ("out\n", "err\n")
        logged = run_ok(run_pyctr, "logs", "fg", env=warm_env)
        assert (logged.stdout, logged.stderr) == ("out\n", "err\n")  # in the log too, as before
    else:  # one line, no traceback, as from the CLI itself
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    run_ok(run_pyctr, "rm", "fg", env=warm_env)


def test_a_foreground_run_is_a_fork_of_the_host_monitor_that_monitors_it_and_the_cli_forks_nothing(
        run_pyctr, warm_env):
    [host] = host_monitors(warm_env)
    cli = subprocess.Popen(pyctr("run", "--rm", "--name", "fg", *NONE, "alpine", "sleep", "60"), env=warm_env)
    try:
        runner = monitor_of(run_pyctr, warm_env, "fg")  # PID 1's parent: no monitor forked of the runner
        assert parent_of(runner) == host and runner != cli.pid
        assert not [pid for pid in processes_with(warm_env) if running(pid) and parent_of(pid) == cli.pid]
        run_ok(run_pyctr, "stop", "-t", "0", "fg", env=warm_env)
        assert cli.wait(10) == 137
    finally:
        cli.kill()
        cli.wait()
    assert run_pyctr("inspect", "fg", env=warm_env).returncode != 0  # --rm: gone before the CLI exits


def test_a_run_after_a_run_is_served_by_a_spare_runner_that_took_its_page_faults_before(run_pyctr, warm_env):
    [host] = host_monitors(warm_env)
    first = _run_until_stopped(run_pyctr, warm_env, "first")
    [spare] = wait_until(lambda: [pid for pid in children_of(host) if pid != first], "a spare, once that run ended")
    # Most of what it shared with the host monitor is its own now: an idle fork would hold ~0.3 MiB.
    assert wait_until(lambda: _spare_of(host), "the spare to take its copy-on-write faults") == spare
    assert _run_until_stopped(run_pyctr, warm_env, "second") == spare  # it became the second run's runner


def _spare_of(host: int) -> int | None:
    """The host monitor's child that runs its code (a keeper runs `sleep`) and has taken its
    page faults: a spare runner, not a runner on its way out."""
    for pid in children_of(host):
        try:
            if "pyctr.runtime.hostmonitor" in cmdline(pid) and \
                    rollup_kib(pid, "Private_Dirty") > rollup_kib(host, "Anonymous") / 2:
                return pid
        except OSError:
            continue
    return None


def _run_until_stopped(run_pyctr, env, name: str) -> int:
    """`run --rm … sleep`, then `stop`; the PID of its container's parent, the runner."""
    cli = subprocess.Popen(pyctr("run", "--rm", "--name", name, *NONE, "alpine", "sleep", "60"), env=env)
    try:
        runner = monitor_of(run_pyctr, env, name)
        run_ok(run_pyctr, "stop", "-t", "0", name, env=env)
        assert cli.wait(10) == 137
    finally:
        cli.kill()
        cli.wait()
    return runner


@pytest.mark.parametrize("how", ["idle", "SIGKILL"])
def test_a_spare_runner_leaves_with_its_host_monitor(run_pyctr, pyctr_env, how):
    env = {**pyctr_env, "PYCTR_HOST_MONITOR_IDLE": "1" if how == "idle" else "60"}
    [host] = start_host_monitor(env)
    try:
        runner = _run_until_stopped(run_pyctr, env, "fg")
        [spare] = wait_until(lambda: [pid for pid in children_of(host) if pid != runner], "a spare runner")
        if how == "SIGKILL":
            os.kill(host, signal.SIGKILL)  # the one this test started
        wait_until(lambda: not running(spare) and not running(host), f"the spare to leave ({how})")
    finally:
        if running(host):
            os.kill(host, signal.SIGKILL)
    assert not [pid for pid in processes_with(env) if running(pid)]


def test_a_run_through_the_host_monitor_gets_none_of_its_descriptors(run_pyctr, warm_env):
    """The host monitor holds every detached container's output pipes; a runner forked from it
    must pass none of them (nor its socket, lock or epoll) to the container it runs."""
    run_ok(run_pyctr, "run", "-d", "--name", "chatty", *NONE, "alpine", "sh", "-c", "echo secret; sleep 60",
           env=warm_env)
    [host] = host_monitors(warm_env)
    assert len(os.listdir(f"/proc/{host}/fd")) > 5  # it holds the detached container's pipes
    for runner in ("forked at the request", "the spare forked after the first run"):
        result = run_pyctr("run", "--rm", *NONE, "alpine", "sh", "-c", "ls /proc/$$/fd; true", env=warm_env)
        assert result.stdout.split() == ["0", "1", "2"], (runner, result)
        wait_until(lambda: _spare_of(host), "a spare runner")
    run_ok(run_pyctr, "rm", "-f", "chatty", env=warm_env)


def test_the_clis_environment_working_directory_and_stdin_reach_the_runner(run_pyctr, warm_env, tmp_path):
    (tmp_path / "vars").write_text("FROM_FILE=file\n")
    out = subprocess.run(pyctr("run", "--rm", "-i", *NONE, "-e", "FROM_CLI", "--env-file", "vars", "alpine",
                               "sh", "-c", 'echo "$FROM_CLI $FROM_FILE $(cat)"'),
                         env={**warm_env, "FROM_CLI": "cli"}, cwd=tmp_path, input="stdin\n",
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "cli file stdin\n"), out.stderr


def test_signals_to_a_foreground_run_through_the_host_monitor_reach_the_container(warm_env):
    cli = subprocess.Popen(pyctr("run", "--rm", *NONE, "alpine", "sh", "-c",
                                 "trap 'echo got INT; exit 3' INT; echo ready; while :; do sleep 0.1; done"),
                           env=warm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline() == "ready\n"
        cli.send_signal(signal.SIGINT)  # to pyctr, which passes it on
        assert cli.wait(10) == 3
        assert cli.stdout.read() == "got INT\n"
    finally:
        cli.kill()
        cli.wait()


def test_a_tty_run_through_the_host_monitor(warm_env):
    master, slave = os.openpty()
    cli = subprocess.Popen(pyctr("run", "--rm", "-t", *NONE, "alpine", "sh", "-c", "tty; exit 4"), env=warm_env,
                           stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                           preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # our terminal, as a user's
    os.close(slave)
    output = b""
    try:
        while chunk := _read_pty(master):
            output += chunk
        assert cli.wait(10) == 4
    finally:
        cli.kill()
        cli.wait()
        os.close(master)
    assert b"/dev/pts/0" in output


def _read_pty(master: int) -> bytes:
    try:
        return os.read(master, 4096)
    except OSError:  # EIO: every writer of the pty has closed it
        return b""


def test_sigkill_of_the_host_monitor_during_a_foreground_run_loses_no_exit_code_and_no_container(
        run_pyctr, warm_env, tmp_path):
    [host] = host_monitors(warm_env)
    cli = subprocess.Popen(pyctr("run", "--rm", "--name", "fg", *NONE, "-v", f"{tmp_path}:/src", "alpine", "sh", "-c",
                                 "echo ready; while [ ! -e /src/go ]; do sleep 0.05; done; echo done; exit 5"),
                           env=warm_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline() == "ready\n"
        os.kill(host, signal.SIGKILL)  # the host monitor the fixture started
        wait_until(lambda: not running(host), "the host monitor to die")
        (tmp_path / "go").touch()
        assert cli.wait(10) == 5
        assert cli.stdout.read() == "done\n"
    finally:
        cli.kill()
        cli.wait()
    assert run_pyctr("inspect", "fg", env=warm_env).returncode != 0  # removed, as --rm says
    wait_until(lambda: not [pid for pid in processes_with(warm_env) if running(pid)], "no process of pyctr's left")


def test_sigkill_of_the_cli_after_the_start_leaves_the_container_running_under_its_runner(run_pyctr, warm_env):
    cli = subprocess.Popen(pyctr("run", "--name", "fg", *NONE, "alpine", "sh", "-c", "sleep 60; exit 9"),
                           env=warm_env, stdout=subprocess.DEVNULL)
    runner = monitor_of(run_pyctr, warm_env, "fg")
    cli.kill()  # as a SIGKILL of a CLI that ran the container itself: its monitor goes on
    cli.wait()
    time.sleep(0.3)
    assert running(runner) and _running_state(run_pyctr, warm_env, "fg")["Pid"]
    pid = _running_state(run_pyctr, warm_env, "fg")["Pid"]
    [sleep] = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()  # the container's own `sleep`
    os.kill(int(sleep), signal.SIGKILL)
    wait_until(lambda: not running(runner), "the runner to record the exit")
    assert json.loads(run_ok(run_pyctr, "inspect", "fg", env=warm_env).stdout)[0]["State"]["ExitCode"] == 9
    run_ok(run_pyctr, "rm", "fg", env=warm_env)


def test_a_cli_in_other_namespaces_runs_the_container_itself(run_pyctr, warm_env):
    # Another UTS namespace stands for any other: the runner would not see what the CLI sees.
    cli = subprocess.Popen(["unshare", "--uts", *pyctr("run", "--rm", "--name", "fg", *NONE, "alpine", "sleep", "60")],
                           env=warm_env)
    try:
        monitor = monitor_of(run_pyctr, warm_env, "fg")
        assert parent_of(monitor) == cli.pid  # unshare execs pyctr: the CLI's own fork
        run_ok(run_pyctr, "stop", "-t", "0", "fg", env=warm_env)
        assert cli.wait(10) == 137
    finally:
        cli.kill()
        cli.wait()


def test_a_cold_run_in_a_named_network_namespace_starts_no_host_monitor(run_pyctr, pyctr_env):
    import secrets

    import netsandbox  # noqa: F401  (puts the repository on sys.path, for the bench's helpers)
    from bench.sandbox import NETNS_DIR, NetnsDirState, release_netns_dir

    before = NetnsDirState.of(NETNS_DIR)
    name = f"pyctr-t-{secrets.token_hex(3)}-thin"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ran = subprocess.run(["nsenter", f"--net={NETNS_DIR}/{name}", *pyctr("run", "--rm", *NONE, "alpine", "true")],
                             env=pyctr_env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        time.sleep(0.5)  # a host monitor started without waiting would be up by now
        assert host_monitors(pyctr_env) == []
        run_ok(run_pyctr, "run", "--rm", *NONE, "alpine", "true")  # from the host's: it starts one
        wait_until(lambda: host_monitors(pyctr_env), "a host monitor")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
        release_netns_dir(NETNS_DIR, before)


def test_a_bridge_run_through_a_host_monitor_in_the_clis_network_namespace(pyctr_root):
    with node_with_a_host_monitor(pyctr_root, "thin") as (node, env, host):
        cli = node.spawn(*pyctr("run", "--rm", "--name", "br", "alpine", "sh", "-c",
                                "ip -4 -o addr show eth0; while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 6"), env=env)
        address = cli.stdout.readline().split()[3]  # "2: eth0 inet 10.88.0.2/16 ..."
        pid = wait_until(lambda: json.loads(node.pyctr("inspect", "br").stdout)[0]["State"]["Pid"], "br to run")
        assert parent_of(parent_of(pid)) == host  # PID 1, the runner (its monitor), the host monitor
        assert node.inspect("br", "{{.NetworkSettings.IPAddress}}") == address.partition("/")[0]
        node.pyctr("exec", "br", "touch", "/tmp/go")
        assert cli.wait(20) == 6
        assert node.pyctr("ps", "-aq").stdout == ""  # removed, network and all, before the CLI exits


def test_a_cli_killed_while_its_runner_makes_the_container_leaves_it_unstarted_and_nothing_behind(
        pyctr_root, tmp_path):
    """The runner outlives its CLI from the container's creation on (it is its monitor): here it
    waits for the lock of the network's address allocations (IPAM), which the test holds, when
    the CLI dies."""
    with node_with_a_host_monitor(pyctr_root, "gone") as (node, env, host):
        node.pyctr("run", "--rm", "alpine", "true")  # the bridge network and its allocations exist now
        allocations_lock = node.root / "networks" / "bridge" / "ipam.lock"
        with open(allocations_lock) as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            cli = node.spawn(*pyctr("run", "--rm", "--name", "gone", "-v", f"{tmp_path}:/out", "alpine",
                                    "touch", "/out/ran"), env=env)
            runner = wait_until(lambda: _waiting_for_flock(allocations_lock), "the runner to wait for an address")
            assert parent_of(runner) == host and running(_created_pid1(node))
            cli.kill()
            cli.wait()
            time.sleep(0.2)
            assert running(runner)  # not killed with its CLI: it holds a created container
        wait_until(lambda: not running(runner), "the runner to clean up")
        assert not (tmp_path / "ran").exists()  # PID 1 never ran its command
        assert node.pyctr("ps", "-aq").stdout == ""  # --rm: removed
        assert json.loads((allocations_lock.parent / "ipam.json").read_text())["allocations"] == {}
        assert [link for link in node.run("ip", "-o", "link").stdout.splitlines() if "veth" in link] == []


def _waiting_for_flock(path: Path) -> int | None:
    """The PID of a process blocked on a flock of `path`, from /proc/locks
    ("N: -> FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF", the device in hex)."""
    st = os.stat(path)
    file = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1:3] == ["->", "FLOCK"] and fields[6] == file:
            return int(fields[5])
    return None


def _created_pid1(node) -> int:
    """PID 1 of the node's one container, created and waiting for its start: the runner's child."""
    [oci_state] = (node.state / "oci").glob("*/state.json")
    return json.loads(oci_state.read_text())["pid"]


# A keeper's fork of the host monitor keeps the cgroup lock warm (runtime/cgroups/warm.py) from a
# thread that opens and closes a descriptor at each move, while the keeper puts the container's
# output at fds 3 and 4 and closes the rest. Here the thread moves without a pause, so that its
# descriptor is nearly always among those: without warm.stop(), fd 3 was lost in every run of this test.
KEEPER_WHILE_WARM = """
import os, sys
from pyctr.runtime import hostmonitor
from pyctr.runtime.cgroups import warm

warm.KEEP_INTERVAL = 0
warm.keep(60)
report_w = os.dup2(int(sys.argv[1]), 50)
os.close(int(sys.argv[1]))
out_r, out_w = os.pipe()
err_r, err_w = os.pipe()
high = [os.dup2(fd, 40 + i) for i, fd in enumerate((out_r, err_r, out_w, err_w))]
for fd in (out_r, out_w, err_r, err_w):
    os.close(fd)  # 3 to 6 are free: where the thread's descriptor comes
hostmonitor.become_keeper("c" * 64, 1, high[:2], None, report_w)
"""


def test_a_keeper_keeps_its_output_while_the_cgroup_lock_is_kept_warm(pyctr_env):
    for _ in range(8):
        report_r, report_w = os.pipe()
        keeper = subprocess.Popen([sys.executable, "-c", KEEPER_WHILE_WARM, str(report_w)], env=pyctr_env,
                                  pass_fds=[report_w], stderr=subprocess.PIPE)
        os.close(report_w)
        try:
            with open(report_r, "rb") as report:
                assert report.read() == b"1\n", keeper.stderr.read()
            wait_until(lambda: Path(cmdline(keeper.pid)[0]).name == "sleep", "the keeper to exec sleep", timeout=10)
            kept = sorted(int(fd) for fd in os.listdir(f"/proc/{keeper.pid}/fd"))
            targets = [os.readlink(f"/proc/{keeper.pid}/fd/{fd}") for fd in (3, 4) if fd in kept]
            assert kept == [0, 1, 2, 3, 4] and all(t.startswith("pipe:") for t in targets) \
                and targets[0] != targets[1], f"the keeper holds {kept}: {targets}"
        finally:
            keeper.kill()
            keeper.wait()
