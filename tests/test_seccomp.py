"""Seccomp (issue 8): Docker's default profile on every container process, and --security-opt.

The attackers are real programs in the container: busybox's `unshare` and `mkdir`, and a static
probe that calls keyctl(2). Each of them succeeds when the filter is missing.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probes import build

NONE = ("--network", "none")
BLOCKED = "Operation not permitted"
# The kernel refuses new user namespaces to a chrooted caller (a build chroot, a debootstrap
# test machine) whatever the filter: there the "works unconfined" half has nothing to show.
USERNS_POSSIBLE = subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode == 0


def run_ok(run_pyctr, *args):
    result = run_pyctr(*args)
    assert result.returncode == 0, f"pyctr {' '.join(map(str, args))}: {result.returncode}\n{result.stderr}"
    return result


def host_config(run_pyctr, ref) -> dict:
    return json.loads(run_ok(run_pyctr, "inspect", ref).stdout)[0]["HostConfig"]


@pytest.fixture
def probe_dir(tmp_path) -> Path:
    """A folder with the keyctl probe, to bind-mount read-only at /probe."""
    folder = tmp_path / "probe"
    folder.mkdir()
    shutil.copy(build("keyctl"), folder / "keyctl")
    return folder


def test_default_profile_blocks_new_user_namespaces(run_pyctr):
    attack = ("unshare", "-U", "true")
    denied = run_pyctr("run", "--rm", *NONE, "alpine", *attack)
    assert denied.returncode != 0 and BLOCKED in denied.stderr, denied.stdout + denied.stderr
    # The same attacker, with the filter off as Docker allows it: the call itself works here.
    if USERNS_POSSIBLE:
        allowed = run_pyctr("run", "--rm", *NONE, "--security-opt", "seccomp=unconfined", "alpine", *attack)
        assert allowed.returncode == 0, allowed.stderr


def test_keyctl_is_blocked(run_pyctr, probe_dir):
    denied = run_pyctr("run", "--rm", *NONE, "-v", f"{probe_dir}:/probe:ro", "alpine", "/probe/keyctl")
    assert f"keyctl: blocked: {BLOCKED}" in denied.stdout, denied.stdout + denied.stderr
    allowed = run_pyctr("run", "--rm", *NONE, "-v", f"{probe_dir}:/probe:ro",
                        "--security-opt", "seccomp=unconfined", "alpine", "/probe/keyctl")
    assert "keyctl: session keyring" in allowed.stdout, allowed.stdout + allowed.stderr


def test_capabilities_unlock_what_they_guard_as_in_docker(run_pyctr):
    # Docker's includes: CAP_SYS_ADMIN brings back unshare and clone's namespace flags (a mount
    # namespace: the kernel also allows it in a chroot, where a user namespace is refused).
    script = "unshare -m true && echo unshare-ok"
    with_admin = run_pyctr("run", "--rm", *NONE, "--cap-add", "SYS_ADMIN", "alpine", "sh", "-c", script)
    assert "unshare-ok" in with_admin.stdout, with_admin.stderr
    # --privileged means no filter at all, as in Docker.
    privileged = run_pyctr("run", "--rm", *NONE, "--privileged", "alpine", "sh", "-c", script)
    assert "unshare-ok" in privileged.stdout, privileged.stderr


def test_a_user_profile_denies_with_its_own_errno(run_pyctr, tmp_path, probe_dir):
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}],
    }))
    cid = run_ok(run_pyctr, "create", *NONE, "--security-opt", f"seccomp={profile}", "-v", f"{probe_dir}:/probe:ro",
                 "alpine", "sh", "-c", "mkdir /made; echo mkdir=$?; /probe/keyctl").stdout.strip()
    # As Docker, the container keeps the profile's content, not its path.
    opts = host_config(run_pyctr, cid)["SecurityOpt"]
    assert len(opts) == 1 and json.loads(opts[0].removeprefix("seccomp="))["defaultAction"] == "SCMP_ACT_ALLOW"
    profile.unlink()
    out = run_ok(run_pyctr, "start", "-a", cid)
    assert "No space left on device" in out.stderr and "mkdir=1" in out.stdout, out.stdout + out.stderr
    assert "keyctl: session keyring" in out.stdout  # this profile replaces Docker's, it does not add to it


@pytest.mark.parametrize("content, says", [
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [', "not valid JSON"),
    ('{"defaultAction": "SCMP_ACT_ALOW"}', "unknown action 'SCMP_ACT_ALOW'"),
    ('{"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}', "defaultAction: missing"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}', "args[0].index"),
    (None, "No such file or directory"),
])
def test_a_bad_profile_is_refused_at_create(run_pyctr, pyctr_env, tmp_path, content, says):
    profile = tmp_path / "profile.json"
    if content is not None:
        profile.write_text(content)
    for command in (("create",), ("run", "--rm")):
        result = run_pyctr(*command, *NONE, "--security-opt", f"seccomp={profile}", "alpine", "true")
        assert result.returncode == 125, result.stderr
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert run_ok(run_pyctr, "ps", "-aq").stdout.strip() == ""
    containers = Path(pyctr_env["PYCTR_ROOT"]) / "containers"
    assert not containers.exists() or not any(containers.iterdir())


def test_exec_processes_get_the_containers_filter(run_pyctr, probe_dir):
    filtered = run_ok(run_pyctr, "run", "-d", *NONE, "-v", f"{probe_dir}:/probe:ro",
                      "alpine", "sleep", "60").stdout.strip()
    denied = run_pyctr("exec", filtered, "unshare", "-U", "true")
    assert denied.returncode != 0 and BLOCKED in denied.stderr, denied.stdout + denied.stderr
    assert f"keyctl: blocked: {BLOCKED}" in run_pyctr("exec", filtered, "/probe/keyctl").stdout
    # exec --privileged adds capabilities, not a way out of the container's filter (as runc).
    assert run_pyctr("exec", "--privileged", filtered, "/probe/keyctl").returncode != 0
    as_nobody = run_pyctr("exec", "--privileged", "-u", "nobody", filtered, "/probe/keyctl")
    assert f"keyctl: blocked: {BLOCKED}" in as_nobody.stdout, as_nobody.stdout + as_nobody.stderr
    # An unconfined container's exec is unconfined too: the filter is the container's setting.
    unconfined = run_ok(run_pyctr, "run", "-d", *NONE, "--security-opt", "seccomp=unconfined",
                        "-v", f"{probe_dir}:/probe:ro", "alpine", "sleep", "60").stdout.strip()
    assert "keyctl: session keyring" in run_pyctr("exec", unconfined, "/probe/keyctl").stdout
    assert host_config(run_pyctr, unconfined)["SecurityOpt"] == ["seccomp=unconfined"]
    assert host_config(run_pyctr, filtered)["SecurityOpt"] == []


def test_ordinary_programs_still_work(run_pyctr):
    script = ("ls / >/dev/null && ps >/dev/null && mkdir -p /tmp/d && echo x > /tmp/d/f && "
              "cat /tmp/d/f >/dev/null && ping -c 1 -W 2 127.0.0.1 >/dev/null && "
              "(sleep 0.01 & wait) && date >/dev/null && id -u && echo all-ok")
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "alpine", "sh", "-c", script)
    assert out.stdout.split() == ["0", "all-ok"], out.stdout + out.stderr
    # Not root: no capabilities left, and the filter still loads (no_new_privs comes first).
    out = run_ok(run_pyctr, "run", "--rm", *NONE, "-u", "nobody", "alpine", "sh", "-c", "ls /etc >/dev/null && id -u")
    assert out.stdout.strip() == "65534", out.stdout + out.stderr


def test_explain_names_the_filter(run_pyctr):
    out = run_ok(run_pyctr, "--explain", "run", "--rm", *NONE, "alpine", "true").stderr.splitlines()
    seccomp = [line for line in out if line.startswith("# seccomp:")]
    assert len(seccomp) == 1 and "linux.seccomp" in seccomp[0], out  # the bundle's, Docker's profile
    assert out.index(seccomp[0]) == out.index("exec true") - 1  # the last step before exec
    out = run_ok(run_pyctr, "--explain", "run", "--rm", *NONE, "--security-opt", "seccomp=unconfined",
                 "alpine", "true").stderr
    assert "# seccomp" not in out


@pytest.mark.parametrize("args", [("--version",), ("ps",)])
def test_commands_that_start_nothing_do_not_load_seccomp(pyctr_env, args):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pyctr.runtime", *args],
                         env=pyctr_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "pyctr.runtime.cli" in imported  # the probe works
    assert not {"pyseccomp", "pyctr.runtime.seccomp", "ctypes.util"} & imported


# --- the conversion to linux.seccomp, on facts of Docker's profile --------------------------
def test_docker_profile_resolves_by_capability_and_arch():
    from pyctr.runtime import seccomp

    profile = seccomp.default_profile()

    def rules_for(name, caps, machine="x86_64"):
        model = seccomp.to_oci(profile, caps, machine=machine, kernel="6.1.0-13-amd64")
        return model, [r for r in model["syscalls"] if name in r["names"]]

    model, clone = rules_for("clone", ["CHOWN"])
    assert model["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert model["defaultAction"] == "SCMP_ACT_ERRNO" and model["defaultErrnoRet"] == 1
    assert [r["args"] for r in clone] == [[{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                                            "op": "SCMP_CMP_MASKED_EQ"}]]
    assert rules_for("unshare", ["CHOWN"])[1] == []
    assert [r.get("errnoRet") for r in rules_for("clone3", ["CHOWN"])[1]] == [38]
    # CAP_SYS_ADMIN: clone and unshare whole, no ENOSYS for clone3.
    assert [r.get("args") for r in rules_for("clone", ["SYS_ADMIN"])[1]] == [None]
    assert [r["action"] for r in rules_for("clone3", ["CAP_SYS_ADMIN"])[1]] == ["SCMP_ACT_ALLOW"]
    assert rules_for("settimeofday", ["SYS_TIME"])[1] and not rules_for("settimeofday", [])[1]
    # Arches: s390x passes clone's flags second; arch_prctl is for amd64 only.
    model, clone = rules_for("clone", [], machine="s390x")
    assert model["architectures"] == ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    assert [r["args"][0]["index"] for r in clone] == [1]
    assert rules_for("arch_prctl", [])[1] and not rules_for("arch_prctl", [], machine="aarch64")[1]
    # minKernel: ptrace from 4.8 on.
    old = seccomp.to_oci(profile, [], machine="x86_64", kernel="4.4.0")
    assert not [r for r in old["syscalls"] if "ptrace" in r["names"]]
