"""The runtime, for real: namespaces, the overlay root, privileges, limits and the lifecycle.

Every container runs with --network none (or host-free modes) here; networks have their own
tests inside a sandbox of network namespaces.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cgroupfs

NONE = ("--network", "none")


def run_ok(run_pyctr, *args, **kw):
    result = run_pyctr(*args, **kw)
    assert result.returncode == 0, f"pyctr {' '.join(map(str, args))}: {result.returncode}\n{result.stderr}"
    return result


def wait_until(condition, what: str, timeout: float = 15.0):
    """Poll `condition` until it returns something true, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {timeout:g}s for {what}"
        time.sleep(0.05)
    return result


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def container_dir(env, cid) -> Path:
    return Path(env["PYCTR_ROOT"]) / "containers" / cid


def inspect(run_pyctr, ref) -> dict:
    return json.loads(run_ok(run_pyctr, "inspect", ref).stdout)[0]


def own_cgroup_dirs(cid: str) -> list[str]:
    """The container's cgroup folders in any hierarchy mounted here (v1, hybrid or pure v2)."""
    return cgroupfs.container_dirs(cid)


# --- PID 1 and isolation -------------------------------------------------------------------
def host_mounts_of(env) -> list[str]:
    """The host's mounts that involve this test's pyctr root (other programs may mount too)."""
    return [line for line in Path("/proc/mounts").read_text().splitlines() if env["PYCTR_ROOT"] in line]


def test_pid1_is_isolated(run_pyctr, pyctr_env, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    mounts_before = host_mounts_of(pyctr_env)
    script = ("echo pid=$$; readlink /proc/self/ns/pid; ps -o comm | tail -n +2 | tr '\\n' ' '; echo; "
              "ip -o link | cut -d: -f2; hostname; "
              f"test -e {secret} && echo host-file-visible || echo host-file-hidden")
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "--hostname", "box1", "alpine", "sh", "-c", script).stdout
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "pid=1"
    assert lines[1] != os.readlink("/proc/self/ns/pid"), "the container shares the host's PID namespace"
    assert set(lines[2].split()) <= {"sh", "ps", "tail", "tr"}, f"ps saw host processes: {out}"
    assert lines[3] == "lo", f"--network none must show only lo: {out}"
    assert lines[4] == "box1"
    assert lines[5] == "host-file-hidden"
    assert host_mounts_of(pyctr_env) == mounts_before == [], "a mount leaked into the host's table"
    # Even while a container runs, its mounts live only in its own mount namespace.
    run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60")
    assert host_mounts_of(pyctr_env) == []


def test_writes_stay_in_their_container(run_pyctr, pyctr_env, pyctr_root):
    first = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sh", "-c", "echo mine > /written; sleep 60").stdout.strip()
    wait_until(lambda: (container_dir(pyctr_env, first) / "upper" / "written").exists(),
               "the write to reach the container's upper layer")
    assert not list(pyctr_root.glob("images/**/rootfs/written")), "the image was written to"
    second = run_pyctr("run", "--rm", *NONE, "alpine", "cat", "/written")
    assert second.returncode == 1 and "No such file" in second.stderr


