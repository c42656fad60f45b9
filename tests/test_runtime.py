"""The runtime, for real: namespaces, the overlay root, privileges, limits and the lifecycle.

Every container runs with --network none (or host-free modes) here; networks have their own
tests inside a sandbox of network namespaces.
"""

import json
import os
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
    deadline = time.time() + 10
    while not (container_dir(pyctr_env, first) / "upper" / "written").exists():
        assert time.time() < deadline, "the write never reached the container's upper layer"
        time.sleep(0.05)
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
    time.sleep(0.2)
    logs = run_ok(run_pyctr, "logs", "web")
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
    run_ok(run_pyctr, "kill", "-s", "TERM", cid)  # PID 1 has no TERM handler: ignored
    time.sleep(0.2)
    assert inspect(run_pyctr, cid)["State"]["Running"] is True
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
        deadline = time.time() + 10
        while run_pyctr("ps", "-q").stdout.strip() == "":
            assert time.time() < deadline
            time.sleep(0.05)
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
    # Without CAP_SYS_BOOT, and inside a PID namespace, reboot can at most end the container.
    with open("/proc/uptime") as f:
        uptime_before = float(f.read().split()[0])
    reboot = run_guarded(run_pyctr, "exec reboot -f")
    assert reboot.returncode != 0
    with open("/proc/uptime") as f:
        assert float(f.read().split()[0]) >= uptime_before
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
    time.sleep(1.0)
    stats = json.loads(run_ok(run_pyctr, "stats", "--no-stream", "--format", "json", cid).stdout)
    assert 1 < int(stats[0]["PIDs"]) <= 20
    assert "can't fork" in run_pyctr("logs", cid).stderr or "Resource" in run_pyctr("logs", cid).stderr


@cgroupfs.needs_limits
def test_cpus_half_holds_a_busy_loop_near_fifty_percent(run_pyctr):
    from pyctr.runtime import cgroups

    cid = run_ok(run_pyctr, "run", "-d", *NONE, "--cpus", "0.5", "alpine", "sh", "-c",
                 "while :; do :; done").stdout.strip()
    group = cgroups.for_container(cid)
    time.sleep(0.5)
    before, t0 = group.usage().cpu_ns, time.monotonic()
    time.sleep(2.0)
    share = (group.usage().cpu_ns - before) / ((time.monotonic() - t0) * 1e9)
    assert 0.35 < share < 0.65, f"--cpus 0.5 gave {share:.2f} of a CPU"


def test_top_lists_the_containers_processes(run_pyctr):
    run_ok(run_pyctr, "run", "-d", *NONE, "--name", "tops", "alpine", "sh", "-c", "sleep 60 & sleep 61")
    time.sleep(0.3)
    out = run_ok(run_pyctr, "top", "tops").stdout
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
    links = run_ok(run_pyctr, "debug", cid, "ip", "-o", "link").stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    # The host's own `ip` binary ran: the container's busybox has no /usr/sbin/ip... but the host has.
    assert os.path.exists("/usr/sbin/ip") or os.path.exists("/sbin/ip")


def test_interactive_tty(pyctr_env):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", "run", "-it", "--rm", *NONE, "alpine", "/bin/sh"],
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
        time.sleep(0.5)
        child.sendcontrol("c")
        child.expect("# ", timeout=5)
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["run", "--rm", "nosuchimage", "true"], "alpine"),
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


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.12, 0.3])
def test_sigkill_of_pyctr_run_then_rm_f_leaves_nothing(run_pyctr, pyctr_env, delay):
    proc = subprocess.Popen([sys.executable, "-m", "pyctr.runtime", "run", *NONE, "alpine", "sleep", "60"],
                            env=pyctr_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
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
    time.sleep(0.2)
    assert inspect(run_pyctr, cid)["State"]["Running"] is True  # PID 1 still runs
    os.kill(state["Pid"], signal.SIGKILL)  # a PID this test's container owns
    time.sleep(0.3)
    data = inspect(run_pyctr, cid)["State"]
    assert data["Status"] == "exited" and data["Running"] is False
    run_ok(run_pyctr, "rm", "-f", cid)
    _no_leftovers(pyctr_env, [cid])


def test_after_a_reboot_containers_show_exited_and_can_be_removed(run_pyctr, pyctr_env):
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sleep", "60").stdout.strip()
    run_ok(run_pyctr, "kill", cid)
    run_ok(run_pyctr, "wait", cid)
    import shutil

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
    assert refused.returncode == 125 and "user" in refused.stderr + refused.stdout or "in use" in refused.stderr
    run_ok(run_pyctr, "rm", "user", env=fresh_env)
    run_ok(run_pyctr, "rmi", "alpine:3.19", env=fresh_env)
    assert "3.19" not in run_ok(run_pyctr, "images", env=fresh_env).stdout


def test_version_and_ps_stay_light(pyctr_env):
    for args in (["--version"], ["ps", "-a"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pyctr.runtime", *args],
                             env=pyctr_env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
        assert "pyctr.runtime.cli" in imported  # the probe works
        assert not {"pyroute2", "requests", "yaml", "tqdm", "cgroupspy"} & imported, args


def test_exec_with_a_tty_and_a_detached_tty_container(run_pyctr, pyctr_env):
    pexpect = pytest.importorskip("pexpect")
    cid = run_ok(run_pyctr, "run", "-dit", *NONE, "alpine", "sh").stdout.strip()
    time.sleep(0.2)
    assert inspect(run_pyctr, cid)["State"]["Running"] is True  # -i keeps the shell waiting
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
