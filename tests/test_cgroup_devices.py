"""The OCI device list on cgroup v2: an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) on the
container's cgroup, checked for real: a probe process joins the cgroup, then opens device nodes
and makes some with mknod, and each answer (ok or the errno) is read back. On this hybrid host
the v1 devices controller exists too; the program applies all the same (the kernel asks the
cgroup2 programs first, then v1), and the same probe in a v1 devices cgroup with the same list
must answer the same: that is the semantics the program copies.
"""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cgroupfs
from pyctr.runtime import cgroups, syscalls
from pyctr.runtime.cgroups import devices_bpf
from pyctr.runtime.errors import PyctrError

DENY_ALL = {"allow": False, "access": "rwm"}
ALLOW_ALL = {"allow": True, "access": "rwm"}


def rule(allow: bool, kind: str, major, minor, access: str) -> dict:
    made = {"allow": allow, "type": kind, "access": access}
    made.update({k: v for k, v in (("major", major), ("minor", minor)) if v is not None})
    return made


def allow(kind, major, minor, access):
    return rule(True, kind, major, minor, access)


def deny(kind, major, minor, access):
    return rule(False, kind, major, minor, access)


# What the probe tries, by name; null is c 1:3, zero c 1:5, full c 1:7.
OPERATIONS = {"null w": ("open", "/dev/null", os.O_WRONLY), "zero r": ("open", "/dev/zero", os.O_RDONLY),
              "zero w": ("open", "/dev/zero", os.O_WRONLY), "zero rw": ("open", "/dev/zero", os.O_RDWR),
              "full r": ("open", "/dev/full", os.O_RDONLY),
              "mknod c 1:3": ("mknod", "c", 1, 3), "mknod c 1:5": ("mknod", "c", 1, 5),
              "mknod b 7:0": ("mknod", "b", 7, 0)}

PROBE = r"""
import errno, json, os, stat, sys
procs, folder, operations = json.loads(sys.argv[1])
for path in procs:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
answers = {}
for name, (verb, *args) in operations.items():
    try:
        if verb == "open":
            os.close(os.open(args[0], args[1]))
        else:
            node = os.path.join(folder, name.replace(" ", "-").replace(":", "-"))
            kind = stat.S_IFCHR if args[0] == "c" else stat.S_IFBLK
            os.mknod(node, kind | 0o600, os.makedev(args[1], args[2]))
            os.unlink(node)
        answers[name] = "ok"
    except OSError as error:
        answers[name] = errno.errorcode[error.errno]
print(json.dumps(answers))
"""


