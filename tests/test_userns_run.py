"""User namespaces through the Docker-style front end: `pyctr run --userns=auto[:size=N]` and
`--userns-remap=default|USER[:GROUP]`, real containers through the CLI.

The subordinate id files are a test's own: PYCTR_ETC_ROOT points the front end at a folder
whose etc/ holds subuid, subgid (and passwd, group... for dockremap); the host's /etc is checked
unchanged. Containers use --network none: nothing here touches the host's network.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import needs_userns

from pyctr.runtime import userns

POOL_START, POOL_SIZE = 100000, 200000
HOST_ETC = ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")


def _host_etc() -> list:
    return [Path(f"/etc/{name}").read_bytes() if Path(f"/etc/{name}").exists() else None for name in HOST_ETC]


@pytest.fixture
def etc_root(tmp_path):
    """A stand-in for / with the host's passwd files and a `containers` pool of subordinate ids;
    the host's own files are the same bytes at the end."""
    before = _host_etc()
    root = tmp_path / "etc-root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path(f"/etc/{name}").exists():
            shutil.copy2(f"/etc/{name}", root / "etc" / name)
    (root / "etc/subuid").write_text(f"containers:{POOL_START}:{POOL_SIZE}\n")
    (root / "etc/subgid").write_text(f"containers:{POOL_START}:{POOL_SIZE}\n")
    yield root
    assert _host_etc() == before


@pytest.fixture
def env(pyctr_env, etc_root) -> dict:
    return dict(pyctr_env, PYCTR_ETC_ROOT=str(etc_root))


def _maps(text: str) -> list[list[int]]:
    return [list(map(int, line.split())) for line in text.splitlines() if line.strip()]


def _allocations(env: dict) -> dict:
    path = Path(env["PYCTR_ROOT"]) / "userns-auto.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _inspect(run_pyctr, env, name) -> dict:
    done = run_pyctr("inspect", name, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def _image_rootfs(env: dict) -> Path:
    found = sorted((Path(env["PYCTR_ROOT"]) / "images" / "alpine").glob("*/rootfs"))
    assert found, "no alpine image"
    return found[0]


@needs_userns
def test_auto_maps_root_to_a_free_host_range_and_exec_joins_it(run_pyctr, env, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    os.chmod(volume, 0o777)  # the container's root is a host user without rights on a root folder
    rootfs = _image_rootfs(env)
    started = run_pyctr("run", "-d", "--name", "u1", "--network", "none", "--userns=auto", "-v", f"{volume}:/vol",
                        "alpine", "sh", "-c", "echo changed > /etc/motd; sleep 60", env=env)
    assert started.returncode == 0, started.stderr

    uid_map = run_pyctr("exec", "u1", "cat", "/proc/self/uid_map", env=env)
    assert uid_map.returncode == 0, uid_map.stderr
    [[inside, host, size]] = _maps(uid_map.stdout)
    assert (inside, size) == (0, userns.DEFAULT_SIZE) and POOL_START <= host < POOL_START + POOL_SIZE
    info = _inspect(run_pyctr, env, "u1")
    with open(f"/proc/{info['State']['Pid']}/uid_map") as f:  # exec is in PID 1's user namespace
        assert _maps(f.read()) == [[0, host, size]]
    assert run_pyctr("exec", "u1", "id", "-u", env=env).stdout.strip() == "0"
    assert info["HostConfig"]["UsernsMode"] == "auto"
    assert info["HostConfig"]["IDMappings"] == {"UidMap": [f"0:{host}:{size}"], "GidMap": [f"0:{host}:{size}"]}

    # A file the container's root writes into a volume is the mapped host uid's on the host.
    assert run_pyctr("exec", "u1", "touch", "/vol/made-inside", env=env).returncode == 0
    made = os.stat(volume / "made-inside")
    assert (made.st_uid, made.st_gid) == (host, host)
    # The image's layer is untouched: still host root's, and the write went to the container's layer.
    assert os.stat(rootfs / "etc/motd").st_uid == 0 and os.stat(rootfs / "etc/passwd").st_uid == 0
    assert b"changed" not in (rootfs / "etc/motd").read_bytes()
    if userns.supports_idmapped_mounts(str(rootfs)):  # idmapped: no copy of the image was made
        assert [p.name for p in rootfs.parent.iterdir() if p.name.startswith("rootfs-")] == []

    second = run_pyctr("run", "-d", "--name", "u2", "--network", "none", "--userns=auto:size=1000", "alpine",
                       "sleep", "60", env=env)
    assert second.returncode == 0, second.stderr
    [[_, host2, size2]] = _maps(run_pyctr("exec", "u2", "cat", "/proc/self/uid_map", env=env).stdout)
    assert size2 == 1000 and (host2 + size2 <= host or host + size <= host2)  # disjoint ranges
    assert len(_allocations(env)) == 2

    assert run_pyctr("rm", "-f", "u1", "u2", env=env).returncode == 0
    assert _allocations(env) == {}  # rm gave both ranges back


@needs_userns
def test_rm_of_an_auto_container_frees_its_range_for_the_next(run_pyctr, env):
    made = run_pyctr("create", "--network", "none", "--userns=auto", "alpine", "true", env=env)
    assert made.returncode == 0, made.stderr
    first = _allocations(env)[made.stdout.strip()]
    assert run_pyctr("rm", made.stdout.strip(), env=env).returncode == 0
    again = run_pyctr("run", "--rm", "--network", "none", "--userns=auto", "alpine", "cat", "/proc/self/uid_map",
                      env=env)
    assert again.returncode == 0, again.stderr
    assert _maps(again.stdout) == [[0, first["uid"], first["size"]]]
    assert _allocations(env) == {}  # --rm released it too


@needs_userns
def test_userns_remap_uses_the_users_subordinate_ranges(run_pyctr, env, etc_root):
    with open(etc_root / "etc/subuid", "a") as f:
        f.write("alice:300000:65536\n")
    with open(etc_root / "etc/subgid", "a") as f:
        f.write("staff:400000:65536\n")
    done = run_pyctr("run", "--rm", "--network", "none", "--userns-remap=alice:staff", "alpine",
                     "cat", "/proc/self/uid_map", "/proc/self/gid_map", env=env)
    assert done.returncode == 0, done.stderr
    assert _maps(done.stdout) == [[0, 300000, 65536], [0, 400000, 65536]]

    created = run_pyctr("create", "--name", "r1", "--network", "none", "--userns-remap=alice:staff", "alpine",
                        env=env)
    assert created.returncode == 0, created.stderr
    hc = _inspect(run_pyctr, env, "r1")["HostConfig"]
    assert (hc["UsernsMode"], hc["UsernsRemap"]) == ("private", "alice:staff")
    assert hc["IDMappings"] == {"UidMap": ["0:300000:65536"], "GidMap": ["0:400000:65536"]}
    config = json.loads((Path(env["PYCTR_ROOT"]) / "containers" / created.stdout.strip() / "bundle/config.json")
                        .read_text())
    assert {"type": "user"} in config["linux"]["namespaces"]
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 300000, "size": 65536}]

    # default: user dockremap, made in the test's etc, with a range after those in use.
    done = run_pyctr("run", "--rm", "--network", "none", "--userns-remap=default", "alpine",
                     "cat", "/proc/self/uid_map", env=env)
    assert done.returncode == 0, done.stderr
    assert _maps(done.stdout) == [[0, 365536, 65536]]
    assert "dockremap:365536:65536" in (etc_root / "etc/subuid").read_text()
    missing = run_pyctr("run", "--rm", "--network", "none", "--userns-remap=nobody-here", "alpine", "true", env=env)
    assert missing.returncode == 125 and "nobody-here" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@needs_userns