def test_dev_and_proc_are_the_containers_own(run_pyctr):
    script = ("ls /dev | sort | tr '\\n' ' '; echo; "
              "echo 1 > /proc/sys/kernel/ns_last_pid && echo proc-sys-writable || echo proc-sys-ro; "
              "mknod /tmp/disk b 8 0 && (head -c1 /tmp/disk >/dev/null 2>&1 && echo disk-readable || echo disk-denied); "
              "touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro")
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "alpine", "sh", "-c", script).stdout.splitlines()
    devices = set(out[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx",
            "fd", "stdin", "stdout", "stderr"} <= devices
    assert not devices & {"sda", "vda", "mem", "kmsg", "loop0"}, f"host devices in /dev: {devices}"
    assert out[1:] == ["proc-sys-ro", "disk-denied", "sys-ro"]


# --- the lifecycle -------------------------------------------------------------------------
STOP_WHILE_REMOVED = """
import signal, subprocess, sys
from pyctr.runtime import container as records, lifecycle, settings

settings.configure()
c = records.load(sys.argv[1])
# As the monitor of a --rm container does, between the signal and stop's read of the record.
lifecycle.send_signal = lambda c, sig: subprocess.run(
    [sys.executable, "-m", "pyctr.runtime", "rm", "-f", c.id], check=True, capture_output=True)
lifecycle.stop(c, 5)
print("stopped")
"""


def test_a_container_removed_while_stop_waits_counts_as_stopped(run_pyctr, pyctr_env):
    """`stop` of a --rm container waits for its exit, then reads its record, which the monitor
    may have removed by then: stopped all the same, as with `docker stop` (it failed with "No such
    container" when the removal was quick). Made certain here: the record goes before the read."""
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    stopped = subprocess.run([sys.executable, "-c", STOP_WHILE_REMOVED, cid], env=pyctr_env,
                             capture_output=True, text=True, timeout=60)
    assert (stopped.returncode, stopped.stdout) == (0, "stopped\n"), stopped.stderr
    assert run_pyctr("inspect", cid).returncode != 0


def test_create_start_ps_exec_logs_stop_rm(run_pyctr, pyctr_env):
    cid = run_ok(run_pyctr, "create", *NONE, "--name", "web", "alpine",
                 "sh", "-c", "echo hello; echo oops >&2; exec sleep 60").stdout.strip()
    assert len(cid) == 64
    assert inspect(run_pyctr, "web")["State"]["Status"] == "created"
    assert run_ok(run_pyctr, "start", "web").stdout.strip() == "web"
    ps = run_ok(run_pyctr, "ps").stdout.splitlines()
    assert ps[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"] and cid[:12] in ps[1] and "Up " in ps[1]
    assert run_ok(run_pyctr, "exec", "web", "cat", "/proc/1/cmdline").stdout == "sleep\x0060\x00"
    assert run_ok(run_pyctr, "exec", "web", "sh", "-c", "echo $$").stdout.strip() != "1"
    logs = wait_until(lambda: (out := run_ok(run_pyctr, "logs", "web")).stdout and out.stderr and out,
                      "both streams in the log")
    assert logs.stdout == "hello\n" and logs.stderr == "oops\n"
    stamped = run_ok(run_pyctr, "logs", "-t", "--tail", "1", "web")
    assert stamped.stderr.startswith("20") and stamped.stderr.endswith(" oops\n") and stamped.stdout == ""
    started = time.monotonic()
    run_ok(run_pyctr, "stop", "-t", "1", "web")
    assert time.monotonic() - started < 8
    state = inspect(run_pyctr, "web")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137 and not state["Running"]
    assert run_pyctr("ps", "-q").stdout.strip() == ""
    assert cid[:12] in run_pyctr("ps", "-a").stdout
    run_ok(run_pyctr, "rm", "web")
    assert not container_dir(pyctr_env, cid).exists()
    assert own_cgroup_dirs(cid) == []
    assert run_pyctr("inspect", "web").returncode != 0


def test_a_foreground_run_keeps_its_streams_and_a_log(run_pyctr):
    result = run_pyctr("run", "--name", "fg-log", *NONE, "alpine", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    logs = run_ok(run_pyctr, "logs", "fg-log")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")


def test_run_rm_detach_wait_kill_prune(run_pyctr, pyctr_env):
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "alpine", "echo", "bye")
    assert out.stdout == "bye\n"
    assert run_pyctr("ps", "-aq").stdout.strip() == "", "--rm left the container behind"

    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    assert inspect(run_pyctr, cid[:6])["State"]["Running"] is True  # a unique prefix works
    # PID 1 has no TERM handler: the kernel drops the signal as it is sent, so PID 1 is still
    # there for the KILL. Had TERM been delivered, the exit code would be 143, KILL or not.
    run_ok(run_pyctr, "kill", "-s", "TERM", cid)
    run_ok(run_pyctr, "kill", cid)
    assert run_ok(run_pyctr, "wait", cid).stdout.strip() == "137"

    finished = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "true").stdout.strip()
    assert run_ok(run_pyctr, "wait", finished).stdout.strip() == "0"
    pruned = run_ok(run_pyctr, "container", "prune", "-f").stdout
    assert cid in pruned and finished in pruned
    assert run_pyctr("ps", "-aq").stdout.strip() == ""


@pytest.mark.parametrize("command, code", [
    (["true"], 0),
    (["sh", "-c", "exit 7"], 7),
    (["/etc/passwd"], 126),
    (["/etc"], 126),
    (["no-such-command"], 127),
])
def test_exit_codes(run_pyctr, command, code):
    result = run_pyctr("run", "--rm", *NONE, "alpine", *command)
    assert result.returncode == code, result.stderr
    if code in (126, 127):
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_exit_code_137_when_killed_in_the_foreground(run_pyctr, pyctr_env):
    proc = subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "run", "--name", "fg", *NONE,
                             "alpine", "sleep", "60"], env=pyctr_env)
    try:
        wait_until(lambda: run_pyctr("ps", "-q").stdout.strip(), "the container to run")
        run_ok(run_pyctr, "kill", "fg")
        assert proc.wait(10) == 137
    finally:
        proc.kill()
        proc.wait()


