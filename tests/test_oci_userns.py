"""Containers in a new user namespace, for real, through pyctr-oci: a bundle's rootfs that is a
chowned copy of Alpine, and the run.pyctr.rootfs.overlay annotation over Alpine's rootfs
(idmapped when the filesystem allows, else a chowned copy).

Everything lives under pytest's tmp folders, which are 0700 and host root's: the container's root
(host uid 100000) cannot walk them, so these tests also show that the runtime reaches the bundle,
the layers, the bind sources and its own state folder for it. Each container is removed with
`delete --force` even when the test fails, and no mount may stay behind on the host.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import USERNS_POSSIBLE, needs_userns

from pyctr.runtime import spec as specs, userns

PYCTR_OCI = str(Path(sys.executable).with_name("pyctr-oci"))
HOST_ROOT = 100000
SIZE = 65536
MAPS = {"uidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": SIZE}],
        "gidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": SIZE}]}


@pytest.fixture(scope="module")
def alpine_rootfs(pyctr_root) -> Path:
    found = sorted((pyctr_root / "images" / "alpine").glob("*/rootfs"))
    assert found, "pyctr pull alpine made no rootfs"
    return found[0]


@pytest.fixture(scope="module")
def chowned_alpine(alpine_rootfs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chowned")
    copy = userns.chowned_copy(str(alpine_rootfs), str(folder / "rootfs"), HOST_ROOT, HOST_ROOT)
    yield copy
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def oci(tmp_path):
    """oci(*args, env=None, timeout=60) -> CompletedProcess; containers made are deleted at the end."""
    root = tmp_path / "state"
    made = []

    def run(*args, env=None, timeout=60, **kwargs):
        if args and args[0] in ("create", "run"):
            made.append(args[-1])
        if "stdout" not in kwargs:
            kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return subprocess.run([PYCTR_OCI, "--root", str(root), *map(str, args)], text=True,
                              timeout=timeout, env=env, **kwargs)

    yield run
    for container_id in made:
        subprocess.run([PYCTR_OCI, "--root", str(root), "delete", "--force", container_id], capture_output=True)


def _host_mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def write_bundle(bundle: Path, args: list[str], rootfs: Path | None = None, **changes) -> dict:
    """A bundle whose config is `pyctr-oci spec`'s with a user namespace, no terminal, `args`."""
    bundle.mkdir(parents=True, exist_ok=True)
    config = specs.default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"].update(MAPS)
    if rootfs is not None:
        config["root"]["path"] = str(rootfs)
    for key, value in changes.items():
        config[key] = value
    (bundle / "config.json").write_text(json.dumps(config))
    return config


@needs_userns
def test_a_chowned_rootfs_runs_as_root_inside_mapped_outside(chowned_alpine, oci, tmp_path):
    shared = tmp_path / "private" / "shared"  # under a 0700 folder: only host root may walk to it
    shared.mkdir(parents=True)
    os.chmod(tmp_path / "private", 0o700)
    os.chown(shared, HOST_ROOT, HOST_ROOT)
    script = ("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; hostname; "
              "echo written > /shared/file; ls /proc/1/status; ls /sys/kernel >/dev/null && echo sys-ok; "
              "echo x > /dev/null && echo dev-ok; grep CapEff /proc/self/status; "
              "mkdir /tmp/denied 2>&1 || echo mkdir-refused")
    config = write_bundle(tmp_path / "bundle", ["sh", "-c", script], chowned_alpine)
    config["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared),
                             "options": ["rbind", "rw"]})
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(config))

    done = oci("run", "-b", tmp_path / "bundle", "userns-plain")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", str(HOST_ROOT), str(SIZE)] and lines[3].split() == lines[2].split()
    assert lines[4] == "pyctr"
    assert "/proc/1/status" in lines and "sys-ok" in lines and "dev-ok" in lines
    # The spec's three capabilities: CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    assert "CapEff:\t0000000020000420" in lines
    assert "mkdir-refused" in lines and "Operation not permitted" in done.stdout  # seccomp's ERRNO
    written = shared / "file"
    assert written.read_text() == "written\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (HOST_ROOT, HOST_ROOT)
    assert not _host_mounts_under(tmp_path)


