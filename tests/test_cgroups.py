"""The cgroup backends: layout detection from mountinfo text, the v2 backend's logic on a tree
shaped like a pure-v2 host, and the v2 backend for real, with real containers, on this machine's
cgroup2 hierarchy (PYCTR_CGROUP_VERSION=2; on a hybrid host it has no controllers, so no limits).
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

import cgroupfs
from pyctr.runtime import cgroups
from pyctr.runtime.errors import PyctrError

NONE = ("--network", "none")


@pytest.fixture
def v2_root(tmp_path) -> Path:
    """What a pure cgroup v2 host shows at /sys/fs/cgroup, with pyctr's parent already made
    (the kernel creates a directory's interface files by itself; a plain tree needs them made)."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "pyctr").mkdir()
    (tmp_path / "pyctr" / "cgroup.subtree_control").write_text("")
    return tmp_path


# --- the layout, from mountinfo ----------------------------------------------------------------
# This VM (hybrid, as Debian 10 and Ubuntu 20.04 with systemd), then Debian 12 (pure v2), then a
# legacy v1 host with co-mounted cpu,cpuacct, then `ip netns exec` (a fresh sysfs, no cgroups).
HYBRID = """\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = """\
22 26 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
27 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 22 0:24 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
"""
LEGACY_V1 = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 31 0:31 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/pids rw,nosuid shared:14 - cgroup cgroup rw,pids
"""
NETNS_EXEC = """\
26 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
301 26 0:70 / /sys rw,relatime - sysfs ip-netns rw
"""


def test_a_pure_v2_host_uses_the_v2_backend_at_the_top():
    layout = cgroups.detect(PURE_V2, forced=None)
    assert (layout.mode, layout.version, layout.unified, layout.v1_root) == ("v2", "2", Path("/sys/fs/cgroup"), None)
    assert isinstance(layout.backend("abc"), cgroups.CgroupV2)
    assert layout.backend("abc").path() == Path("/sys/fs/cgroup/pyctr/abc")


def test_hybrid_is_v1_for_limits_and_unified_for_membership():
    layout = cgroups.detect(HYBRID, forced=None)
    assert (layout.mode, layout.version) == ("hybrid", "1")
    assert (layout.v1_root, layout.unified) == (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
    assert layout.v1_controllers == {"cpu", "cpuacct", "memory", "devices", "pids"}  # name=systemd is no controller
    assert isinstance(layout.backend("abc"), cgroups.CgroupHybrid)


def test_legacy_v1_and_co_mounted_controllers():
    layout = cgroups.detect(LEGACY_V1, forced=None)
    assert (layout.mode, layout.version, layout.unified) == ("v1", "1", None)
    assert layout.v1_controllers == {"cpu", "cpuacct", "memory", "pids"} and layout.v1_root == Path("/sys/fs/cgroup")


def test_no_hierarchy_means_no_backend_and_one_line_why():
    layout = cgroups.detect(NETNS_EXEC, forced=None)
    assert (layout.mode, layout.version) == (None, "none")
    group = layout.backend("abc")
    with pytest.raises(PyctrError, match="no cgroup hierarchy is mounted"):
        group.create(cgroups.Limits())
    group.remove()  # nothing to remove, and no error: `rm` must still work there
    assert group.procs_file() == [] and group.pids() == []


def test_pyctr_cgroup_version_forces_a_backend():
    assert cgroups.detect(HYBRID, forced="2").mode == "v2"
    assert cgroups.detect(HYBRID, forced="2").unified == Path("/sys/fs/cgroup/unified")
    assert cgroups.detect(HYBRID, forced="1").mode == "v1"
    forced_v1 = cgroups.detect(PURE_V2, forced="1")
    assert forced_v1.mode is None and "PYCTR_CGROUP_VERSION=1" in forced_v1.reason
    with pytest.raises(PyctrError, match="must be 1 or 2"):
        cgroups.detect(PURE_V2, forced="3")


def test_mount_points_are_unescaped():
    text = "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    assert cgroups.detect(text, forced=None).unified == Path("/mnt/my cgroups")


# --- the v2 backend's logic on a plain tree --------------------------------------------------------
def test_v2_writes_limits_in_its_own_files(v2_root):
    group = cgroups.CgroupV2("abc", v2_root)
    group.create(cgroups.Limits(memory=32 << 20, nano_cpus=500_000_000, cpu_shares=512, pids=20))
    leaf = v2_root / "pyctr" / "abc"
    assert (v2_root / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (v2_root / "pyctr" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (leaf / "memory.max").read_text() == str(32 << 20)
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "cpu.weight").read_text() == "20"  # runc's mapping of 512 shares
    assert (leaf / "pids.max").read_text() == "20"
    group.add(4242)
    assert (leaf / "cgroup.procs").read_text() == "4242"


def test_v2_leaves_unset_limits_alone(v2_root):
    cgroups.CgroupV2("abc", v2_root).create(cgroups.Limits())
    leaf = v2_root / "pyctr" / "abc"
    assert leaf.is_dir()
    assert not any((leaf / f).exists() for f in ("memory.max", "cpu.max", "cpu.weight", "pids.max"))


def test_v2_reads_usage_and_oom_kills(v2_root):
    group = cgroups.CgroupV2("abc", v2_root)
    group.create(cgroups.Limits(memory=64 << 20))
    leaf = v2_root / "pyctr" / "abc"
    (leaf / "memory.current").write_text("1048576\n")
    (leaf / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n")
    usage = group.usage()
    assert (usage.memory, usage.memory_limit, usage.cpu_ns, usage.pids) == (1 << 20, 64 << 20, 2_500_000, 3)
    assert group.oom_killed() is False
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert group.oom_killed() is True


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (262144, 10000), (1, 1), (10**9, 10000)])
def test_shares_to_weight_matches_runc(shares, weight):
    assert cgroups.shares_to_weight(shares) == weight


def test_v1_paths_follow_each_controllers_hierarchy(tmp_path):
    for controller in ("memory", "cpu", "pids"):
        (tmp_path / controller).mkdir()
    group = cgroups.CgroupV1("abc", tmp_path)
    assert group.path("memory") == tmp_path / "memory" / "pyctr" / "abc"
    assert group._present() == ["memory", "cpu", "pids"]  # cpuacct and devices are absent here


def test_a_limit_without_its_controller_is_refused_and_nothing_is_made(v2_root, tmp_path_factory):
    (v2_root / "cgroup.controllers").write_text("cpuset io\n")  # no memory, cpu or pids delegated
    group = cgroups.CgroupV2("abc", v2_root)
    for limits, flag in ((cgroups.Limits(memory=16 << 20), "--memory"), (cgroups.Limits(pids=10), "--pids-limit"),
                         (cgroups.Limits(nano_cpus=10**9), "--cpus"), (cgroups.Limits(cpu_shares=512), "--cpu-shares")):
        with pytest.raises(PyctrError, match=flag):
            group.create(limits)
        assert not (v2_root / "pyctr" / "abc").exists()
    group.create(cgroups.Limits())  # no limit asked: the container runs
    assert (v2_root / "pyctr" / "abc").is_dir()

    v1_root = tmp_path_factory.mktemp("v1")
    for controller in ("memory", "cpuacct", "devices"):  # no pids, no cpu
        (v1_root / controller).mkdir()
    v1 = cgroups.CgroupV1("abc", v1_root)
    with pytest.raises(PyctrError, match="--pids-limit"):
        v1.create(cgroups.Limits(pids=10))
    with pytest.raises(PyctrError, match="--cpus"):
        v1.create(cgroups.Limits(nano_cpus=10**9))
    assert not any(v1_root.glob("*/pyctr"))
    (v1_root / "devices").rmdir()
    with pytest.raises(PyctrError, match="device cgroup"):
        v1.create(cgroups.Limits())
    assert not any(v1_root.glob("*/pyctr"))


# --- the v2 backend for real: this machine's cgroup2 hierarchy, real containers --------------------
def run_ok(run_pyctr, *args, **kw):
    result = run_pyctr(*args, **kw)
    assert result.returncode == 0, f"pyctr {' '.join(map(str, args))}: {result.returncode}\n{result.stderr}"
    return result


@pytest.fixture
def unified() -> Path:
    mount = cgroupfs.unified()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy is mounted here")
    return Path(mount)


@pytest.fixture
def v2_env(pyctr_env, unified) -> dict:
    return dict(pyctr_env, PYCTR_CGROUP_VERSION="2")


def start_v2(run_pyctr, v2_env, *command) -> tuple[str, int]:
    cid = run_ok(run_pyctr, "run", "-d", *NONE, "alpine", *command, env=v2_env).stdout.strip()
    pid = json.loads(run_ok(run_pyctr, "inspect", cid, env=v2_env).stdout)[0]["State"]["Pid"]
    return cid, pid


def unified_line(pid: int) -> str:
    return next(line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))


def cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def test_v2_a_container_joins_its_cgroup_and_rm_removes_it(run_pyctr, v2_env, unified):
    cid, pid = start_v2(run_pyctr, v2_env, "sleep", "60")
    leaf = unified / "pyctr" / cid
    assert unified_line(pid) == f"0::/pyctr/{cid}"
    assert str(pid) in (leaf / "cgroup.procs").read_text().split()
    assert "populated 1" in (leaf / "cgroup.events").read_text()
    assert cgroupfs.container_dirs(cid) == [str(leaf)], "v2 alone: no v1 cgroup for this container"
    # exec joins it too: inside its cgroup namespace, the container's cgroup is "/".
    assert "0::/" in run_ok(run_pyctr, "exec", cid, "cat", "/proc/self/cgroup", env=v2_env).stdout.splitlines()
    run_ok(run_pyctr, "rm", "-f", cid, env=v2_env)
    assert not leaf.exists() and cgroupfs.container_dirs(cid) == []


def test_v2_rm_f_kills_every_process_in_the_cgroup(run_pyctr, v2_env, unified):
    cid, pid = start_v2(run_pyctr, v2_env, "sleep", "60")
    # A process in the container's cgroup but outside its PID namespace: killing PID 1 spares it.
    stray = subprocess.Popen(["sleep", "60"])
    try:
        (unified / "pyctr" / cid / "cgroup.procs").write_text(str(stray.pid))
        run_ok(run_pyctr, "rm", "-f", cid, env=v2_env, timeout=30)
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert cgroupfs.container_dirs(cid) == []
    finally:
        stray.kill()
        stray.wait()


def test_v2_freeze_stops_the_container_and_thaw_resumes_it(run_pyctr, v2_env, unified):
    cid, pid = start_v2(run_pyctr, v2_env, "sh", "-c", "while :; do :; done")
    group = cgroups.for_container(cid)  # found where it was made, without PYCTR_CGROUP_VERSION
    assert isinstance(group, cgroups.CgroupV2) and group.path() == unified / "pyctr" / cid
    try:
        group.freeze()
        assert "frozen 1" in (unified / "pyctr" / cid / "cgroup.events").read_text().splitlines()
        ticks = cpu_ticks(pid)
        time.sleep(0.3)  # a busy loop would gain ~30 ticks here
        assert cpu_ticks(pid) == ticks, "a frozen container ran"
    finally:
        group.thaw()
    assert "frozen 0" in (unified / "pyctr" / cid / "cgroup.events").read_text().splitlines()
    deadline = time.monotonic() + 10
    while cpu_ticks(pid) == ticks:
        assert time.monotonic() < deadline, "the thawed container does not run"
        time.sleep(0.02)
    run_ok(run_pyctr, "rm", "-f", cid, env=v2_env)
    assert cgroupfs.container_dirs(cid) == []


def test_v2_refuses_a_limit_its_hierarchy_cannot_apply(run_pyctr, v2_env, unified):
    controllers = (unified / "cgroup.controllers").read_text().split()
    asked = [(flag, value) for flag, value, controller in
             (("-m", "16m", "memory"), ("--pids-limit", "10", "pids"), ("--cpus", "0.5", "cpu"))
             if controller not in controllers]
    if not asked:
        pytest.skip(f"{unified} has every controller")
    for flag, value in asked:
        result = run_pyctr("run", "--rm", *NONE, flag, value, "alpine", "true", env=v2_env)
        assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
        assert "cannot apply" in result.stderr and "Traceback" not in result.stderr
    assert run_ok(run_pyctr, "ps", "-aq", env=v2_env).stdout == "", "--rm left a record behind"


def test_info_shows_the_backend(run_pyctr, pyctr_env, unified):
    has_v1 = any(m.controllers for m in cgroupfs.mounts())
    expected = "hybrid" if has_v1 else "v2"
    following_the_host = {k: v for k, v in pyctr_env.items() if k != "PYCTR_CGROUP_VERSION"}
    info = run_ok(run_pyctr, "info", env=following_the_host).stdout
    assert f"Cgroup Version: {'1' if has_v1 else '2'}\n" in info and f"Cgroup Backend: {expected} (" in info
    assert "Cgroup Driver: cgroupfs\n" in info
    forced = run_ok(run_pyctr, "info", "--format", "{{.CgroupVersion}} {{.CgroupBackend}}",
                    env=dict(pyctr_env, PYCTR_CGROUP_VERSION="2")).stdout
    assert forced == f"2 v2 (cgroup2 at {unified}, forced by PYCTR_CGROUP_VERSION=2)\n"
    bad = run_pyctr("info", env=dict(pyctr_env, PYCTR_CGROUP_VERSION="3"))
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1