def test_twenty_detached_at_once_get_distinct_names(run_pyctr, pyctr_env):
    procs = [subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "run", "-d", *NONE, "alpine",
                               "sleep", "60"], env=pyctr_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(20)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err for code, _, err in results if code]
    ids = {out.strip() for _, out, _ in results}
    assert len(ids) == 20
    listed = json.loads(run_ok(run_pyctr, "ps", "--format", "json").stdout)
    assert len(listed) == 20 and len({c["Names"][0] for c in listed}) == 20


# --- configuration -------------------------------------------------------------------------
def test_env_user_workdir_volume_readonly(run_pyctr, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from host")
    env_file = tmp_path / "env.list"
    env_file.write_text("# a comment\nFROM_FILE=yes\n")
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "-e", "GREETING=hi", "--env-file", env_file,
                 "-u", "nobody", "-w", "/work/dir", "-v", f"{shared}:/data", "alpine", "sh", "-c",
                 "echo $GREETING $FROM_FILE $HOME; id -u; pwd; cat /data/in.txt").stdout.splitlines()
    assert out == ["hi yes /", "65534", "/work/dir", "from host"]

    out = run_ok(run_pyctr, "run", "--rm", *NONE, "-u", "1000:1000", "alpine", "id").stdout
    assert out.startswith("uid=1000 gid=1000")

    # A working directory that cannot be one (a file in the way) is the caller's error: 125.
    not_a_dir = run_pyctr("run", "--rm", *NONE, "-w", "/etc/passwd/sub", "alpine", "pwd")
    assert (not_a_dir.returncode, not_a_dir.stderr) == (
        125, "Error: working directory /etc/passwd/sub: Not a directory\n"), not_a_dir.stderr

    # Alpine's /var/run is a symlink to /run: the mount lands in the container's /run, not the host's.
    via_link = run_ok(run_pyctr, "run", "--rm", *NONE, "-v", f"{shared}:/var/run/pyctr-test", "alpine",
                      "cat", "/run/pyctr-test/in.txt").stdout
    assert via_link == "from host" and not os.path.exists("/run/pyctr-test")

    ro = run_pyctr("run", "--rm", *NONE, "-v", f"{shared}:/data:ro", "alpine", "touch", "/data/new")
    assert ro.returncode != 0 and not (shared / "new").exists()
    readonly = run_pyctr("run", "--rm", *NONE, "--read-only", "alpine", "touch", "/new")
    assert readonly.returncode != 0 and "Read-only" in readonly.stderr