def test_a_chowned_copy_stands_in_where_idmapped_mounts_are_off(run_pyctr, fresh_env, etc_root):
    env = dict(fresh_env, PYCTR_ETC_ROOT=str(etc_root), PYCTR_USERNS_NO_IDMAP="1")
    assert run_pyctr("pull", "alpine", env=env).returncode == 0
    done = run_pyctr("run", "--rm", "--network", "none", "--userns=auto", "alpine", "sh", "-c",
                     "cat /proc/self/uid_map; stat -c %u:%g /etc/passwd; echo x > /etc/new && stat -c %u /etc/new",
                     env=env)
    assert done.returncode == 0, done.stderr
    map_line, passwd_owner, new_owner = done.stdout.splitlines()
    host = _maps(map_line)[0][1]
    assert (passwd_owner, new_owner) == ("0:0", "0")  # root's files, as the container sees them
    rootfs = _image_rootfs(env)
    copy = rootfs.with_name(f"rootfs-{host}.{host}")
    assert os.stat(copy / "etc/passwd").st_uid == host and os.stat(copy / "etc/shadow").st_gid == host + 42
    assert os.stat(rootfs / "etc/passwd").st_uid == 0  # the image itself is untouched
    assert run_pyctr("rmi", "alpine", env=env).returncode == 0
    assert not copy.exists() and not rootfs.exists()  # rmi removed the copy with the image


@pytest.mark.parametrize("flags, message", [
    (["--userns=bogus"], "invalid --userns"),
    (["--userns=auto:size=0"], "size must be"),
    (["--userns=auto:uidmapping=0:1:2"], "the only option of auto is size=N"),
    (["--userns-remap=:staff"], "invalid --userns-remap"),
    (["--userns-remap=a b"], "invalid --userns-remap"),
    (["--userns=auto", "--userns-remap=default"], "cannot be used together"),
    (["--userns=auto", "--privileged"], "privileged mode is incompatible with user namespaces"),
    (["--userns-remap=default", "--privileged"], "privileged mode is incompatible with user namespaces"),
    (["--userns=auto", "--network", "host"], "cannot share the host's network namespace"),
])
def test_bad_userns_flags_are_one_line_and_125(run_pyctr, env, etc_root, flags, message):
    done = run_pyctr("run", "--rm", "--network", "none", *flags, "alpine", "true", env=env)
    assert done.returncode == 125
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert run_pyctr("ps", "-aq", env=env).stdout.strip() == ""
    assert _allocations(env) == {} and "dockremap" not in (etc_root / "etc/subuid").read_text()


def test_auto_without_a_containers_pool_fails_and_leaves_nothing(run_pyctr, env, etc_root):
    (etc_root / "etc/subuid").write_text("alice:300000:65536\n")
    done = run_pyctr("run", "--name", "nopool", "--network", "none", "--userns=auto", "alpine", "true", env=env)
    assert done.returncode == 125 and "containers" in done.stderr
    assert run_pyctr("ps", "-aq", env=env).stdout.strip() == ""
    assert run_pyctr("create", "--name", "nopool", "--network", "none", "alpine", env=env).returncode == 0  # name free


def test_userns_host_is_no_user_namespace(run_pyctr, env):
    done = run_pyctr("run", "--rm", "--network", "none", "--userns=host", "alpine", "cat", "/proc/self/uid_map",
                     env=env)
    assert done.returncode == 0, done.stderr
    assert _maps(done.stdout) == [[0, 0, 2**32 - 1]]
