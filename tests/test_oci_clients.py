"""A runc-compatible runtime driven by real clients: podman, containerd's ctr, and docker.

The runtime under test is <repo>/.venv/bin/pyctr-oci, or $PYCTR_CLIENT_RUNTIME (e.g.
/usr/sbin/runc, to check these tests themselves). Each client is private to this module and
runs in network namespaces of its own (see tests/ociclients.py); every container has no network.
The image is the Alpine minirootfs that pyctr pulled from the local mirror, loaded into each
client offline.
"""

import json
import subprocess
from pathlib import Path

import pytest

from ociclients import IMAGE, ClientSandbox, Containerd, Docker, Podman, image_archive, runtime_under_test
from test_runtime import wait_until

# PID 1 that stops with 7 on SIGTERM (a shell as PID 1 ignores signals it does not trap).
SERVICE = ["sh", "-c", 'trap "exit 7" TERM; sleep 1000 & wait']
# Doubles a shell variable until the memory limit's OOM killer ends it.
EAT_MEMORY = "x=a; while true; do x=$x$x; done"
# The container's own memory limit, as it sees it (cgroup v1, else v2).
SHOW_MEMORY_LIMIT = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                     " || cat /sys/fs/cgroup/memory.max")
CAP_CHOWN = 1 << 0


@pytest.fixture(scope="module")
def runtime() -> Path:
    return runtime_under_test()


@pytest.fixture(scope="module")
def box(runtime):
    box = ClientSandbox()
    yield box
    box.close()


@pytest.fixture(scope="module")
def archive(box, pyctr_root) -> Path:
    tarballs = sorted((pyctr_root / "images" / "_cache").glob("alpine-minirootfs-*.tar.gz"))
    assert tarballs, f"pyctr pull alpine left no minirootfs tarball in {pyctr_root}/images/_cache"
    return image_archive(tarballs[-1], box.dir / "alpine-image.tar")


@pytest.fixture(scope="module")
def podman(box, runtime, archive) -> Podman:
    podman = Podman(box, runtime)
    box.on_close("podman", podman.close)
    podman.load(archive)
    return podman


@pytest.fixture(scope="module")
def containerd(box, runtime, archive) -> Containerd:
    containerd = Containerd(box, runtime)
    containerd.start()
    containerd.ctr("image", "import", archive, timeout=120)
    return containerd


@pytest.fixture(scope="module")
def docker(box, runtime, archive) -> Docker:
    docker = Docker(box, runtime)
    docker.start()
    docker("load", "-i", archive, timeout=120)
    return docker


def runtime_state(runtime: Path, container: str, roots: list, enter: list = ()) -> dict:
    """`RUNTIME [--root R] state ID` for the first root that knows the container: proof that
    the runtime under test, and not some default one, made it. `enter`: an argv prefix."""
    answers = []
    for root in roots:
        result = _state(runtime, container, root, enter)
        if result.returncode == 0:
            return json.loads(result.stdout)
        answers.append(f"{' '.join(result.args)}: {result.returncode} {result.stderr.strip()}")
    raise AssertionError("the runtime under test does not know the container:\n" + "\n".join(answers))


def assert_runtime_forgot(runtime: Path, container: str, roots: list, enter: list = ()) -> None:
    """After the client removed the container, the runtime keeps no state of it."""
    assert roots
    for root in roots:
        result = _state(runtime, container, root, enter)
        assert result.returncode != 0, f"{' '.join(result.args)} still answers:\n{result.stdout}"


def _state(runtime: Path, container: str, root, enter) -> subprocess.CompletedProcess:
    argv = [*enter, str(runtime), *(["--root", str(root)] if root else []), "state", container]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def cap_eff(status: str) -> int:
    return next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:"))


# -- podman and docker -----------------------------------------------------------------------


@pytest.fixture(params=["podman", "docker"])
def docker_like(request):
    """podman or docker: their `run` speaks one command line."""
    return request.getfixturevalue(request.param)


def test_run_prints_and_removes(docker_like):
    result = docker_like(*docker_like.run_args("--rm", IMAGE, "echo", "hi"))
    assert result.stdout == "hi\n"
    assert docker_like("ps", "-aq").stdout == ""


def test_run_passes_the_exit_code_through(docker_like):
    result = docker_like(*docker_like.run_args("--rm", IMAGE, "sh", "-c", "exit 3"), check=False)
    assert result.returncode == 3, result.stderr


# -- podman ------------------------------------------------------------------------------------


def test_podman_detached_exec_stop_rm(podman, runtime):
    cid = podman(*podman.run_args("-d", "--name", "service", IMAGE, *SERVICE)).stdout.strip()
    try:
        assert podman("inspect", "-f", "{{.State.Status}}", "service").stdout.strip() == "running"
        state = runtime_state(runtime, cid, [None])  # podman passes no --root
        assert state["status"] == "running" and state["pid"] > 0

        result = podman("exec", "service", "sh", "-c", "echo from exec; exit 4", check=False)
        assert (result.returncode, result.stdout) == (4, "from exec\n"), result.stderr

        podman("stop", "--time", "10", "service")
        assert podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                      "service").stdout.split() == ["exited", "7"]
        podman("rm", "service")
    finally:
        podman("rm", "--force", "service", check=False)
    assert podman("ps", "-aq").stdout == ""
    assert_runtime_forgot(runtime, cid, [None])