@cgroupfs.needs_limits
def test_inspect_is_docker_shaped(run_pyctr):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "--name", "shape", "-m", "64m", "--cpus", "0.5",
                 "--pids-limit", "50", "--cap-add", "SYS_TIME", "--cap-drop", "NET_RAW", "-e", "A=1",
                 "alpine", "sleep", "60").stdout.strip()
    data = inspect(run_pyctr, "shape")
    assert data["Id"] == cid and data["Name"] == "/shape"
    assert set(data["State"]) >= {"Status", "Running", "Pid", "ExitCode", "StartedAt", "FinishedAt", "OOMKilled"}
    assert data["State"]["Pid"] > 1 and os.path.exists(f"/proc/{data['State']['Pid']}")
    assert data["Config"]["Cmd"] == ["sleep", "60"] and "A=1" in data["Config"]["Env"]
    assert set(data["Config"]) >= {"Image", "Cmd", "Env", "Hostname", "WorkingDir", "User"}
    hc = data["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (64 << 20, 500_000_000, 50)
    assert hc["CapAdd"] == ["SYS_TIME"] and hc["CapDrop"] == ["NET_RAW"]
    assert set(data["NetworkSettings"]) >= {"IPAddress", "Gateway", "MacAddress", "Networks"}
    template = run_ok(run_pyctr, "inspect", "-f", "{{.State.Status}} {{.HostConfig.Memory}}", "shape")
    assert template.stdout.strip() == f"running {64 << 20}"
    # As with docker inspect, a name that is no container can be an image.
    image = json.loads(run_ok(run_pyctr, "inspect", "alpine").stdout)[0]
    assert image["Id"] == data["Image"] and "alpine:latest" in image["RepoTags"]


# --- privileges (harmless forms only, after isolation is asserted) --------------------------
NOT_ISOLATED = 99


def guarded(script: str) -> list[str]:
    """`sh -c SCRIPT`, where SCRIPT runs only once the same container has shown that it is not
    in this machine's PID namespace (else it exits 99): a regression can never reach the host."""
    host_ns = os.readlink("/proc/self/ns/pid")
    return ["sh", "-c", f'[ "$(readlink /proc/self/ns/pid)" != "{host_ns}" ] || exit {NOT_ISOLATED}; {script}']


def run_guarded(run_pyctr, script: str, *flags):
    result = run_pyctr("run", "--rm", *NONE, *flags, "alpine", *guarded(script))
    assert result.returncode != NOT_ISOLATED, "the container shares the host's PID namespace"
    return result


def test_the_guard_stops_a_script_in_the_hosts_pid_namespace():
    on_host = subprocess.run(guarded("echo ran"), capture_output=True, text=True)
    assert on_host.returncode == NOT_ISOLATED and on_host.stdout == ""


def test_privileged_calls_fail_by_default(run_pyctr):
    # Setting the clock to its current value: harmless even if it wrongly succeeded.
    clock = run_guarded(run_pyctr, "date -s @$(date +%s)")
    assert "can't set date: Operation not permitted" in clock.stderr, "CAP_SYS_TIME was not dropped"
    assert run_guarded(run_pyctr, "mount -t tmpfs none /mnt").returncode != 0
    # 'h' only prints the sysrq help to the kernel log.
    assert run_guarded(run_pyctr, "echo h > /proc/sysrq-trigger").returncode != 0
    # Without CAP_SYS_BOOT the kernel refuses reboot(2) outright (and inside a PID namespace it
    # could at most end the container): the call fails, and the shell that made it goes on.
    reboot = run_guarded(run_pyctr, "reboot -f; echo still running")
    assert reboot.stderr == "reboot: Operation not permitted\n" and reboot.stdout == "still running\n"
    nnp = run_ok(run_pyctr, "run", "--rm", *NONE, "alpine", "grep", "NoNewPrivs", "/proc/self/status").stdout
    assert nnp.split()[1] == "1"


def test_cap_add_sys_time_allows_setting_the_clock(run_pyctr):
    clock = run_guarded(run_pyctr, "date -s @$(date +%s)", "--cap-add", "SYS_TIME")
    assert clock.returncode == 0 and "can't set date" not in clock.stderr, clock.stderr


def test_cap_drop_all_leaves_no_capabilities(run_pyctr):
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "--cap-drop", "ALL", "alpine", "grep", "^CapBnd", "/proc/self/status").stdout
    assert int(out.split()[1], 16) == 0


# --- resources -----------------------------------------------------------------------------
@cgroupfs.needs_limits
def test_memory_hog_is_oom_killed(run_pyctr):
    result = run_pyctr("run", "--name", "hog", *NONE, "-m", "32m", "alpine", "sh", "-c",
                       "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done")
    assert result.returncode == 137
    assert inspect(run_pyctr, "hog")["State"]["OOMKilled"] is True


@cgroupfs.needs_limits
def test_pids_limit_holds_a_fork_loop(run_pyctr):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "--pids-limit", "20", "alpine", "sh", "-c",
                 "sh -c 'for i in $(seq 60); do sleep 60 & done'; exec sleep 60").stdout.strip()
    wait_until(lambda: "can't fork: Resource temporarily unavailable" in run_ok(run_pyctr, "logs", cid).stderr,
               "the fork loop to hit the limit")
    stats = json.loads(run_ok(run_pyctr, "stats", "--no-stream", "--format", "json", cid).stdout)
    assert 1 < int(stats[0]["PIDs"]) <= 20


@cgroupfs.needs_limits
def test_cpus_half_holds_a_busy_loop_to_half_a_cpu(run_pyctr):
    from pyctr.runtime import cgroups

    cid = run_ok(run_pyctr, "run", "-d", *NONE, "--cpus", "0.5", "alpine", "sh", "-c",
                 "while :; do :; done").stdout.strip()
    group = cgroups.for_container(cid)
    cpu_stat = Path(group.path("cpu"), "cpu.stat")

    def throttled() -> int:
        return int(dict(line.split() for line in cpu_stat.read_text().splitlines()).get("nr_throttled", 0))

    # On a busy machine the loop may get less than half a CPU, so a lower bound on its share
    # would fail for nothing. What a limit does, under any load: the kernel throttles the loop
    # whenever it reaches its quota (never without one), and its share stays under the limit.
    wait_until(lambda: throttled() > 0, "the kernel to throttle the loop at its quota", timeout=30)
    before, t0, throttled0 = group.usage().cpu_ns, time.monotonic(), throttled()
    wait_until(lambda: throttled() >= throttled0 + 20, "twenty more periods at the quota", timeout=60)
    share = (group.usage().cpu_ns - before) / ((time.monotonic() - t0) * 1e9)
    assert share < 0.6, f"--cpus 0.5 gave {share:.2f} of a CPU"


