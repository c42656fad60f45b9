"""The cgroup backends: layout detection from mountinfo text, the v2 backend's logic on a tree
shaped like a pure-v2 host, and the v2 backend for real, with real containers, on this machine's
cgroup2 hierarchy (PYCTR_CGROUP_VERSION=2; on a hybrid host it has no controllers, so no limits).
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import cgroupfs
from pyctr.runtime import cgroups
from pyctr.runtime.cgroups import devices_bpf
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
    assert (layout.mode, layout.version, layout.unified, layout.v1_root) == ("v2", "2", "/sys/fs/cgroup", None)
    assert isinstance(layout.backend("abc"), cgroups.CgroupV2)
    assert layout.backend("abc").path() == "/sys/fs/cgroup/pyctr/abc"


def test_hybrid_is_v1_for_limits_and_unified_for_membership():
    layout = cgroups.detect(HYBRID, forced=None)
    assert (layout.mode, layout.version) == ("hybrid", "1")
    assert (layout.v1_root, layout.unified) == ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
    assert layout.v1_controllers == {"cpu", "cpuacct", "memory", "devices", "pids"}  # name=systemd is no controller
    assert isinstance(layout.backend("abc"), cgroups.CgroupHybrid)


def test_legacy_v1_and_co_mounted_controllers():
    layout = cgroups.detect(LEGACY_V1, forced=None)
    assert (layout.mode, layout.version, layout.unified) == ("v1", "1", None)
    assert layout.v1_controllers == {"cpu", "cpuacct", "memory", "pids"} and layout.v1_root == "/sys/fs/cgroup"


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
    assert cgroups.detect(HYBRID, forced="2").unified == "/sys/fs/cgroup/unified"
    assert cgroups.detect(HYBRID, forced="1").mode == "v1"
    forced_v1 = cgroups.detect(PURE_V2, forced="1")
    assert forced_v1.mode is None and "PYCTR_CGROUP_VERSION=1" in forced_v1.reason
    with pytest.raises(PyctrError, match="must be 1 or 2"):
        cgroups.detect(PURE_V2, forced="3")


def test_mount_points_are_unescaped():
    text = "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    assert cgroups.detect(text, forced=None).unified == "/mnt/my cgroups"


# --- the v2 backend's logic on a plain tree --------------------------------------------------------
def test_v2_writes_limits_in_its_own_files(v2_root):
    group = cgroups.CgroupV2("abc", v2_root)
    # (a plain folder cannot hold an eBPF device program: the device list is tested on real cgroups)
    group.create(cgroups.Limits(memory=32 << 20, nano_cpus=500_000_000, cpu_shares=512, pids=20,
                                restrict_devices=False))
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
    cgroups.CgroupV2("abc", v2_root).create(cgroups.Limits(restrict_devices=False))
    leaf = v2_root / "pyctr" / "abc"
    assert leaf.is_dir()
    assert not any((leaf / f).exists() for f in ("memory.max", "cpu.max", "cpu.weight", "pids.max"))


def test_v2_reads_usage_and_oom_kills(v2_root):
    group = cgroups.CgroupV2("abc", v2_root)
    group.create(cgroups.Limits(memory=64 << 20, restrict_devices=False))
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
    assert group.path("memory") == str(tmp_path / "memory" / "pyctr" / "abc")
    assert group._present() == ["memory", "cpu", "pids"]  # cpuacct and devices are absent here


def test_a_limit_without_its_controller_is_refused_and_nothing_is_made(v2_root, tmp_path_factory):
    (v2_root / "cgroup.controllers").write_text("cpuset io\n")  # no memory, cpu or pids delegated
    group = cgroups.CgroupV2("abc", v2_root)
    for limits, flag in ((cgroups.Limits(memory=16 << 20), "--memory"), (cgroups.Limits(pids=10), "--pids-limit"),
                         (cgroups.Limits(nano_cpus=10**9), "--cpus"), (cgroups.Limits(cpu_shares=512), "--cpu-shares")):
        with pytest.raises(PyctrError, match=flag):
            group.create(limits)
        assert not (v2_root / "pyctr" / "abc").exists()
    group.create(cgroups.Limits(restrict_devices=False))  # no limit asked: the container runs
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
    # Docker's device list, as an eBPF program on the container's cgroup (v2 has no devices controller).
    assert len(devices_bpf.attached(leaf)) == 1
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
    assert isinstance(group, cgroups.CgroupV2) and group.path() == str(unified / "pyctr" / cid)
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


# --- OCI linux.resources on this machine's real hierarchies ----------------------------------------
# The resource dicts are those of runtime-tools' validation/linux_cgroups_* programs (runc's
# generator defaults plus their settings), and each test reads back the files those programs
# read (runtime-tools cgroups/cgroups_v1.go), with unique paths instead of their fixed /cgrouptest.
from pyctr.runtime.cgroups import resources as oci_resources  # noqa: E402

CGROUP = Path("/sys/fs/cgroup")
DENY_ALL = {"allow": False, "access": "rwm"}  # runtime-tools' generator starts every config with it


def v1_layout() -> "cgroups.Layout":
    layout = cgroups.detect(forced=None)
    if layout.mode not in ("v1", "hybrid"):
        pytest.skip("no cgroup v1 controllers here")
    return layout


@pytest.fixture
def oci_groups():
    """made(cgroups_path, layout) -> a backend at a unique pyctrtest-* path; every process in it
    is killed and every pyctrtest-* folder is removed at the end, even when the test fails."""
    made = []
    name = f"pyctrtest-{os.getpid()}-{time.monotonic_ns() % 10**6}"

    def make(cgroups_path: str | None = "/{name}", layout=None, container_id: str = "oci"):
        path = cgroups_path.format(name=name) if isinstance(cgroups_path, str) else cgroups_path
        group = cgroups.for_spec(container_id, path, layout or v1_layout())
        made.append(group)
        return group

    make.name = name
    try:
        yield make
    finally:
        cgroupfs.kill_and_remove(made)
        for folder in sorted(CGROUP.glob(f"*/**/{name}*"), key=lambda p: -len(p.parts)) + \
                sorted(CGROUP.glob(f"*/{name}*"), key=lambda p: -len(p.parts)):
            for leftover in sorted(folder.glob("**/"), key=lambda p: -len(p.parts)):
                leftover.rmdir()
        assert not list(CGROUP.glob(f"*/{name}*")) and not list(CGROUP.glob(f"*/*/{name}*"))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("limit, swappiness", [(50593792, 10), (151781376, 100)])
def test_oci_memory_as_runtime_tools_reads_it(oci_groups, capsys, monkeypatch, limit, swappiness):
    monkeypatch.setattr(oci_resources, "_kernel_warned", False)
    memory = {"limit": limit, "reservation": limit, "swap": limit, "kernel": limit, "kernelTCP": limit,
              "swappiness": swappiness, "disableOOMKiller": True}
    group = oci_groups()
    group.create({"memory": memory, "devices": [DENY_ALL]})
    leaf = CGROUP / "memory" / oci_groups.name
    assert group.path("memory") == str(leaf)
    for file in ("limit_in_bytes", "soft_limit_in_bytes", "memsw.limit_in_bytes", "kmem.tcp.limit_in_bytes"):
        assert (leaf / f"memory.{file}").read_text().strip() == str(limit), file
    assert (leaf / "memory.swappiness").read_text().strip() == str(swappiness)
    assert "oom_kill_disable 1" in lines(leaf / "memory.oom_control")
    # memory.kernel: deprecated and no longer enforced since 5.16; ignored, with one warning.
    group.update({"memory": {"kernel": limit}})
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "linux.resources.memory.kernel: ignored" in warnings[0], warnings


@pytest.mark.parametrize("quota, period, cpus", [(50000, 100000, "0"), (200000, 500000, "0-1")])
def test_oci_cpu_as_runtime_tools_reads_it(oci_groups, quota, period, cpus):
    group = oci_groups()
    group.create({"cpu": {"shares": 2048, "quota": quota, "period": period, "cpus": cpus, "mems": "0"},
                  "devices": [DENY_ALL]})
    cpu, cpuset = CGROUP / "cpu" / oci_groups.name, CGROUP / "cpuset" / oci_groups.name
    assert [(cpu / f).read_text().strip() for f in ("cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us")] == \
        ["2048", str(quota), str(period)]
    assert ((cpuset / "cpuset.cpus").read_text().strip(), (cpuset / "cpuset.mems").read_text().strip()) == (cpus, "0")


def test_oci_empty_cpu_keeps_the_defaults_and_joins_every_controller(oci_groups):
    group = oci_groups()
    group.create({"cpu": {}, "devices": [DENY_ALL]})
    cpu, cpuset = CGROUP / "cpu" / oci_groups.name, CGROUP / "cpuset" / oci_groups.name
    for file in ("cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"):
        assert (cpu / file).read_text() == (CGROUP / "cpu" / file).read_text(), file
    # a new cpuset gets its parent's CPUs and nodes, so that a process can join it
    assert (cpuset / "cpuset.cpus").read_text() == (CGROUP / "cpuset" / "cpuset.cpus").read_text()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        group.add(sleeper.pid)
        joined = Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        for controller in ("memory", "cpu", "cpuset", "pids", "devices", "freezer", "blkio"):
            assert f":{controller}:/{oci_groups.name}\n" in joined, controller
        assert f"0::/{oci_groups.name}\n" in joined  # hybrid: the unified hierarchy too
    finally:
        sleeper.kill()
        sleeper.wait()


def test_oci_devices_are_written_in_the_listed_order(oci_groups):
    rules = [DENY_ALL, {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
             {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"},
             {"allow": True, "type": "b", "major": 10, "minor": 200, "access": "r"}]
    group = oci_groups()
    group.create({"devices": rules})
    # runtime-tools compares the i-th allow rule with devices.list line i-1 (after the deny-all)
    assert lines(CGROUP / "devices" / oci_groups.name / "devices.list") == ["c 10:229 rwm", "b 8:20 rw", "b 10:200 r"]
    group.update({"devices": [{"allow": False, "type": "c", "major": 10, "minor": 229, "access": "w"}]})
    assert lines(CGROUP / "devices" / oci_groups.name / "devices.list")[0] == "c 10:229 rm"


def test_oci_pids_and_blkio_throttling(oci_groups):
    major, minor = Path("/sys/block/vda/dev").read_text().split(":") if Path("/sys/block/vda").exists() else (None, None)
    if major is None:
        pytest.skip("no /dev/vda here")
    device = {"major": int(major), "minor": int(minor)}
    blkio = {key: [dict(device, rate=102400)] for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                                                          "throttleReadIOPSDevice", "throttleWriteIOPSDevice")}
    group = oci_groups()
    group.create({"pids": {"limit": 1000}, "blockIO": blkio, "devices": [DENY_ALL]})
    assert (CGROUP / "pids" / oci_groups.name / "pids.max").read_text().strip() == "1000"
    for file in ("read_bps_device", "write_bps_device", "read_iops_device", "write_iops_device"):
        assert lines(CGROUP / "blkio" / oci_groups.name / f"blkio.throttle.{file}") == [f"{major}:{int(minor)} 102400"]


@pytest.mark.parametrize("resources, message", [
    ({"blockIO": {"weight": 500}}, "linux.resources.blockIO.weight: this kernel has no blkio.weight"),
    ({"blockIO": {"leafWeight": 300}}, "linux.resources.blockIO.leafWeight: this kernel has no blkio/blkio.leaf_weight"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 30}]},
     "linux.resources.hugepageLimits: the hugetlb controller is not mounted"),
    ({"network": {"classID": 255}}, "linux.resources.network.classID: the net_cls controller is not mounted"),
    ({"network": {"priorities": [{"name": "lo", "priority": 10}]}},
     "linux.resources.network.priorities[0]: the net_prio controller is not mounted"),
    ({"rdma": {"mlx5_1": {"hcaHandles": 3}}}, "linux.resources.rdma: the rdma controller is not mounted"),
    ({"memory": {"limit": 1 << 30, "swap": 1 << 29}}, "linux.resources.memory.swap: the kernel refused"),
    ({"devices": [{"allow": True, "type": "x"}]}, "linux.resources.devices[0].type: 'x' is none of a, b, c"),
    ({"pids": {"limit": 10}, "oom": {}}, "linux.resources.oom: not supported"),
])
def test_oci_refuses_what_this_host_cannot_honour_and_makes_nothing(oci_groups, resources, message):
    mounted = cgroups.detect(forced=None).v1_controllers
    controller = {"hugepageLimits": "hugetlb", "network": "net_cls", "rdma": "rdma"}.get(next(iter(resources)))
    if controller in mounted or ("blockIO" in resources and (CGROUP / "blkio/blkio.weight").exists()):
        pytest.skip("this host can apply it")
    group = oci_groups()
    with pytest.raises(PyctrError) as refused:
        group.create(resources)
    assert str(refused.value).startswith(message), refused.value
    assert not group.exists() and not list(CGROUP.glob(f"*/{oci_groups.name}"))


def test_oci_a_page_size_the_kernel_lacks_is_refused():
    with pytest.raises(PyctrError, match=r"^linux.resources.hugepageLimits\[0\].pageSize: '3MB' is not a huge page"):
        oci_resources.check_hugepages([{"pageSize": "3MB", "limit": 100 * 3 << 20}])
    assert "2MB" in oci_resources.hugepage_sizes() or not Path("/sys/kernel/mm/hugepages/hugepages-2048kB").exists()


def test_oci_update_changes_only_what_it_is_given(oci_groups):
    group = oci_groups()
    group.create({"memory": {"limit": 64 << 20, "swap": 64 << 20}, "cpu": {"shares": 512}, "devices": [DENY_ALL]})
    memory, cpu = CGROUP / "memory" / oci_groups.name, CGROUP / "cpu" / oci_groups.name
    group.update({"cpu": {"shares": 256}})
    assert (cpu / "cpu.shares").read_text().strip() == "256"
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    # growing memory+swap past the old limit: swap is written first, or the kernel refuses
    group.update({"memory": {"limit": 128 << 20, "swap": 256 << 20}})
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
    assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(256 << 20)
    group.update({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(32 << 20)
    with pytest.raises(PyctrError, match=r"^linux.resources.network"):
        group.update({"network": {"classID": 1}})


def test_oci_relative_paths_are_under_the_runtimes_own_cgroups_and_only_what_pyctr_made_goes(oci_groups):
    name = oci_groups.name
    base = CGROUP / "memory" / name
    base.mkdir()  # as if the runtime ran in /NAME for memory, and at the root elsewhere
    own = {"memory": f"/{name}", cgroups.UNIFIED: f"/{name}/runtime"}
    place = cgroups.Place.of("rel", f"{name}-x/container", own=own)
    group = v1_layout().backend("rel", place)
    group.create({"pids": {"limit": 50}, "devices": [DENY_ALL]})
    assert group.path("memory") == str(base / f"{name}-x" / "container")
    assert group.path("pids") == str(CGROUP / "pids" / f"{name}-x" / "container")
    assert group.path() == str(CGROUP / "unified" / name / f"{name}-x" / "container")  # the parent of its own
    # a later command finds it from what was kept, wherever it runs
    kept = json.loads(json.dumps(group.path_spec))
    again = cgroups.for_spec("rel", kept, v1_layout())
    assert isinstance(again, cgroups.CgroupHybrid) and again.path("memory") == group.path("memory")
    assert Path(again.path("pids"), "pids.max").read_text().strip() == "50"
    again.remove()
    assert base.is_dir() and not (base / f"{name}-x").exists(), "only the folders pyctr made go"
    assert not (CGROUP / "pids" / f"{name}-x").exists() and not (CGROUP / "unified" / name).exists()


def test_oci_absolute_path_under_an_existing_parent_keeps_the_parent(oci_groups):
    outer = CGROUP / "pids" / oci_groups.name
    outer.mkdir()
    group = oci_groups("/{name}/inner/leaf")
    group.create({"pids": {"limit": 7}})
    assert (outer / "inner" / "leaf" / "pids.max").read_text().strip() == "7"
    cgroups.for_spec("oci", group.path_spec, v1_layout()).remove()
    assert outer.is_dir() and not (outer / "inner").exists()
    assert not (CGROUP / "memory" / oci_groups.name).exists()  # made there from nothing: all gone


def test_oci_paths_that_leave_the_hierarchy_are_refused():
    for path in ("../escape", "/a/../../b", "/"):
        with pytest.raises(PyctrError, match="^linux.cgroupsPath: "):
            cgroups.Place.of("x", path)
    assert cgroups.Place.of("x", None).common == cgroups.Place.of("x", "").common == "pyctr/x"
    assert cgroups.for_container("abc").path() == cgroups.for_spec("abc", None).path()


def test_oci_freeze_stats_and_kill_on_forced_v1(oci_groups, monkeypatch):
    monkeypatch.setenv("PYCTR_CGROUP_VERSION", "1")
    group = oci_groups(layout=cgroups.detect())
    assert isinstance(group, cgroups.CgroupV1)
    group.create({"memory": {"limit": 64 << 20}, "pids": {"limit": 20}, "devices": [DENY_ALL]})
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        group.add(busy.pid)
        assert group.pids() == [busy.pid]
        group.freeze()
        assert group.state == "frozen"
        ticks = cpu_ticks(busy.pid)
        time.sleep(0.2)
        assert cpu_ticks(busy.pid) == ticks, "a frozen cgroup ran"
        group.thaw()
        assert group.state == "thawed"
        time.sleep(0.1)
        stats = group.stats()
        assert stats["cpu"]["usage"]["total"] > 0 and len(stats["cpu"]["usage"]["percpu"]) == os.cpu_count()
        assert stats["memory"]["usage"]["limit"] == 64 << 20  # v1 charges stay where they were made
        assert stats["pids"] == {"current": 1, "limit": 20}
        assert set(stats) == {"cpu", "memory", "pids", "blkio"} and "raw" in stats["memory"]
        group.kill(signal.SIGKILL)
        assert busy.wait(timeout=10) == -signal.SIGKILL
        assert group.oom_killed() is False
    finally:
        busy.kill()
        busy.wait()


def test_oci_forced_v2_on_this_hybrid_host(oci_groups, monkeypatch, unified):
    monkeypatch.setenv("PYCTR_CGROUP_VERSION", "2")
    layout = cgroups.detect()
    controllers = (unified / "cgroup.controllers").read_text().split()
    group = oci_groups(layout=layout)
    assert isinstance(group, cgroups.CgroupV2) and group.path() == str(unified / oci_groups.name)
    refusals = [({"network": {"classID": 255}}, "linux.resources.network: cgroup v2 has no net_cls"),
                ({"memory": {"swappiness": 10}}, "linux.resources.memory.swappiness: cgroup v2 has no"),
                ({"memory": {"disableOOMKiller": True}}, "linux.resources.memory.disableOOMKiller: cgroup v2 cannot"),
                ({"cpu": {"realtimeRuntime": 950000}}, "linux.resources.cpu.realtimeRuntime: cgroup v2 has no realtime"),
                ({"blockIO": {"leafWeight": 300}}, "linux.resources.blockIO.leafWeight: cgroup v2 has no leaf")]
    if "memory" not in controllers:
        refusals.append(({"memory": {"limit": 1 << 30}}, "linux.resources.memory.limit: the cgroup v2 hierarchy at"))
    for resources, message in refusals:
        with pytest.raises(PyctrError) as refused:
            group.create(resources)
        assert str(refused.value).startswith(message), refused.value
        assert not group.exists()
    # a list that denies nothing needs no program (test_cgroup_devices: one that does); hugetlb is this
    # host's one v2 controller
    resources = {"devices": [{"allow": True, "access": "rwm"}]}
    if "hugetlb" in controllers and "2MB" in oci_resources.hugepage_sizes():
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 2 << 30}]
    group.create(resources)
    if "hugepageLimits" in resources:
        assert Path(group.path(), "hugetlb.2MB.max").read_text().strip() == str(2 << 30)
        group.update({"unified": {"hugetlb.2MB.max": str(1 << 30)}})
        assert Path(group.path(), "hugetlb.2MB.max").read_text().strip() == str(1 << 30)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        group.add(sleeper.pid)
        group.freeze()
        assert group.state == "frozen"
        group.thaw()
        assert group.state == "thawed" and group.stats()["cpu"]["usage"]["total"] >= 0
        group.kill()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


def test_oci_v2_conversions_on_a_plain_tree(v2_root):
    (v2_root / "io.bfq.weight").write_text("")  # BFQ here: blkio's weights as they are
    group = cgroups.for_spec("abc", "/pods/abc", cgroups.Layout("v2", unified=v2_root))
    group.create({"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 32 << 20, "kernelTCP": -1},
                  "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0", "idle": 0},
                  "pids": {"limit": -1}, "blockIO": {"weight": 500, "throttleReadBpsDevice": [
                      {"major": 8, "minor": 0, "rate": 1000}]},
                  "unified": {"memory.high": "max"}})
    leaf = v2_root / "pods" / "abc"
    read = {f.name: f.read_text() for f in leaf.iterdir()}
    assert read["memory.max"] == str(64 << 20) and read["memory.swap.max"] == str(32 << 20)
    assert read["memory.low"] == str(32 << 20) and read["memory.high"] == "max"
    assert (read["cpu.weight"], read["cpu.max"], read["cpuset.cpus"], read["cpu.idle"]) == ("39", "50000 100000",
                                                                                           "0", "0")
    assert (read["pids.max"], read["io.bfq.weight"], read["io.max"]) == ("max", "500", "8:0 rbps=1000")
    assert (v2_root / "pods" / "cgroup.subtree_control").read_text().split() == \
        ["+cpu", "+cpuset", "+io", "+memory", "+pids"]
    group.update({"cpu": {"period": 200000}})
    assert (leaf / "cpu.max").read_text() == "50000 200000"  # the quota kept


def test_resources_from_docker():
    res = cgroups.resources_from_docker(memory=64 << 20, nano_cpus=1_500_000_000, cpu_shares=512, pids=100)
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["cpu"] == {"quota": 150000, "period": 100000, "shares": 512} and res["pids"] == {"limit": 100}
    assert res["devices"][0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in res["devices"]
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in res["devices"]
    assert cgroups.resources_from_docker(restrict_devices=False) == {"devices": [{"allow": True, "access": "rwm"}]}
