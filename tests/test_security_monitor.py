"""Security regressions of the monitor and of the cgroup set-up (issue 8): the monitor must run
no code from the caller's directory or environment, its log buffer must stay flat, and a limit
that cannot be applied must refuse the start. The attackers are busybox programs in the container.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cgroupfs

PYCTR = Path(sys.executable).parent / "pyctr"  # the console script, as a user runs it
NONE = ("--network", "none")


def run_ok(run_pyctr, *args, **kw):
    result = run_pyctr(*args, **kw)
    assert result.returncode == 0, f"pyctr {' '.join(map(str, args))}: {result.returncode}\n{result.stderr}"
    return result


def inspect(run_pyctr, ref) -> dict:
    return json.loads(run_ok(run_pyctr, "inspect", ref).stdout)[0]


# --- escape 3: code from the caller's working directory ----------------------------------------
def modules_the_monitor_imports() -> list[str]:
    """Every top-level module the monitors load (a foreground run's, the host monitor), whatever
    their path: a file named like any of them in the caller's directory is an attack."""
    script = ("import sys, selectors, socket, pyctr.runtime.monitor, pyctr.runtime.reaper, pyctr.runtime.lifecycle, "
              "pyctr.runtime.hostmonitor, pyctr.network.api; print(' '.join({n.partition('.')[0] for n in sys.modules}))")
    names = subprocess.run([sys.executable, "-I", "-c", script], cwd="/", capture_output=True,
                           text=True, check=True).stdout.split()
    # encodings loads first of all: shadowing it would only crash the interpreter.
    return sorted(n for n in names if n not in sys.builtin_module_names and n not in ("pyctr", "encodings"))


# The container plants Python files where the host's Python would look: pyctr/__init__.py,
# sitecustomize.py and one file per module the monitor imports. Each drops a marker on the host.
PLANT = r"""
while [ ! -e /src/go ]; do sleep 0.05; done
mkdir -p /src/pyctr
printf '%s\n' "$PAYLOAD" > /src/pyctr/__init__.py
for m in sitecustomize usercustomize $MODULES; do printf '%s\n' "$PAYLOAD" > /src/$m.py; done
exit 7
"""


def planted_env(pyctr_env, workdir: Path) -> dict:
    """The caller's environment points Python at its working directory too."""
    return dict(pyctr_env, PYTHONPATH=str(workdir), PYTHONSTARTUP=str(workdir / "sitecustomize.py"),
                PYTHONUSERBASE=str(workdir))


def payload(markers: Path) -> str:
    return f"import os; os.close(os.open({str(markers)!r} + '/' + __name__, os.O_CREAT | os.O_WRONLY, 0o600))"


def assert_the_plant_is_live(workdir: Path, markers: Path, env: dict) -> None:
    """The test's own check that it can fail: a plain Python started there runs the plant."""
    subprocess.run([sys.executable, "-c", "pass"], cwd=workdir, env=env, capture_output=True)
    assert os.listdir(markers), "the planted files would not have run anyway"


@pytest.mark.parametrize("mode", ["detached", "foreground"])
def test_the_monitor_runs_no_code_from_the_callers_directory(run_pyctr, pyctr_env, tmp_path, mode):
    workdir, markers = tmp_path / "project", tmp_path / "markers"
    workdir.mkdir()
    markers.mkdir()
    env = planted_env(pyctr_env, workdir)
    args = [PYCTR, "run", *NONE, "-v", f"{workdir}:/src",
            "-e", f"PAYLOAD={payload(markers)}", "-e", f"MODULES={' '.join(modules_the_monitor_imports())}"]
    if mode == "detached":
        # Detached: the host monitor, started by this run, records the exit.
        started = subprocess.run([*args, "-d", "alpine", "sh", "-c", PLANT], cwd=workdir, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        cid = started.stdout.strip()
        (workdir / "go").touch()
        assert run_ok(run_pyctr, "wait", cid, timeout=60).stdout.strip() == "7"
        state = inspect(run_pyctr, cid)["State"]
        assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 7, "")
        assert cgroupfs.container_dirs(cid) == [], "the monitor did not clean up the cgroup"
    else:
        # Foreground with --rm: the forked monitor removes the container after the plant.
        (workdir / "go").touch()
        ran = subprocess.run([*args, "--rm", "alpine", "sh", "-c", PLANT], cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 7, ran.stderr
        assert run_ok(run_pyctr, "ps", "-aq").stdout == "", "--rm left the container behind"
    assert (workdir / "pyctr" / "__init__.py").exists() and (workdir / "json.py").exists()
    assert os.listdir(markers) == [], f"the host ran the container's code: {sorted(os.listdir(markers))}"
    assert_the_plant_is_live(workdir, markers, env)


# --- the log buffer ------------------------------------------------------------------------------
def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])  # VmHWM is in KiB
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_entries(pyctr_env, cid) -> list[dict]:
    path = Path(pyctr_env["PYCTR_ROOT"]) / "containers" / cid / f"{cid}-json.log"
    with open(path, "rb") as log:
        return [json.loads(line) for line in log]