def test_top_lists_the_containers_processes(run_pyctr):
    run_ok(run_pyctr, "run", "-d", *NONE, "--name", "tops", "alpine", "sh", "-c", "sleep 60 & sleep 61")
    out = wait_until(lambda: (top := run_ok(run_pyctr, "top", "tops").stdout).count("sleep 6") == 2 and top,
                     "both sleeps to start")
    assert "sleep 60" in out and "sleep 61" in out and out.splitlines()[0].split()[:2] == ["UID", "PID"]


# --- exec, debug, tty ----------------------------------------------------------------------
def process_in_pidns_of(pid: int, cmdline: bytes) -> int | None:
    """The host PID of a process with this command line in the PID namespace of `pid`."""
    namespace = os.readlink(f"/proc/{pid}/ns/pid")
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/ns/pid") == namespace and \
                    Path(f"/proc/{entry}/cmdline").read_bytes() == cmdline:
                return int(entry)
        except OSError:
            continue
    return None


def test_exec_joins_every_namespace_and_the_cgroup(run_pyctr, pyctr_env):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "--hostname", "inside", "alpine", "sleep", "60").stdout.strip()
    pid = inspect(run_pyctr, cid)["State"]["Pid"]
    out = run_ok(run_pyctr, "exec", "-e", "X=1", "-w", "/tmp", cid, "sh", "-c",
                 "hostname; echo $X; pwd; for n in pid mnt net uts ipc cgroup; do readlink /proc/self/ns/$n; done").stdout.split()
    assert out[:3] == ["inside", "1", "/tmp"]
    assert out[3:] == [os.readlink(f"/proc/{pid}/ns/{n}") for n in ("pid", "mnt", "net", "uts", "ipc", "cgroup")]
    # The cgroup itself, seen from the host: the exec'd process is in every cgroup PID 1 is in.
    execd = subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "exec", cid, "sleep", "1234"], env=pyctr_env)
    try:
        deadline = time.time() + 10
        while (sleeper := process_in_pidns_of(pid, b"sleep\x001234\x00")) is None:
            assert time.time() < deadline and execd.poll() is None, "the exec'd process never ran"
            time.sleep(0.02)
        assert Path(f"/proc/{sleeper}/cgroup").read_text() == Path(f"/proc/{pid}/cgroup").read_text()
        dirs = own_cgroup_dirs(cid)
        assert dirs and all(str(sleeper) in Path(d, "cgroup.procs").read_text().split() for d in dirs)
    finally:
        execd.kill()
        execd.wait()
    assert run_pyctr("exec", cid, "sh", "-c", "exit 5").returncode == 5
    assert run_pyctr("exec", cid, "no-such-command").returncode == 127
    assert run_pyctr("exec", "-u", "nobody", cid, "id", "-u").stdout.strip() == "65534"


def test_debug_uses_host_tools_in_the_containers_network(run_pyctr):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    pid = inspect(run_pyctr, cid)["State"]["Pid"]
    links = run_ok(run_pyctr, "debug", cid, "ip", "-o", "link").stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    # The program that ran is the host's (Alpine has only busybox), in the container's network.
    seen = run_ok(run_pyctr, "debug", cid, "sh", "-c",
                  "readlink /proc/$$/exe; readlink /proc/$$/ns/net; readlink /proc/$$/ns/mnt").stdout.split()
    assert seen == [os.path.realpath(shutil.which("sh")), os.readlink(f"/proc/{pid}/ns/net"),
                    os.readlink("/proc/self/ns/mnt")]
    assert seen[1] != os.readlink("/proc/self/ns/net")


