"""What a container process inherits from the one who started it (issue 8): file descriptors,
the controlling terminal, stdio, the joining process of `exec`, and the session keyring.

Each attacker is a real program in the container: busybox from the Alpine image, or a static
probe (tests/probes/*.c) in a bind-mounted folder. The host's secrets are markers in temp
folders, a key in a throw-away session keyring, or the host's hostname, read and never changed.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import probes

NONE = ("--network", "none")
PYCTR = [sys.executable, "-m", "pyctr.runtime"]


def run_ok(run_pyctr, *args, **kw):
    result = run_pyctr(*args, **kw)
    assert result.returncode == 0, f"pyctr {' '.join(map(str, args))}: {result.returncode}\n{result.stderr}"
    return result


def probe_folder(tmp_path: Path, *names: str) -> Path:
    """A folder to bind-mount at /probe, holding the named probes, built static."""
    folder = tmp_path / "probe"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(probes.build(name), folder / name)
    return folder


def wait_for(condition, timeout: float = 20, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    return result


def with_fd3(target: Path, *pyctr_args, env: dict) -> subprocess.CompletedProcess:
    """pyctr, started by a shell that left fd 3 open on `target` (as `cmd 3</etc` or flock(1) do)."""
    return subprocess.run(["sh", "-c", 'exec "$@" 3<"$0"', str(target), *PYCTR, *map(str, pyctr_args)],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def sleeper(run_pyctr, tmp_path):
    """A running container with the probes' folder at /probe, for `exec`."""
    folder = probe_folder(tmp_path, "tiocsti")
    started = run_ok(run_pyctr, "run", "-d", *NONE, "-v", f"{folder}:/probe", "alpine", "sleep", "300")
    return started.stdout.strip(), folder


# --- escape 1: the caller's file descriptors (runc CVE-2024-21626) ---------------------------
def start_args(mode: str, request, *options: str) -> list[str]:
    """`run --rm OPTIONS alpine`, or `exec OPTIONS CID` into a sleeper."""
    if mode == "run":
        return ["run", "--rm", *NONE, *options, "alpine"]
    return ["exec", *options, request.getfixturevalue("sleeper")[0]]


@pytest.mark.parametrize("mode", ["run", "exec"])
def test_a_workdir_through_a_leaked_fd_does_not_reach_the_host(mode, pyctr_env, request):
    host_hostname = Path("/etc/hostname").read_text().strip()
    result = with_fd3(Path("/etc"), *start_args(mode, request, "-w", "/proc/self/fd/3"), "cat", "hostname",
                      env=pyctr_env)
    assert host_hostname not in result.stdout.split(), f"the container read the host's /etc: {result}"
    assert result.returncode != 0


@pytest.mark.parametrize("mode", ["run", "exec"])
def test_a_leaked_directory_fd_cannot_be_written_through(mode, pyctr_env, request, tmp_path):
    host_dir = tmp_path / "locked-dir"  # what `flock /tmp/d pyctr run ...` leaves open as fd 3
    host_dir.mkdir()
    attack = "echo x > /proc/self/fd/3/m; ls /proc/$$/fd; true"  # `true`: sh forks ls, $$ is sh
    result = with_fd3(host_dir, *start_args(mode, request), "sh", "-c", attack, env=pyctr_env)
    assert not (host_dir / "m").exists(), f"the container wrote into the host's folder: {result}"
    assert result.stdout.split() == ["0", "1", "2"], result  # the shell got stdio and nothing else


# --- escape 2: the admin's controlling terminal ----------------------------------------------
def probe_under_a_pty(pyctr_env, *args) -> str:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", *args], env=pyctr_env,
                          encoding="utf-8", timeout=30)
    try:
        child.expect(pexpect.EOF)
        return child.before.replace("\r\n", "\n")
    finally:
        child.close()


def assert_no_terminal(report: str) -> None:
    lines = report.splitlines()
    ids = dict(field.split("=") for field in next(line for line in lines if line.startswith("pid=")).split())
    assert ids["tty_nr"] == "0", f"the container process has a controlling terminal:\n{report}"
    assert ids["sid"] == ids["pid"], f"the container process is in the caller's session:\n{report}"
    injected = [line for line in lines if line.endswith(": injected")]
    assert not injected, f"TIOCSTI typed into the admin's terminal:\n{report}"
    assert "/dev/tty: open ENXIO" in lines, report


