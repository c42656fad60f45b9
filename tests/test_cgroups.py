"""The cgroup backends' logic. This machine is cgroup v1 (the runtime tests use it for real);
the v2 backend, which pure-v2 hosts use, is checked here on a directory tree shaped like one."""

from pathlib import Path

import pytest

from pyctr.runtime import cgroups


@pytest.fixture
def v2_root(tmp_path) -> Path:
    """What a pure cgroup v2 host shows at /sys/fs/cgroup, with pyctr's parent already made
    (the kernel creates a directory's interface files by itself; a plain tree needs them made)."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "pyctr").mkdir()
    (tmp_path / "pyctr" / "cgroup.subtree_control").write_text("")
    return tmp_path


def test_v2_is_chosen_only_where_the_root_is_unified(v2_root, tmp_path_factory):
    assert cgroups.is_v2(v2_root)
    assert isinstance(cgroups.for_container("abc", v2_root), cgroups.CgroupV2)
    v1_root = tmp_path_factory.mktemp("v1")
    (v1_root / "memory").mkdir()
    assert isinstance(cgroups.for_container("abc", v1_root), cgroups.CgroupV1)


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