def test_interactive_tty(run_pyctr, pyctr_env):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", "run", "-it", "--rm", "--name", "tty1", *NONE,
                                           "alpine", "/bin/sh"],
                          env=pyctr_env, encoding="utf-8", timeout=15, dimensions=(30, 100))
    try:
        child.expect("# ")
        child.sendline("echo pid=$$; stty size; tty")
        child.expect("pid=1")
        child.expect("30 100")
        child.expect("/dev/pts/0")  # a pty of the container's own devpts
        child.setwinsize(40, 120)
        child.sendline("stty size")
        child.expect("40 120")
        child.sendline("sleep 30")
        wait_until(lambda: "sleep 30" in run_ok(run_pyctr, "top", "tty1").stdout, "sleep to run in the foreground")
        child.sendcontrol("c")
        child.expect("# ", timeout=5)
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["run", "--rm", "NoSuchImage", "true"], "invalid reference format"),
    (["run", "--rm", "-m", "abc", "alpine", "true"], "invalid"),
    (["run", "--rm", "-v", "relative:/x", "alpine", "true"], "volume"),
    (["run", "--rm", "-v", "/nonexistent-dir-xyz:/x", "alpine", "true"], "volume"),
    (["run", "--rm", "-v", "justone", "alpine", "true"], "volume"),
    (["run", "--rm", "--cap-add", "NOT_A_CAP", "alpine", "true"], "capability"),
    (["inspect", "no-such-container"], "No such object"),
    (["rm", "no-such-container"], "No such container"),
    (["exec", "no-such-container", "true"], "No such container"),
])
def test_bad_input_is_one_line_and_125(run_pyctr, args, message):
    result = run_pyctr(*args[:1], *NONE, *args[1:]) if args[0] == "run" else run_pyctr(*args)
    assert result.returncode == 125, result
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_duplicate_name_and_removing_a_running_container(run_pyctr):
    run_ok(run_pyctr, "run", "-d", *NONE, "--name", "twin", "alpine", "sleep", "60")
    dup = run_pyctr("run", "-d", *NONE, "--name", "twin", "alpine", "true")
    assert dup.returncode == 125 and "already in use" in dup.stderr
    busy = run_pyctr("rm", "twin")
    assert busy.returncode == 125 and "running" in busy.stderr
    run_ok(run_pyctr, "rm", "-f", "twin")
    assert run_pyctr("ps", "-aq").stdout.strip() == ""


# --- crash safety --------------------------------------------------------------------------
def _no_leftovers(env, cid_list):
    for cid in cid_list:
        assert own_cgroup_dirs(cid) == [], f"cgroup of {cid[:12]} left behind"
        assert not container_dir(env, cid).exists()
    assert "pyctr" not in "".join(l for l in Path("/proc/mounts").read_text().splitlines() if env["PYCTR_ROOT"] in l)


def pyctr_processes(env) -> set[int]:
    """Live processes that pyctr started with this env: CLI, monitor, PID 1 before its exec."""
    marker = f"PYCTR_ROOT={env['PYCTR_ROOT']}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and marker in Path(entry.path, "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return found


def running_monitors(env) -> set[int]:
    states = (json.loads(p.read_text()) for p in Path(env["PYCTR_STATE"], "containers").glob("*.json"))
    return {s["MonitorPid"] for s in states if s.get("Status") == "running" and s.get("MonitorPid")}


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.12, 0.3])
def test_sigkill_of_pyctr_run_then_rm_f_leaves_nothing(run_pyctr, pyctr_env, delay):
    proc = subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "run", *NONE, "alpine", "sleep", "60"],
                            env=pyctr_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)  # the moment of the kill is the parameter, not a wait
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # What the killed pyctr had forked (a monitor, a PID 1 waiting to be told to go) settles:
    # each either becomes the recorded monitor of a running container, or exits.
    wait_until(lambda: pyctr_processes(pyctr_env) <= running_monitors(pyctr_env),
               "the killed run's processes to settle")
    ids = run_ok(run_pyctr, "ps", "-aq", "--no-trunc").stdout.split()
    pids = [json.loads(run_ok(run_pyctr, "inspect", cid).stdout)[0]["State"]["Pid"] for cid in ids]
    if ids:
        run_ok(run_pyctr, "rm", "-f", *ids)
    for pid in pids:
        assert not pid or not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    _no_leftovers(pyctr_env, ids)


def test_sigkill_of_the_monitor_keeps_ps_truthful(run_pyctr, pyctr_env):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    state = json.loads((Path(pyctr_env["PYCTR_STATE"]) / "containers" / f"{cid}.json").read_text())
    os.kill(state["MonitorPid"], signal.SIGKILL)
    wait_until(lambda: process_gone(state["MonitorPid"]), "the monitor to die")
    assert inspect(run_pyctr, cid)["State"]["Running"] is True  # PID 1 still runs
    os.kill(state["Pid"], signal.SIGKILL)  # a PID this test's container owns
    wait_until(lambda: process_gone(state["Pid"]), "PID 1 to die")
    data = inspect(run_pyctr, cid)["State"]
    assert data["Status"] == "exited" and data["Running"] is False
    run_ok(run_pyctr, "rm", "-f", cid)
    _no_leftovers(pyctr_env, [cid])


def test_after_a_reboot_containers_show_exited_and_can_be_removed(run_pyctr, pyctr_env):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    run_ok(run_pyctr, "kill", cid)
    run_ok(run_pyctr, "wait", cid)
    shutil.rmtree(pyctr_env["PYCTR_STATE"])  # what a reboot does to /run
    listed = run_ok(run_pyctr, "ps", "-a").stdout
    assert cid[:12] in listed and "Exited" in listed
    run_ok(run_pyctr, "rm", cid)
    _no_leftovers(pyctr_env, [cid])