def probe(procs_files: list[Path], folder: Path) -> dict:
    """Each operation's answer ("ok", "EPERM", ...) from a process that joined `procs_files`."""
    done = subprocess.run([sys.executable, "-S", "-c", PROBE,
                           json.dumps([[str(p) for p in procs_files], str(folder), OPERATIONS])],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def answers(**denied) -> dict:
    """Every operation ok but those named (with _ for spaces and - for ':')."""
    expected = dict.fromkeys(OPERATIONS, "ok")
    for name, error in denied.items():
        expected[name.replace("_", " ").replace("-", ":")] = error
    return expected


def ids_of(group) -> list[int]:
    return devices_bpf.attached(group.path())


def unified_root() -> Path:
    mount = cgroupfs.unified()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy here")
    return Path(mount)


@pytest.fixture
def groups(monkeypatch):
    """made(version) -> a backend (PYCTR_CGROUP_VERSION=version) at a unique pyctrtest-dev-* path;
    every process in them is killed and every such folder removed at the end, even on failure."""
    made = []
    name = f"pyctrtest-dev-{os.getpid()}-{time.monotonic_ns() % 10**6}"

    def make(version: str = "2"):
        monkeypatch.setenv("PYCTR_CGROUP_VERSION", version)
        layout = cgroups.detect()
        if version == "1" and layout.mode != "v1":
            pytest.skip("no cgroup v1 devices controller here")
        if version == "2":
            unified_root()
        group = cgroups.for_spec(f"dev{len(made)}", f"/{name}-{len(made)}", layout)
        made.append(group)
        return group

    try:
        yield make
    finally:
        cgroupfs.kill_and_remove(made)
        left = [m.path for m in cgroupfs.mounts() for _ in Path(m.path).glob(f"{name}*")]
        assert not left, f"cgroups left behind in {left}"


@pytest.fixture(autouse=True)
def needs_bpf():
    if devices_bpf.unavailable():
        pytest.skip(devices_bpf.unavailable())


def test_a_probe_outside_any_device_cgroup_may_do_everything(tmp_path):
    assert probe([], tmp_path) == answers()  # else the tests below would prove nothing


def test_v2_enforces_a_deny_all_list_with_exceptions(groups, tmp_path):
    group = groups("2")
    assert isinstance(group, cgroups.CgroupV2)
    group.create({"devices": [DENY_ALL, allow("c", 1, 3, "rwm"), allow("c", 1, 5, "r")]})
    assert len(ids_of(group)) == 1
    assert probe(group.procs_file(), tmp_path) == answers(
        zero_w="EPERM", zero_rw="EPERM", full_r="EPERM",  # mknod c 1:3 is ok: its rule has m
        **{"mknod_c_1-5": "EPERM", "mknod_b_7-0": "EPERM"})


def test_v2_mknod_of_any_char_device_with_a_wildcard_rule(groups, tmp_path):
    group = groups("2")
    group.create({"devices": [DENY_ALL, allow("c", None, None, "m"), allow("c", 1, 3, "rwm")]})
    assert probe(group.procs_file(), tmp_path) == answers(
        zero_r="EPERM", zero_w="EPERM", zero_rw="EPERM", full_r="EPERM", **{"mknod_b_7-0": "EPERM"})


def test_v2_update_replaces_the_program_and_an_open_list_takes_it_off(groups, tmp_path):
    group = groups("2")
    group.create({"devices": [DENY_ALL, allow("c", 1, 3, "rwm")]})
    first = ids_of(group)
    group.update({"devices": [DENY_ALL, allow("c", 1, 3, "rwm"), allow("c", 1, 5, "rw")]})
    second = ids_of(group)
    assert len(second) == 1 and second != first  # the old one detached, not left beside it
    assert probe(group.procs_file(), tmp_path) == answers(
        full_r="EPERM", **{"mknod_c_1-5": "EPERM", "mknod_b_7-0": "EPERM"})
    group.update({"memory": {}})  # no device list: the program stays
    assert ids_of(group) == second
    group.update({"devices": [DENY_ALL, ALLOW_ALL]})
    assert ids_of(group) == []
    assert probe(group.procs_file(), tmp_path) == answers()


def test_removing_the_cgroup_frees_its_program(groups):
    group = groups("2")
    group.create({"devices": [DENY_ALL]})
    [prog_id] = ids_of(group)
    group.remove()
    deadline = time.monotonic() + 10  # the kernel releases a dead cgroup's programs from a worker
    while True:
        try:
            os.close(syscalls.bpf_prog_get_fd_by_id(prog_id))
        except OSError as error:
            assert error.errno == errno.ENOENT
            break
        assert time.monotonic() < deadline, f"program {prog_id} outlived its cgroup"
        time.sleep(0.05)


def test_a_rule_that_punches_a_hole_in_a_wider_one_is_refused_and_nothing_is_made(groups):
    group = groups("2")
    with pytest.raises(PyctrError, match=r"^linux.resources.devices\[2\]: c 1:3 w cannot be taken out of the "
                                         r"wider allow rule c 1:\* rw"):
        group.create({"devices": [DENY_ALL, allow("c", 1, None, "rw"), deny("c", 1, 3, "w")]})
    assert not group.exists()


# Lists whose v1 meaning is not just "the last rule wins": access bits that add up for one node,
# a default-allow list whose deny shares one bit with the request, a reset midway, no leading "a".
SAME_AS_V1 = {
    "deny all, two exceptions": [DENY_ALL, allow("c", 1, 3, "rwm"), allow("c", 1, 5, "r")],
    "access adds up": [DENY_ALL, allow("c", 1, 5, "r"), allow("c", 1, 5, "w")],
    "taken back": [DENY_ALL, allow("c", 1, 3, "rwm"), allow("c", 1, 5, "rwm"), deny("c", 1, 5, "w")],
    "wide allow": [DENY_ALL, allow("c", 1, None, "rw"), allow("b", None, None, "m")],
    "allow all but one bit": [ALLOW_ALL, deny("c", 1, 5, "w")],
    "no leading a": [deny("c", 1, 7, "rwm"), deny("b", None, None, "m")],
    "deny then allow back": [ALLOW_ALL, deny("c", 1, None, "rwm"), allow("c", 1, None, "r")],
    "reset midway": [DENY_ALL, allow("c", 1, 7, "r"), DENY_ALL, allow("c", None, 3, "w")],
    "open at the end": [DENY_ALL, allow("c", 1, 3, "rwm"), ALLOW_ALL],
}


@pytest.mark.parametrize("rules", SAME_AS_V1.values(), ids=SAME_AS_V1.keys())
def test_v2_answers_as_the_v1_devices_controller(groups, tmp_path, rules):
    v1 = groups("1")
    v1.create({"devices": rules})
    v2 = groups("2")
    v2.create({"devices": rules})
    on_v1 = probe(v1.procs_file(), tmp_path)
    assert (on_v1 == answers()) == (rules[-1] == ALLOW_ALL)  # v1 denied something: the list was applied
    assert probe(v2.procs_file(), tmp_path) == on_v1


REFUSED = r"""
import json, sys
from pyctr.runtime import cgroups, seccomp
from pyctr.runtime.errors import PyctrError
seccomp.to_program({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                    "syscalls": [{"names": ["bpf"], "action": "SCMP_ACT_ERRNO"}]}).load()
group = cgroups.for_spec("refused", sys.argv[1], cgroups.detect())
try:
    group.create({"devices": json.loads(sys.argv[2])})
except PyctrError as error:
    print(error)
print(group.exists())
"""


def test_where_bpf_is_refused_a_closing_list_is_refused_in_one_line(groups, tmp_path):
    group = groups("2")  # made by the child below, at this path; the fixture cleans up if it is left
    env = dict(os.environ, PYCTR_STATE=str(tmp_path), PYCTR_ROOT=str(tmp_path))
    path = "/" + Path(group.path()).relative_to(unified_root()).as_posix()
    closing = subprocess.run([sys.executable, "-c", REFUSED, path, json.dumps([DENY_ALL])], env=env,
                             capture_output=True, text=True, timeout=30)
    assert closing.stdout.splitlines() == [
        "linux.resources.devices: a device list that denies access needs an eBPF device program on cgroup v2, and "
        "this host does not load eBPF device programs for pyctr (bpf(BPF_PROG_LOAD): Operation not permitted); "
        "refused rather than left unenforced", "False"], closing.stderr
    open_list = subprocess.run([sys.executable, "-c", REFUSED, path, json.dumps([DENY_ALL, ALLOW_ALL])], env=env,
                               capture_output=True, text=True, timeout=30)
    assert open_list.stdout.splitlines() == ["True"], open_list.stderr  # nothing to enforce: no bpf(2) needed