def test_run_without_t_has_no_controlling_terminal(pyctr_env, tmp_path):
    folder = probe_folder(tmp_path, "tiocsti")
    assert_no_terminal(probe_under_a_pty(pyctr_env, "run", "--rm", *NONE, "-v", f"{folder}:/probe",
                                         "alpine", "/probe/tiocsti"))


def test_exec_has_no_controlling_terminal(pyctr_env, sleeper):
    cid, folder = sleeper
    assert_no_terminal(probe_under_a_pty(pyctr_env, "exec", cid, "/probe/tiocsti"))
    probe_under_a_pty(pyctr_env, "exec", "-d", cid, "sh", "-c", "/probe/tiocsti > /probe/detached.out")
    report = wait_for(lambda: "/dev/tty" in (text := _read(folder / "detached.out")) and text,
                      what="the detached probe's report")
    assert_no_terminal(report)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


# --- exec's stdio: pipes, not the caller's own files -----------------------------------------
def test_exec_cannot_reopen_the_callers_stdout(pyctr_env, sleeper, tmp_path):
    cid, _ = sleeper
    log = tmp_path / "admin.log"
    log.write_text("the admin's log\n")
    with open(log, "a") as stdout:
        result = subprocess.run([*PYCTR, "exec", cid, "sh", "-c",
                                 "readlink /proc/self/fd/1 >&2; : > /proc/self/fd/1; echo appended"],
                                env=pyctr_env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "the admin's log\nappended\n", "the container truncated the caller's file"
    assert result.stderr.startswith("pipe:"), result.stderr


def test_exec_passes_stdin_its_end_and_exit_codes(run_pyctr, sleeper):
    cid, _ = sleeper
    piped = run_pyctr("exec", "-i", cid, "sh", "-c", "cat; echo end; exit 3", input="a\nb\n")
    assert (piped.returncode, piped.stdout) == (3, "a\nb\nend\n")
    assert run_pyctr("exec", cid, "sh", "-c", "cat; echo no-stdin", input="ignored\n").stdout == "no-stdin\n"
    both = run_pyctr("exec", cid, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (both.returncode, both.stdout, both.stderr) == (5, "out\n", "err\n")


# --- the joining process of exec -------------------------------------------------------------
def test_the_joining_exec_process_is_not_readable_from_the_container(run_pyctr, pyctr_env, tmp_path):
    # The spy stops the exec's process once it has the container's capabilities but is still the
    # host's Python, and tries to read its environment and open its executable.
    folder = probe_folder(tmp_path, "exec_spy")
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "-v", f"{folder}:/probe", "alpine", "sh", "-c",
                 "/probe/exec_spy PYCTR_TEST_SECRET /probe/report 60; exec sleep 300").stdout.strip()
    env = dict(pyctr_env, PYCTR_TEST_SECRET="the-callers-secret")
    for _ in range(20):  # the spy may miss the moment; it has never needed a second try here
        joined = subprocess.run([*PYCTR, "exec", cid, "env"], env=env, capture_output=True, text=True,
                                timeout=60)
        assert joined.returncode == 0, joined.stderr
        assert "PYCTR_TEST_SECRET" not in joined.stdout  # only the container's env and -e pass
        if (folder / "report").exists():
            break
    report = (folder / "report").read_text()
    assert "caught" in report, f"the spy never caught the joining process:\n{report}"
    assert "environ: EACCES" in report, f"the container read the caller's environment:\n{report}"
    assert "exe: EACCES" in report, f"the container opened the host's interpreter:\n{report}"


# --- the session keyring ---------------------------------------------------------------------
def with_a_key_in_the_session(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """COMMAND run with a key `pyctr-test-key` (= the secret) in a fresh session keyring."""
    return subprocess.run([str(probes.build("with_session_key")), "pyctr-test-key", "keyring-secret-42",
                           *command], env=env, capture_output=True, text=True, timeout=60)


def test_the_probe_reads_a_key_of_its_session_on_the_host():
    read = with_a_key_in_the_session(str(probes.build("read_session_key")), "pyctr-test-key")
    assert read.stdout == "read: keyring-secret-42\n", read  # so the container tests can fail


def without_seccomp(run_pyctr) -> list[str]:
    """Where pyctr has a seccomp filter, it refuses keyctl; off, a refusal proves the keyring."""
    has_seccomp = "--security-opt" in run_pyctr("run", "--help").stdout
    return ["--security-opt", "seccomp=unconfined"] if has_seccomp else []


@pytest.mark.parametrize("mode", ["run", "exec"])
def test_a_container_cannot_read_the_callers_session_keyring(mode, run_pyctr, pyctr_env, tmp_path):
    folder = probe_folder(tmp_path, "read_session_key")
    options = [*NONE, *without_seccomp(run_pyctr), "-v", f"{folder}:/probe"]
    if mode == "run":
        start = ["run", "--rm", *options, "alpine"]
    else:
        start = ["exec", run_ok(run_pyctr, "run", "-d", *options, "alpine", "sleep", "300").stdout.strip()]
    result = with_a_key_in_the_session(*PYCTR, *start, "/probe/read_session_key", "pyctr-test-key",
                                       env=pyctr_env)
    assert "keyring-secret-42" not in result.stdout, "the container read the caller's key"
    # Not found, rather than refused: the separation holds without a seccomp filter's help.
    assert result.stdout == "request_key: ENOKEY\n", result


# --- inheritable capabilities (moby CVE-2022-24769, runc CVE-2022-29162) ----------------------
CAP_NET_RAW = 13


def give_inheritable_file_cap(path: Path, cap: int) -> None:
    """setcap cap_X+ei, written as the kernel's vfs_cap_data (v2) without libcap's tools."""
    import struct

    magic_v2_effective = 0x02000000 | 0x1
    os.setxattr(path, "security.capability", struct.pack("<IIIII", magic_v2_effective, 0, 1 << cap, 0, 0))


def test_a_non_root_user_gains_no_capability_from_an_inheritable_file_cap(pyctr_env, tmp_path):
    # The caller of pyctr carries NET_RAW in its inheritable set (as a capsh --inh= wrapper does).
    # In the container, root drops to nobody (busybox su keeps the inheritable set across setuid)
    # and runs a file that has NET_RAW as an inheritable file capability: with a non-empty
    # inheritable set it would come out with NET_RAW. no_new_privs blocks that too, so the
    # container's own sets are checked as well: neither layer may go.
    folder = probe_folder(tmp_path, "capeff")
    give_inheritable_file_cap(folder / "capeff", CAP_NET_RAW)
    with_inheritable = ("import os, sys, prctl; prctl.cap_inheritable.net_raw = True; "
                        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    result = subprocess.run([sys.executable, "-c", with_inheritable, "-m", "pyctr.runtime", "run", "--rm",
                             *NONE, "-v", f"{folder}:/probe", "alpine", "sh", "-c",
                             "grep -E '^Cap(Inh|Amb)' /proc/self/status; su -s /bin/sh nobody -c /probe/capeff"],
                            env=pyctr_env, capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    root_inh, root_amb, *probe_lines = out.splitlines()
    assert int(root_inh.split()[1], 16) == 0 and int(root_amb.split()[1], 16) == 0, out
    probe = dict(line.split(":\t") for line in probe_lines)
    assert probe["Uid"].split()[0] == "65534", out  # the probe really ran as nobody
    assert int(probe["CapEff"], 16) & (1 << CAP_NET_RAW) == 0, out


# --- host code loaded from the container (the class of Docker CVE-2019-14271) ---------------
def test_past_pivot_root_no_import_can_reach_the_containers_files(tmp_path):
    # After pivot_root the folders on sys.path are the container's. Plant a module in the folder
    # pyctr itself was loaded from (as a container could at that path in its root) and show that
    # once init has forgotten the import path, importing it fails rather than running it.
    import pyctr.runtime

    planted = Path(pyctr.runtime.__file__).resolve().parents[1]
    script = ("import sys; from pyctr.runtime import init; init.forget_host_import_path()\n"
              "try:\n    import pyctr_planted_by_container\nexcept ImportError:\n    print('refused')\n")
    (tmp_path / "pyctr_planted_by_container.py").write_text("print('RAN CONTAINER CODE')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}:{planted}"}, timeout=30)
    assert result.stdout.strip() == "refused", result.stdout + result.stderr