# --- more of the CLI -----------------------------------------------------------------------
def test_signals_to_a_foreground_run_reach_the_container(pyctr_env):
    proc = subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "run", "--rm", *NONE, "alpine", "sh", "-c",
                             "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done"],
                            env=pyctr_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)  # to pyctr, which forwards it
        assert proc.wait(10) == 3
        assert proc.stdout.read() == "got TERM\n"
    finally:
        proc.kill()
        proc.wait()


def test_start_attach_restart_and_logs_follow(run_pyctr, pyctr_env):
    run_ok(run_pyctr, "create", *NONE, "--name", "att", "alpine", "sh", "-c", "echo attached; exit 4")
    attached = run_pyctr("start", "-a", "att")
    assert attached.returncode == 4 and attached.stdout == "attached\n"

    run_ok(run_pyctr, "run", "-d", *NONE, "--name", "ticker", "alpine", "sh", "-c",
           "for i in 1 2 3; do echo tick $i; sleep 0.3; done")
    followed = run_ok(run_pyctr, "logs", "-f", "ticker", timeout=20)
    assert followed.stdout == "tick 1\ntick 2\ntick 3\n"

    first_start = inspect(run_pyctr, "ticker")["State"]["StartedAt"]
    run_ok(run_pyctr, "restart", "-t", "1", "ticker")
    assert inspect(run_pyctr, "ticker")["State"]["StartedAt"] != first_start


def test_rmi_is_refused_while_a_container_uses_the_image(run_pyctr, fresh_env):
    run_ok(run_pyctr, "pull", "alpine:3.19", env=fresh_env)
    run_ok(run_pyctr, "create", *NONE, "--name", "user", "alpine:3.19", "true", env=fresh_env)
    refused = run_pyctr("rmi", "alpine:3.19", env=fresh_env)
    assert refused.returncode == 125
    assert "is used by container user" in refused.stderr and refused.stderr.count("\n") == 1
    assert "3.19" in run_ok(run_pyctr, "images", env=fresh_env).stdout
    run_ok(run_pyctr, "rm", "user", env=fresh_env)
    run_ok(run_pyctr, "rmi", "alpine:3.19", env=fresh_env)
    assert "3.19" not in run_ok(run_pyctr, "images", env=fresh_env).stdout


def test_exec_with_a_tty_and_a_detached_tty_container(run_pyctr, pyctr_env):
    pexpect = pytest.importorskip("pexpect")
    cid = run_ok(run_pyctr, "run", "-dit", *NONE, "alpine", "sh").stdout.strip()
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", "exec", "-it", cid, "sh"],
                          env=pyctr_env, encoding="utf-8", timeout=15)
    try:
        child.expect("# ")
        child.sendline("tty; echo $$")
        child.expect("/dev/pts/1")
        child.sendline("exit 6")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 6
    # Through all that, -i kept the detached shell waiting on its stdin rather than at EOF.
    assert inspect(run_pyctr, cid)["State"]["Running"] is True


# --- what users rely on --------------------------------------------------------------------
def test_network_host_shares_the_hosts_network_and_name(run_pyctr):
    out = run_ok(run_pyctr, "run", "--rm", "--network", "host", "alpine", "sh", "-c",
                 "readlink /proc/self/ns/net; hostname; echo $$").stdout.split()
    assert out == [os.readlink("/proc/self/ns/net"), os.uname().nodename, "1"]


def test_privileged_gets_every_capability_mounts_and_devices(run_pyctr):
    # Harmless forms only: a tmpfs in the container's own mount namespace, a node for /dev/zero.
    script = ("grep CapEff /proc/self/status; "
              "mount -t tmpfs none /mnt && echo mounted || echo mount-denied; "
              "mknod /tmp/zero c 1 5; if head -c 2 /tmp/zero > /tmp/read; then od -An -tx1 /tmp/read | tr -d ' '; "
              "else echo zero-denied; fi")
    privileged = run_guarded(run_pyctr, script, "--privileged")
    default = run_guarded(run_pyctr, script)
    host_bounding = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("CapBnd:"))
    assert privileged.stdout.split() == ["CapEff:", host_bounding, "mounted", "0000"], privileged.stderr
    assert default.stdout.split()[2:] == ["mount-denied", "zero-denied"]
    assert default.stdout.split()[1] != host_bounding


def test_run_i_pipes_stdin_to_the_container(run_pyctr):
    piped = run_pyctr("run", "--rm", "-i", *NONE, "alpine", "sh", "-c", "tr a-z A-Z; echo end",
                      input="hello\nworld\n")
    assert (piped.returncode, piped.stdout) == (0, "HELLO\nWORLD\nend\n"), piped.stderr
    # Without -i the container's stdin is empty, as with Docker.
    closed = run_ok(run_pyctr, "run", "--rm", *NONE, "alpine", "cat", input="not for you\n")
    assert closed.stdout == ""