def test_podman_memory_limit_oom_kills_with_137(podman):
    podman.forget_oom()
    script = f"{SHOW_MEMORY_LIMIT}; {EAT_MEMORY}"
    result = podman(*podman.run_args("--rm", "--memory", "32m", IMAGE, "sh", "-c", script),
                    check=False, timeout=60)
    assert result.returncode == 137, result.stderr
    assert result.stdout.split() == [str(32 << 20)]
    assert podman.oom_reported(), "conmon saw no OOM event in the container's memory cgroup"


def test_podman_cap_drop(podman):
    script = "grep CapEff /proc/self/status; chown 1 /etc/hostname && echo chowned"
    default = podman(*podman.run_args("--rm", IMAGE, "sh", "-c", script))
    assert cap_eff(default.stdout) & CAP_CHOWN and "chowned" in default.stdout

    dropped = podman(*podman.run_args("--rm", "--cap-drop", "chown", IMAGE, "sh", "-c", script),
                     check=False)
    assert dropped.returncode == 1, dropped.stderr
    assert not cap_eff(dropped.stdout) & CAP_CHOWN
    assert "Operation not permitted" in dropped.stderr
    assert "chowned" not in dropped.stdout


def test_podman_run_interactive_tty(podman):
    pexpect = pytest.importorskip("pexpect")
    argv = podman.command(*podman.run_args("--rm", "-it", IMAGE, "sh"))
    child = pexpect.spawn(argv[0], argv[1:], env=podman.env, encoding="utf-8", timeout=30,
                          dimensions=(30, 100))
    try:
        child.expect("# ")
        child.sendline("tty; stty size; echo $((6 * 7))")
        child.expect(r"(/dev/pts/\d+)\r\n(\d+ \d+)\r\n42\r\n")
        assert child.match.group(2) == "30 100"  # the terminal's size reached the container
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 5


# -- containerd (ctr) ------------------------------------------------------------------------


def test_ctr_run_prints_and_removes(containerd):
    result = containerd.ctr(*containerd.run_args("--rm", IMAGE, "echo-hi", "echo", "hi"))
    assert result.stdout == "hi\n"
    assert containerd.ctr("container", "ls", "-q").stdout == ""


def test_ctr_passes_the_exit_code_through(containerd):
    result = containerd.ctr(*containerd.run_args("--rm", IMAGE, "exit-3", "sh", "-c", "exit 3"),
                            check=False)
    assert result.returncode == 3, result.stderr


def test_ctr_detached_exec_kill_delete(containerd, runtime):
    ctr = containerd.ctr
    ctr(*containerd.run_args("-d", IMAGE, "service", *SERVICE))
    try:
        assert containerd.task_status("service") == "RUNNING"
        # The shim calls the runtime with --root /run/containerd/runc/NAMESPACE.
        state = runtime_state(runtime, "service", [containerd.runtime_root], containerd.enter_mounts)
        assert state["status"] == "running" and state["pid"] > 0

        result = ctr("task", "exec", "--fifo-dir", containerd.fifo_dir, "--exec-id", "probe",
                     "service", "sh", "-c", "echo from exec; exit 4", check=False)
        assert (result.returncode, result.stdout) == (4, "from exec\n"), result.stderr

        ctr("task", "kill", "service")  # SIGTERM
        wait_until(lambda: containerd.task_status("service") == "STOPPED", "the task to stop")
        deleted = ctr("task", "delete", "service")
        assert "exit code 7" in deleted.stderr
        assert containerd.task_status("service") is None
        ctr("container", "delete", "service")
    finally:
        ctr("task", "delete", "--force", "service", check=False)
        ctr("container", "delete", "service", check=False)
    assert ctr("container", "ls", "-q").stdout == ""
    assert_runtime_forgot(runtime, "service", [containerd.runtime_root], containerd.enter_mounts)


# -- docker ------------------------------------------------------------------------------------


def test_docker_detached_exec_stop_rm(docker, runtime):
    cid = docker(*docker.run_args("-d", "--name", "service", IMAGE, *SERVICE)).stdout.strip()
    try:
        assert docker("inspect", "-f", "{{.State.Status}} {{.HostConfig.Runtime}}",
                      "service").stdout.split() == ["running", "pyctr"]
        # dockerd hands the shim a runtime root under its exec-root, named after a runtime.
        roots = sorted((docker.dir / "exec").glob("runtime-*/moby"))
        state = runtime_state(runtime, cid, roots)
        assert state["status"] == "running" and state["pid"] > 0

        result = docker("exec", "service", "sh", "-c", "echo from exec; exit 4", check=False)
        assert (result.returncode, result.stdout) == (4, "from exec\n"), result.stderr

        docker("stop", "--time", "10", "service")
        assert docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                      "service").stdout.split() == ["exited", "7"]
        docker("rm", "service")
    finally:
        docker("rm", "--force", "service", check=False)
    assert docker("ps", "-aq").stdout == ""
    assert_runtime_forgot(runtime, cid, roots)
