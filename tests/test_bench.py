"""The bench's smoke mode runs end to end and leaves nothing behind. Nothing about speed."""

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the bench is a folder of the repository, not installed

from bench import procs  # noqa: E402
from bench.sandbox import NETNS_DIR, NetnsDirState, mount_points, release_netns_dir  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bench needs root")

LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MS_BIND = 4096
MNT_DETACH = 2


def _netns() -> set[str]:
    """The bench's node namespaces (others' tests may make namespaces of their own meanwhile)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("benchnode-")}


def _workdirs() -> set[Path]:
    return {d for d in Path("/tmp").glob("pyctr-bench-*") if d.is_dir()}


def _netns_dir_state() -> tuple[bool, bool]:
    state = NetnsDirState.of(NETNS_DIR)
    return state.existed, state.mounted


def test_quick_bench_prints_the_table_and_writes_every_run(tmp_path):
    netns_before, workdirs_before = _netns(), _workdirs()
    netns_dir_before = _netns_dir_state()
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    # A leak is a bug: the bench lists what its clean-up could not undo as LEAK lines.
    assert [line for line in p.stdout.splitlines() if line.startswith("LEAK:")] == [], p.stdout

    # The table: a header and one row per figure, every scenario present.
    assert "| scenario | figure | pyctr median" in p.stdout
    for scenario in ("start, no network", "OCI runtime", "start, network", "exec", "density N=10",
                     "density growth", "CLI overhead", "cluster N=3",
                     "network policy, 3 nodes"):
        assert f"| {scenario}" in p.stdout, scenario

    # The JSON keeps every run, and the machine it ran on.
    [result] = tmp_path.glob("bench-*.json")
    doc = json.loads(result.read_text())
    assert doc["quick"] is True and doc["machine"]["nproc"] >= 1
    keys = {r["key"] for r in doc["rows"]}
    assert {"start-none-runc", "oci-run-runc", "oci-podman-runc", "start-bridge-podman", "exec-podman",
            "density-10-start", "density-10-ps", "density-10-remove", "density-starts",
            "density-growth-pyctr", "cli-version", "start-none-python-floor",
            "start-none-python-floor-runc", "cluster-3-converge", "cluster-etcd-requests",
            "policy-spread", "policy-throughput-loss"} <= keys
    # The cluster of 3: every sample converged (their count is the quick runs'), and a start on a
    # node that holds a block cost etcd one transaction.
    rows = {r["key"]: r for r in doc["rows"]}
    assert len(rows["cluster-3-converge"]["pyctr"]["samples"]) == 3
    assert rows["cluster-etcd-requests"]["extra"]["by_method"] == {"Txn": 1}
    # Every row is in the table for the README too, with its budget and whether it was met.
    readme = p.stdout.split("For the project README")[1]
    for r in doc["rows"]:
        assert f"| {r['scenario']}: {r['title']} |" in readme, r["title"]
    # Memory per container has an absolute budget (MiB of PSS) at the largest N, and counts
    # every process pyctr keeps: at least one per container.
    memory = next(r for r in doc["rows"] if r["key"] == "density-10-mem-pss")
    assert memory["budget"] == 1.0 and memory["budget_on_figure"] and memory["met"] is not None
    assert "| ≤ 1 MiB |" in readme
    assert memory["extra"]["pyctr"]["processes"] >= 10, memory["extra"]["pyctr"]
    # The Python floor is the bench's own script: it has no excuse to fail.
    python_floor = next(r for r in doc["rows"] if r["key"] == "start-none-python-floor")["peer"]
    assert python_floor["error"] is None and len(python_floor["samples"]) == 3
    version = next(r for r in doc["rows"] if r["key"] == "cli-version")
    assert len(version["pyctr"]["samples"]) == 3  # --version needs nothing but pyctr itself
    # Every figure of pyctr was measured: peers may be missing here, pyctr may not fail.
    pyctr_rows = [r for r in doc["rows"] if r["pyctr"]["name"].startswith("pyctr")]
    assert {r["scenario"] for r in pyctr_rows} == {r["scenario"] for r in doc["rows"]}
    # (pyctr-oci runs runc's bundle, and under podman: it shares their set-up's failure, if any.)
    failed = {r["key"]: r["pyctr"]["error"] for r in pyctr_rows
              if (r["pyctr"]["error"] or not r["pyctr"]["samples"])
              and not (r["peer"] and r["peer"]["error"] and r["peer"]["error"] == r["pyctr"]["error"])}
    assert failed == {}

    # The bench cleans up after itself: its node namespace and its work directory are gone,
    # and the namespace folder is as it was (not left mounted on itself, nor removed).
    assert _netns() - netns_before == set()
    assert _workdirs() - workdirs_before == set()
    assert _netns_dir_state() == netns_dir_before


# -- finding a tool's processes: by environment, command line and descent ----------------------


def _spawn(argv: list[str], env: dict, started: list[int]) -> int:
    """Start argv from a shell that exits at once (so that its parent is no longer ours) and
    return its PID."""
    p = subprocess.run(["sh", "-c", '"$@" >/dev/null 2>&1 & echo $!', "sh", *argv], env=env,
                       capture_output=True, text=True, check=True)
    started.append(int(p.stdout))
    return started[-1]


def _child(pid: int, started: list[int]) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            started.append(int(kids[0]))
            return started[-1]
        time.sleep(0.02)
    raise AssertionError(f"{pid} started no child")


def test_without_a_local_mirror_the_bench_stops_rather_than_fetch_from_the_internet(tmp_path):
    """No alpine/ in --mirror-dir and no --mirror URL: the bench (and its profile) refuse before
    setting anything up, instead of falling back to the real Alpine mirror unasked."""
    workdirs_before = _workdirs()
    for module in ("bench", "bench.profile"):
        p = subprocess.run([sys.executable, "-m", module, "--mirror-dir", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        assert f"no Alpine mirror in {tmp_path}" in p.stderr and "--mirror URL" in p.stderr, p.stderr
        assert "dl-cdn" not in p.stdout
    assert _workdirs() == workdirs_before


def test_a_tools_processes_are_found_whatever_their_names_and_parents(tmp_path):
    state = str(tmp_path / "state")
    ours = dict(os.environ, BENCH_TEST_STATE=state)
    clean = {"PATH": os.environ["PATH"]}
    started: list[int] = []
    try:
        orphan = _spawn(["sleep", "60"], ours, started)  # its parent exited: adopted elsewhere
        forker = _spawn(["sh", "-c", "env -i sleep 60 & wait"], ours, started)
        fork_with_clean_env = _child(forker, started)
        named = _spawn(["sh", "-c", f"sleep 60 & wait # {state}/"], clean, started)
        named_child = _child(named, started)
        other = _spawn(["sleep", "60"], dict(ours, BENCH_TEST_STATE=state + "-other"), started)
        unshare = _spawn(["unshare", "--pid", "--fork", "sleep", "60"], ours, started)
        in_a_container = _child(unshare, started)  # in a PID namespace of its own

        found = procs.tool_pids("BENCH_TEST_STATE", state, (f"{state}/",))

        assert {orphan, forker, fork_with_clean_env, named, named_child, unshare} <= set(found)
        assert other not in found and in_a_container not in found
        assert os.getpid() not in found
    finally:
        procs.kill(started)


# -- the namespace folder: `ip netns add` makes it and may bind-mount it on itself -------------


def _bind(source: Path, target: Path) -> None:
    if LIBC.mount(str(source).encode(), str(target).encode(), None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), f"bind {source} on {target}")


@pytest.fixture
def scratch(tmp_path):
    """A folder for mounts that are all undone at the end, even when the test fails."""
    yield tmp_path
    for point in sorted((p for p in mount_points() if p.startswith(f"{tmp_path}/")), key=len, reverse=True):
        LIBC.umount2(point.encode(), MNT_DETACH)


@pytest.mark.parametrize("before", ["absent", "a plain folder", "mounted", "absent, then in use"])
def test_the_namespace_folder_is_undone_only_as_far_as_the_bench_made_it(scratch, before):
    netns = scratch / "netns"
    existed = not before.startswith("absent")
    if existed:
        netns.mkdir()
    if before == "mounted":
        _bind(netns, netns)
    state = NetnsDirState.of(str(netns))
    assert (state.existed, state.mounted) == (existed, before == "mounted")

    # What `ip netns add` does on a /run that is not a shared mount: make the folder if needed,
    # and bind-mount it on itself if it is not a mount point yet (ext4 here, as on the VM).
    netns.mkdir(exist_ok=True)
    if str(netns) not in mount_points():
        _bind(netns, netns)
    assert os.path.ismount(netns) is False  # why the bench reads mountinfo instead
    if before == "absent, then in use":  # someone else's namespace, held by a bind mount
        (netns / "theirs").touch()
        _bind(Path("/proc/self/ns/net"), netns / "theirs")

    note = release_netns_dir(str(netns), state)

    mounted = str(netns) in mount_points()
    if before == "absent":
        assert note is None and not netns.exists() and not mounted
    elif before == "a plain folder":
        assert note is None and netns.is_dir() and not mounted
    elif before == "mounted":
        assert note is None and mounted  # not the bench's mount: it stays
    else:
        assert "other namespaces live in it" in note
        assert mounted and str(netns / "theirs") in mount_points()
