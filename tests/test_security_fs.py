"""Regression tests for issue 8's filesystem escapes: each attacker is a real program.

    store modes      a setuid-root file a container leaves in its layer is out of reach of host
                     users (Docker CVE-2021-41091), whatever the umask, also in an old store
    nested volumes   a container swapping a shared folder with a symlink cannot make another
                     container's start create or mount anything on the host (runc CVE-2021-30465)
    /etc/hosts       --network host gives a copy of the host's file, not the file itself
    cap_last_cap     an image with its own /proc cannot keep the bounding set full
    --read-only      /etc/hosts, /etc/hostname and /etc/resolv.conf are read-only too
    bad input        refused at create, with nothing left behind
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from conftest import remove_all_containers
from probes import build

NONE = ("--network", "none")
NOBODY = 65534
# Docker's default capabilities, by number: the bounding set of an unprivileged container.
DOCKER_DEFAULT_CAPS = (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31)  # CHOWN ... SETFCAP


def pyctr(*args, env: dict, umask: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """pyctr as a caller with this umask would run it."""
    return subprocess.run([sys.executable, "-m", "pyctr.runtime", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=None if umask is None else lambda: os.umask(umask))


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args[3:]}: {result.returncode}\n{result.stderr}"
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def world_readable_dir():
    """A folder every host user can traverse (pytest's own tmp is 0700, which would hide the
    store by accident), removed with its containers at the end."""
    base = Path(tempfile.mkdtemp(prefix="pyctr-store-test-"))
    base.chmod(0o755)
    envs: list[dict] = []
    yield base, envs
    for env in envs:
        remove_all_containers(env)
    shutil.rmtree(base, ignore_errors=True)


# --- escape 4: the store is private -------------------------------------------------------------
def _store_dirs(env: dict) -> list[Path]:
    root, state = Path(env["PYCTR_ROOT"]), Path(env["PYCTR_STATE"])
    return [root, root / "containers", root / "images", root / "networks", root / "names",
            state, state / "containers", state / "locks"]


def test_a_setuid_file_in_a_layer_is_out_of_reach_of_host_users(pyctr_env, pyctr_root, world_readable_dir):
    base, envs = world_readable_dir
    # A store as pyctr 0.1 left it when run under umask 000: every folder 0777.
    root = base / "root"
    root.mkdir()
    root.chmod(0o777)
    (root / "images").symlink_to(pyctr_root / "images")
    env = dict(pyctr_env, PYCTR_ROOT=str(root), PYCTR_STATE=str(base / "state"))
    envs.append(env)
    probe_dir = base / "probe"
    probe_dir.mkdir()
    shutil.copy(build("whoami"), probe_dir / "whoami")

    # The container plants a setuid-root program in its own layer, as any image could.
    cid = ok(pyctr("create", *NONE, "-v", f"{probe_dir}:/probe:ro", "alpine", "sh", "-c",
                   "cp /probe/whoami /suid && chmod 4755 /suid && stat -c %a /", env=env, umask=0)).stdout.strip()
    started = ok(pyctr("start", "-a", cid, env=env, umask=0))
    planted = root / "containers" / cid / "upper" / "suid"
    assert planted.stat().st_mode & stat.S_ISUID

    # An unprivileged host user tries to run it; through a shell, as setpriv itself still holds
    # root's capabilities when it execs its command.
    attempt = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                              "/bin/sh", "-c", 'exec "$0"', str(planted)], capture_output=True, text=True, timeout=30)
    assert "euid=0" not in attempt.stdout, f"a host user became root through {planted}"
    assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, attempt

    assert started.stdout.strip() == "755", "the container's / must keep the image's mode, not the umask's"
    for path in _store_dirs(env) + [root / "containers" / cid]:
        assert mode(path) == 0o700, f"{path} is {oct(mode(path))}"
    # The upper layer is the container's "/": it has the image root's mode, and is private
    # because its container's folder is.
    assert mode(root / "containers" / cid / "upper") == 0o755


def test_a_new_store_is_private_whatever_the_umask(world_readable_dir):
    base, _ = world_readable_dir
    env = dict(os.environ, PYCTR_ROOT=str(base / "new-root"), PYCTR_STATE=str(base / "new-state"))
    tarball = base / "tiny.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(build("whoami"), arcname="./bin/whoami")
    ok(pyctr("import", tarball, "tiny", env=env, umask=0))
    images = Path(env["PYCTR_ROOT"]) / "images"
    for path in _store_dirs(env) + [images / "tiny", *(images / "tiny").iterdir()]:
        assert mode(path) == 0o700, f"{path} is {oct(mode(path))}"


# --- escape 5: nested volumes race ----------------------------------------------------------------
def _mounts_mentioning(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


def test_a_symlink_swap_in_a_shared_volume_does_not_reach_the_host(run_pyctr, tmp_path):
    outer, inner, host_target, probe_dir = (tmp_path / n for n in ("outer", "inner", "host-target", "probe"))
    for folder in (outer, inner, host_target, probe_dir, outer / "b"):
        folder.mkdir()
    (outer / "b.link").symlink_to(host_target)
    shutil.copy(build("swap"), probe_dir / "swap")
    mounts_before = _mounts_mentioning(tmp_path)

    # The attacker shares the outer volume, and swaps b (a folder) with b.link (a symlink to the host).
    ok(run_pyctr("run", "-d", *NONE, "--name", "attacker", "-v", f"{outer}:/o", "-v", f"{probe_dir}:/probe:ro",
                 "alpine", "/probe/swap", "/o/b", "/o/b.link"))
    # Four nested volumes: four chances per start for the race, so that 25 starts are enough (the old code lost within 10).
    nested = [arg for n in range(4) for arg in ("-v", f"{inner}:/a/b/c{n}")]
    victim = ok(run_pyctr("create", *NONE, "-v", f"{outer}:/a", *nested, "alpine", "true")).stdout.strip()
    started = 0
    for _ in range(25):
        started += run_pyctr("start", "-a", victim).returncode == 0
        if any(host_target.iterdir()):
            break
    assert run_pyctr("inspect", "-f", "{{.State.Running}}", "attacker").stdout.strip() == "true", \
        "the attacker stopped swapping: " + run_pyctr("logs", "attacker").stderr

    assert list(host_target.iterdir()) == [], "a container start created files on the host"
    assert _mounts_mentioning(tmp_path) == mounts_before
    # Some starts may be refused, when a folder turned into a symlink under pyctr: safe, and said.
    assert started, "the victim never started: the race made every start fail"


# --- escape 6: --network host gets a copy of /etc/hosts --------------------------------------------
def test_host_network_gets_a_copy_of_the_hosts_file(pyctr_env, tmp_path):
    # Even the old code's write must stay harmless: pyctr runs in a mount namespace of its own,
    # where the host's /etc/hosts is a temporary file.
    stand_in = tmp_path / "hosts"
    stand_in.write_text("127.0.0.1\tlocalhost\n10.99.0.1\tstand-in-host\n")
    digest = hashlib.sha256(stand_in.read_bytes()).hexdigest()
    attack = "cat /etc/hosts; echo 6.6.6.6 deb.debian.org >> /etc/hosts; grep -c 6.6.6.6 /etc/hosts"
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$0" /etc/hosts && exec "$@"', str(stand_in),
         sys.executable, "-m", "pyctr.runtime", "run", "--rm", "--network", "host", "alpine", "sh", "-c", attack],
        env=pyctr_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stand-in-host" in result.stdout, "the container should see a copy of the host's file"
    assert result.stdout.split()[-1] == "1", "the container's own copy is writable, as in Docker"
    assert hashlib.sha256(stand_in.read_bytes()).hexdigest() == digest, "the host's /etc/hosts was changed"


# --- weaker than Docker: cap_last_cap comes from the host ------------------------------------------
def _image_with_fake_proc(alpine_rootfs: Path, tarball: Path) -> None:
    """Alpine, with /proc a symlink to /srv, where sys/kernel/cap_last_cap says 0."""
    fake = tarball.parent / "fake"
    (fake / "sys" / "kernel").mkdir(parents=True)
    (fake / "sys" / "kernel" / "cap_last_cap").write_text("0\n")
    with tarfile.open(tarball, "w") as tar:
        for entry in sorted(os.listdir(alpine_rootfs)):
            if entry not in ("proc", "srv"):
                tar.add(alpine_rootfs / entry, arcname=f"./{entry}")
        link = tarfile.TarInfo("./proc")
        link.type, link.linkname = tarfile.SYMTYPE, "/srv"
        tar.addfile(link)
        tar.add(fake, arcname="./srv")


def test_an_image_cannot_fake_cap_last_cap(pyctr_root, fresh_env, tmp_path):
    tarball = tmp_path / "fake-proc.tar"
    _image_with_fake_proc(next((pyctr_root / "images" / "alpine").glob("*/rootfs")), tarball)
    try:
        ok(pyctr("import", tarball, "fakeproc:1", env=fresh_env))
        started = pyctr("run", "-d", *NONE, "fakeproc:1", "sleep", "30", env=fresh_env)
        if started.returncode != 0:  # refused: that is safe too, if it says why in one line
            assert started.returncode == 125, started.stderr
            assert started.stderr.count("\n") == 1 and "/proc" in started.stderr, started.stderr
            return
        pid = json.loads(ok(pyctr("inspect", started.stdout.strip(), env=fresh_env)).stdout)[0]["State"]["Pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        bounding = int(next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1], 16)
        assert bounding == sum(1 << n for n in DOCKER_DEFAULT_CAPS), f"CapBnd {bounding:#x}"
    finally:
        remove_all_containers(fresh_env)


# --- weaker than Docker: --read-only covers the files pyctr writes --------------------------------
def test_read_only_covers_the_etc_files(run_pyctr):
    script = ("for f in hosts hostname resolv.conf; do "
              "echo 6.6.6.6 x >> /etc/$f && echo wrote $f; cat /etc/$f > /dev/null || echo unreadable $f; done; true")
    result = ok(run_pyctr("run", "--rm", *NONE, "--read-only", "alpine", "sh", "-c", script))
    assert "wrote" not in result.stdout and "unreadable" not in result.stdout, result.stdout
    assert result.stderr.count("Read-only file system") == 3, result.stderr


def test_the_hosts_device_nodes_are_out_of_reach_of_the_containers_root(run_pyctr):
    """/dev/null, /dev/zero, … in a container are the host's own nodes, bound (the container's
    /dev is nodev), and so is /dev/null bound over a masked /proc file. Bound read-only, a
    container's root (CAP_CHOWN, CAP_FOWNER) cannot chmod or chown them for the whole host, while
    their I/O still works. The script first checks that they are read-only, and stops if one is
    not; then it tries only what changes nothing (the mode and owner they have already)."""
    host_null = os.stat("/dev/null")
    script = ("grep -E ' /dev/(null|zero|full|random|urandom|tty) | /proc/(keys|timer_list) ' /proc/self/mountinfo"
              " | awk '{print $5, $6}' > /tmp/binds; cat /tmp/binds; "
              "if awk '{split($2, o, \",\"); if (o[1] != \"ro\") bad = 1} END {exit !bad}' /tmp/binds; then exit 9; fi; "
              "echo ---; echo x > /dev/null && head -c 3 /dev/urandom | wc -c; "
              "chmod 666 /dev/null; chmod 666 /proc/keys; chown 0:0 /dev/zero; true")
    result = run_pyctr("run", "--rm", *NONE, "alpine", "sh", "-c", script)
    assert result.returncode == 0, result  # 9: a bind is writable, and nothing was tried
    binds, _, io = result.stdout.partition("---\n")
    assert {line.split()[0] for line in binds.splitlines()} >= {"/dev/null", "/dev/zero", "/dev/urandom", "/proc/keys"}
    assert io.split() == ["3"], result.stdout  # the devices work
    assert result.stderr.count("Read-only file system") == 3, result.stderr
    now = os.stat("/dev/null")
    assert (now.st_mode, now.st_uid, now.st_gid) == (host_null.st_mode, host_null.st_uid, host_null.st_gid)


# --- weaker than Docker: bad input fails at create -----------------------------------------------
BAD_INPUT = {
    "volume on /": ["-v", "{dir}:/"],
    "100-character hostname": ["-h", "h" * 100],
    "hostname with a space": ["--hostname=two words"],
    "hostname starting with -": ["--hostname=-dash"],
    "relative bind source": ["-v", "relative:/x"],
    "missing bind source": ["-v", "{dir}/missing:/x"],
    "relative bind destination": ["-v", "{dir}:x"],
    "same destination twice": ["-v", "{dir}:/x", "-v", "{dir}:/x/"],
    "relative working directory": ["-w", "relative"],
}


@pytest.mark.parametrize("flags", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_at_create(run_pyctr, pyctr_env, tmp_path, flags):
    flags = [f.format(dir=tmp_path) for f in flags]
    result = run_pyctr("create", *NONE, "--name", "bad", *flags, "alpine", "true")
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    root, state = Path(pyctr_env["PYCTR_ROOT"]), Path(pyctr_env["PYCTR_STATE"])
    left = [p for d in (root / "containers", root / "names", state / "containers") if d.exists()
            for p in d.iterdir()]
    assert left == [], f"a refused create left {left}"


# --- what /proc and /sys tell about the host (Docker CVE-2015-3630 class) -------------------
def test_masked_and_read_only_paths_tell_the_container_nothing(run_pyctr):
    # Each path exists on the host here; in the container it reads empty, and /proc/sys is
    # read-only. Checked on the host first, so the test cannot pass by the paths being absent.
    masked_files = [p for p in ("/proc/keys", "/proc/timer_list") if Path(p).exists()]
    masked_dirs = [p for p in ("/proc/acpi", "/sys/firmware") if Path(p).is_dir() and any(Path(p).iterdir())]
    assert masked_files and masked_dirs, "this host has none of the masked paths to test with"
    script = "; ".join([*(f"echo {p}=$(wc -c < {p})" for p in masked_files),
                        *(f"echo {p}=$(ls -A {p} | wc -l)" for p in masked_dirs),
                        "echo 1 > /proc/sys/kernel/panic_on_oops 2>/dev/null; echo sysctl_write=$?"])
    result = run_pyctr("run", "--rm", "--network", "none", "alpine", "sh", "-c", script)
    seen = dict(line.split("=", 1) for line in result.stdout.split())
    for path in (*masked_files, *masked_dirs):
        assert seen[path] == "0", result.stdout
    assert seen["sysctl_write"] != "0", result.stdout