@needs_userns
def test_exec_joins_the_user_namespace(chowned_alpine, oci, tmp_path):
    config = write_bundle(tmp_path / "bundle", ["sleep", "60"], root={"path": str(chowned_alpine), "readonly": False})
    # More bind sources than one message's worth of fds, each in a folder only host root may walk.
    many = 300
    for i in range(many):
        source = tmp_path / "sources" / f"s{i}"
        source.mkdir(parents=True)
        (source / "name").write_text(f"s{i}")
        config["mounts"].append({"destination": f"/mnt/m{i}", "type": "bind", "source": str(source),
                                 "options": ["bind", "ro"]})
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(config))
    errors = tmp_path / "create.err"
    with open(errors, "w") as stderr:  # the init holds its stdio until exec: no pipe to wait on
        created = oci("create", "-b", tmp_path / "bundle", "userns-exec", stdout=subprocess.DEVNULL, stderr=stderr)
    assert created.returncode == 0, errors.read_text()
    assert oci("start", "userns-exec").returncode == 0
    done = oci("exec", "userns-exec", "sh", "-c", "id -u; cat /proc/self/uid_map; touch /created-by-exec")
    assert done.returncode == 0, done.stderr
    names = oci("exec", "userns-exec", "sh", "-c", f"cat /mnt/m0/name /mnt/m{many - 1}/name")
    assert names.stdout == f"s0s{many - 1}", names.stderr
    assert done.stdout.split("\n")[0] == "0"
    assert done.stdout.split("\n")[1].split() == ["0", str(HOST_ROOT), str(SIZE)]
    assert (chowned_alpine / "created-by-exec").stat().st_uid == HOST_ROOT
    (chowned_alpine / "created-by-exec").unlink()
    assert oci("delete", "--force", "userns-exec").returncode == 0
    assert not _host_mounts_under(tmp_path)


@needs_userns
def test_the_overlay_annotation_under_a_user_namespace(alpine_rootfs, oci, tmp_path, tmp_path_factory):
    lower = alpine_rootfs
    if not userns.supports_idmapped_mounts(str(alpine_rootfs)):
        lower = userns.chowned_copy(str(alpine_rootfs), str(tmp_path / "lower"), HOST_ROOT, HOST_ROOT)
    upper, work = tmp_path / "layers" / "upper", tmp_path / "layers" / "work"
    upper.mkdir(parents=True)
    work.mkdir()
    os.chmod(tmp_path / "layers", 0o700)
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    overlay = f"lowerdir={lower},upperdir={upper},workdir={work}"
    script = "id -u; stat -c %u:%g /etc/passwd /; echo changed > /etc/motd; touch /new; ls /proc/1/status"
    write_bundle(bundle, ["sh", "-c", script], annotations={specs.OVERLAY_ANNOTATION: overlay},
                 root={"path": "rootfs", "readonly": False})

    env = {**os.environ, "PYCTR_EXPLAIN": "1"}
    done = oci("run", "-b", bundle, "userns-overlay", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["0", "0:0", "0:0", "/proc/1/status"]
    for made in (upper / "new", upper / "etc" / "motd"):
        assert made.stat().st_uid == HOST_ROOT
    assert os.stat(upper).st_uid == HOST_ROOT  # the container's / is its root's
    assert b"changed" not in (lower / "etc" / "motd").read_bytes()
    assert os.stat(alpine_rootfs / "etc" / "passwd").st_uid == 0  # the image is untouched
    # The helper's steps, as commands a person could type.
    assert "nsenter --mount=/proc/" in done.stderr and "mount -t overlay -o nodev,lowerdir=" in done.stderr
    if lower == alpine_rootfs:
        assert "X-mount.idmap=/proc/" in done.stderr
    assert not _host_mounts_under(tmp_path) and not _host_mounts_under(alpine_rootfs)
    if lower != alpine_rootfs:
        shutil.rmtree(lower)


@pytest.mark.parametrize("linux, expected", [
    ({"uidMappings": MAPS["uidMappings"], "gidMappings": MAPS["gidMappings"]},
     "mappings need a new user namespace"),
    ({"namespaces": [{"type": "user"}, {"type": "mount"}]}, "a new user namespace needs linux.uidMappings"),
    pytest.param({"namespaces": [{"type": "user"}, {"type": "mount"}],
                  "uidMappings": [{"containerID": 1, "hostID": HOST_ROOT, "size": 10}],
                  "gidMappings": MAPS["gidMappings"]},
                 "container id 0 is not mapped", marks=needs_userns),
    ({"namespaces": [{"type": "user"}, {"type": "mount"}], "uidMappings": MAPS["uidMappings"],
      "gidMappings": [{"containerID": 0, "hostID": HOST_ROOT, "size": 10},
                      {"containerID": 5, "hostID": HOST_ROOT + 100, "size": 10}]},
     "overlap"),
])
def test_what_a_user_namespace_needs_is_refused_in_one_line(chowned_alpine, oci, tmp_path, linux, expected):
    config = specs.default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    config["root"]["path"] = str(chowned_alpine)
    config["linux"] = {"namespaces": [{"type": "mount"}], **linux}
    del config["hostname"]  # needs a uts namespace
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(config))
    done = oci("create", "-b", tmp_path / "bundle", "userns-refused")
    assert done.returncode != 0
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state" / "userns-refused").exists()  # nothing left of it


@pytest.mark.skipif(USERNS_POSSIBLE, reason="user namespaces work here: the tests above run instead")
def test_where_no_user_namespace_can_be_made_create_says_so_in_one_line(chowned_alpine, oci, tmp_path):
    write_bundle(tmp_path / "bundle", ["true"], root={"path": str(chowned_alpine), "readonly": False})
    done = oci("create", "-b", tmp_path / "bundle", "userns-impossible")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "create a user namespace" in done.stderr, done.stderr