@cgroupfs.needs_limits
def test_32_mib_without_a_newline_keep_the_monitor_small(run_pyctr, pyctr_env, tmp_path):
    size = 32 << 20
    # The writer waits once it is done, so that the host monitor, which copies it, can be measured.
    script = (f"head -c {size} /dev/zero | tr '\\0' a; touch /src/written; "
              "while [ ! -e /src/go ]; do sleep 0.05; done")
    started = time.monotonic()
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "-m", "16m", "-v", f"{tmp_path}:/src",
                 "alpine", "sh", "-c", script).stdout.strip()
    keeper = proc_status(inspect(run_pyctr, cid)["State"]["Pid"], "PPid")  # PID 1's parent
    monitor_pid = proc_status(keeper, "PPid")
    assert b"pyctr.runtime.hostmonitor" in Path(f"/proc/{monitor_pid}/cmdline").read_bytes()
    wait_for(lambda: (tmp_path / "written").exists(), 60, "the container to write 32 MiB")
    peak_kib, cpu = proc_status(monitor_pid, "VmHWM"), cpu_seconds(monitor_pid)
    (tmp_path / "go").touch()
    assert run_ok(run_pyctr, "wait", cid, timeout=60).stdout.strip() == "0"
    elapsed = time.monotonic() - started
    assert peak_kib < 30 * 1024, f"the monitor grew to {peak_kib // 1024} MiB copying 32 MiB"
    assert cpu < 2.0, f"the monitor used {cpu:.1f} s of CPU to copy 32 MiB"
    assert elapsed < 10, f"the run took {elapsed:.1f} s"
    entries = log_entries(pyctr_env, cid)
    assert max(len(e["log"].encode()) for e in entries) == 16 * 1024  # Docker's split
    logs = run_pyctr("logs", cid)
    assert logs.returncode == 0 and len(logs.stdout) == size and logs.stdout == "a" * size


def test_a_long_line_of_multibyte_characters_prints_back_unchanged(run_pyctr, pyctr_env):
    # 'a', then 30000 two-byte characters and a newline: a split at exactly 16 KiB would cut one.
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", "sh", "-c",
                 "printf a; head -c 30000 /dev/zero | tr '\\0' x | sed 's/x/é/g' | tr -d '\\n'; echo; echo short"
                 ).stdout.strip()
    run_ok(run_pyctr, "wait", cid)
    line = "a" + "é" * 30000 + "\n"
    assert run_ok(run_pyctr, "logs", cid).stdout == line + "short\n"
    entries = [e["log"] for e in log_entries(pyctr_env, cid)]
    assert "".join(entries) == line + "short\n"
    assert all(len(e.encode()) <= 16 * 1024 for e in entries) and len(entries) == 5
    assert [e.endswith("\n") for e in entries] == [False, False, False, True, True]  # partial, as Docker


# --- limits that cannot be applied -----------------------------------------------------------------
def run_without_cgroups(pyctr_env, *args) -> subprocess.CompletedProcess:
    """pyctr in a private mount namespace whose /sys/fs/cgroup is an empty tmpfs, as under
    `ip netns exec` (which remounts /sys); the host's own cgroups are not touched. The last
    line of stdout lists what pyctr left in that /sys/fs/cgroup."""
    script = ('mount -t tmpfs pyctr-test /sys/fs/cgroup || exit 99; "$@"; status=$?; '
              'echo "left: $(ls -A /sys/fs/cgroup)"; exit $status')
    env = {k: v for k, v in pyctr_env.items() if k != "PYCTR_CGROUP_VERSION"}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           sys.executable, "-m", "pyctr.runtime", *args],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("limit", [["--pids-limit", "10"], ["-m", "16m"], ["--cpus", "0.5"], [], ["--privileged"]])
def test_a_limit_that_cannot_be_applied_refuses_the_start(run_pyctr, pyctr_env, limit):
    result = run_without_cgroups(pyctr_env, "run", "--rm", *NONE, *limit, "alpine", "echo", "ran")
    assert result.returncode == 125, f"started without its cgroup: {result.stdout}{result.stderr}"
    assert result.stdout == "left: \n", "the container ran, or pyctr made something in /sys/fs/cgroup"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: cannot "), result.stderr
    assert "no cgroup hierarchy is mounted" in result.stderr and "Errno" not in result.stderr
    if limit and limit[0] != "--privileged":
        assert limit[0].replace("-m", "--memory") in result.stderr
    assert run_ok(run_pyctr, "ps", "-aq").stdout == "", "--rm left a record behind"
    assert not any((Path(pyctr_env["PYCTR_ROOT"]) / "containers").glob("*/config.json"))