def test_exec_i_pipes_stdin_and_exec_d_returns_at_once(run_pyctr):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    piped = run_pyctr("exec", "-i", cid, "sh", "-c", "tr a-z A-Z", input="piped\n")
    assert (piped.returncode, piped.stdout) == (0, "PIPED\n"), piped.stderr
    assert run_ok(run_pyctr, "exec", cid, "cat", input="not for you\n").stdout == ""

    # The detached command cannot finish before /tmp/go exists: exec -d must return without it,
    # and without holding our stdout (else this call would wait for it).
    detached = run_pyctr("exec", "-d", cid, "sh", "-c",
                         "echo to-nowhere; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done > /tmp/marker",
                         timeout=30)
    assert (detached.returncode, detached.stdout) == (0, ""), detached.stderr
    assert run_pyctr("exec", cid, "cat", "/tmp/marker").returncode == 1  # still waiting
    run_ok(run_pyctr, "exec", cid, "touch", "/tmp/go")
    wait_until(lambda: run_pyctr("exec", cid, "cat", "/tmp/marker").stdout == "done\n",
               "the detached command to finish in the container")


def test_concurrent_starts_of_one_container_give_one_pid_1(run_pyctr, pyctr_env):
    from pyctr.runtime import cgroups

    cid = run_ok(run_pyctr, "create", *NONE, "--name", "once", "alpine", "sh", "-c",
                 "echo started; exec sleep 60").stdout.strip()
    try:
        starts = [subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "start", "once"], env=pyctr_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [(p.wait(60), *p.communicate()) for p in starts]
        # As with Docker, starting a container that is already running succeeds and changes nothing.
        assert results == [(0, "once\n", "")] * 4, results
        # Every start has returned, so any PID 1 it made has exec'd by now.
        processes = run_ok(run_pyctr, "top", "once").stdout.splitlines()[1:]
        assert len(processes) == 1 and processes[0].endswith("sleep 60"), processes
        wait_until(lambda: run_ok(run_pyctr, "logs", "once").stdout, "the start to be logged")
        assert run_ok(run_pyctr, "logs", "once").stdout == "started\n"
    finally:
        # Extra PID 1s that a broken lock let through are in this container's cgroup but in no
        # record: `rm -f` would not find them, and they would hold the cgroup.
        for pid in cgroups.for_container(cid).pids():
            os.kill(pid, signal.SIGKILL)


def test_binds_under_dev_are_mounted_over_the_containers_dev(run_pyctr, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "in.txt").write_text("from host")
    single = tmp_path / "single"
    single.write_text("one file")
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "-v", f"{folder}:/dev/x", "-v", f"{single}:/dev/xf:ro",
                 "alpine", "sh", "-c", "cat /dev/x/in.txt; echo; cat /dev/xf; echo; echo back > /dev/x/out; "
                 "echo no > /dev/xf || echo read-only; ls /dev").stdout.splitlines()
    assert out[:3] == ["from host", "one file", "read-only"]
    assert {"null", "zero", "pts", "x", "xf"} <= set(out[3:])  # the container's /dev, plus the binds
    assert (folder / "out").read_text() == "back\n" and single.read_text() == "one file"


def test_logs_give_bytes_that_are_not_utf8_as_docker_does(pyctr_env):
    # Docker's json-file log keeps valid UTF-8 and writes U+FFFD for each byte that is not part
    # of it; the foreground run itself passes the bytes through untouched.
    raw = b"a\xff\xfeb\xe2\x82c\n\xc3\xa9 \xf0\x9f\x90\xb3\n"
    docker = b"a\xef\xbf\xbd\xef\xbf\xbdb\xef\xbf\xbd\xef\xbf\xbdc\n\xc3\xa9 \xf0\x9f\x90\xb3\n"
    printf = "".join(f"\\{b:03o}" for b in raw)
    pyctr = [sys.executable, "-m", "pyctr.runtime"]
    foreground = subprocess.run([*pyctr, "run", "--name", "bytes", *NONE, "alpine", "printf", printf],
                                env=pyctr_env, capture_output=True, timeout=60)
    assert (foreground.returncode, foreground.stdout) == (0, raw), foreground.stderr
    for encoding in (None, "ascii"):  # the log's bytes, whatever the caller's locale
        env = pyctr_env | ({"PYTHONIOENCODING": encoding} if encoding else {})
        logs = subprocess.run([*pyctr, "logs", "bytes"], env=env, capture_output=True, timeout=60)
        assert (logs.returncode, logs.stdout, logs.stderr) == (0, docker, b""), encoding
