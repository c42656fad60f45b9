"""The image store: pull, verify, unpack safely, import, list, remove (issue 2).

Most tests run the real CLI in a subprocess against the local Alpine mirror (see conftest.py);
faults (a tampered or cut-off tarball, a 500, a 404, a closed port) come from temporary mirrors
built in tmp_path, never from ../shared.
"""

import collections
import gzip
import hashlib
import http.server
import io
import json
import lzma
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

SHA_3_20_3 = "d4e6fd67dcf75e40c451560ac7265166c2b72a0f38ddc9aae756a7de3d1efa0c"
SHA_3_19_4 = "a2a87004e87720cbb0372c08b7de9b80748afdfd7fd72d2eab2ec0b074b92211"
RELEASES = "alpine/v3.20/releases/x86_64"
TARBALL_3_20_3 = f"{RELEASES}/alpine-minirootfs-3.20.3-x86_64.tar.gz"

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="the local mirror holds x86_64 releases only")


# -- helpers ----------------------------------------------------------------------------------


def images_dir(env: dict) -> Path:
    return Path(env["PYCTR_ROOT"]) / "images"


def records(env: dict) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(images_dir(env).glob("*/*/image.json"))]


def leftovers(env: dict) -> list[str]:
    """Everything but empty folders under images/: a failed pull or import must leave nothing."""
    top = images_dir(env)
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if not p.is_dir() or p.is_symlink()) \
        if top.exists() else []


def copy_mirror(source: Path, tmp_path: Path) -> Path:
    """A writable copy of the local mirror, to damage as a test needs."""
    copy = tmp_path / "mirror"
    shutil.copytree(source, copy, symlinks=True)
    for folder, dirs, files in os.walk(copy):
        for name in dirs + files:
            path = Path(folder, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
    copy.chmod(0o755)
    return copy


def faulty_handler(faults: dict[str, list[str]]):
    """A handler class that answers requests for paths ending in a key with the listed faults, one
    per request, then normally: "500", "cut" (half the body, then hang up), "slow" (in small sips)."""
    pending = {suffix: list(kinds) for suffix, kinds in faults.items()}

    class Faulty(http.server.SimpleHTTPRequestHandler):
        hits = collections.Counter()
        slow = False

        def log_message(self, format, *args):
            pass

        def do_GET(self):
            Faulty.hits[self.path] += 1
            kinds = next((k for s, k in pending.items() if self.path.endswith(s)), [])
            fault = kinds.pop(0) if kinds else None
            if fault == "500":
                self.send_error(500)
            elif fault == "cut":
                data = Path(self.translate_path(self.path)).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
            else:
                self.slow = fault == "slow"
                super().do_GET()

        def copyfile(self, source, outputfile):
            if not self.slow:
                return super().copyfile(source, outputfile)
            while chunk := source.read(256 * 1024):
                outputfile.write(chunk)
                time.sleep(0.03)

    return Faulty


def add_member(tar: tarfile.TarFile, name: str, kind=tarfile.REGTYPE, data: bytes = b"",
               linkname: str = "", mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, linkname, mode, uid, gid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tarball(path: Path, members: list[dict]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "./", tarfile.DIRTYPE, mode=0o755)
        for member in members:
            add_member(tar, **member)
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- pulling ----------------------------------------------------------------------------------


def test_pull_latest_gives_verified_alpine_3_20_3(run_pyctr, fresh_env, local_mirror_dir):
    pulled = run_pyctr("pull", "alpine", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == f"Pulled alpine:latest (3.20.3, sha256:{SHA_3_20_3})\n"
    assert "Verified sha256 and sha512" in pulled.stderr

    [record] = records(fresh_env)
    assert record["Id"] == f"sha256:{SHA_3_20_3}"
    assert record["RepoTags"] == ["alpine:latest"]
    assert (record["Name"], record["Tag"], record["Version"]) == ("alpine", "latest", "3.20.3")
    assert record["Architecture"] == "x86_64"
    assert record["Source"].endswith("/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz")
    assert record["Sha256"] == SHA_3_20_3 and len(record["Sha512"]) == 128
    assert record["ArchiveSize"] == 3490290 and record["Size"] > record["ArchiveSize"]
    assert record["Created"].endswith("Z") and record["Released"] == "2024-09-06T12:05:36Z"

    # The rootfs keeps what makes it work: modes, ownership, symlinks.
    rootfs = images_dir(fresh_env) / "alpine" / "3.20.3" / "rootfs"
    assert (rootfs / "etc/alpine-release").read_text().strip() == "3.20.3"
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o1777
    shadow = (rootfs / "etc/shadow").stat()
    assert (stat.S_IMODE(shadow.st_mode), shadow.st_uid, shadow.st_gid) == (0o640, 0, 42)
    assert os.readlink(rootfs / "bin/ls") == "/bin/busybox"
    tarball = images_dir(fresh_env) / "_cache" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == SHA_3_20_3
    with tarfile.open(tarball) as tar:
        listed = {m.name.strip("./").rstrip("/") for m in tar} - {""}
    unpacked = {str(p.relative_to(rootfs)) for p in rootfs.rglob("*")}
    assert unpacked == listed


def test_branch_and_exact_release_tags_share_one_rootfs(run_pyctr, fresh_env, local_mirror_dir):
    assert run_pyctr("pull", "alpine:3.20.3", env=fresh_env).returncode == 0
    rootfs = images_dir(fresh_env) / "alpine" / "3.20.3" / "rootfs"
    inode = rootfs.stat().st_ino
    for tag in ("latest", "3.20"):
        again = run_pyctr("pull", f"alpine:{tag}", env=fresh_env)
        assert again.returncode == 0, again.stderr
        assert f"Status: Image is up to date for alpine:{tag}" in again.stderr
        assert "Downloading" not in again.stderr

    [record] = records(fresh_env)
    assert record["RepoTags"] == ["alpine:3.20.3", "alpine:latest", "alpine:3.20"]
    assert rootfs.stat().st_ino == inode
    assert [p.name for p in (images_dir(fresh_env) / "alpine").iterdir()] == ["3.20.3"]


def test_pull_branch_3_19(run_pyctr, fresh_env, local_mirror_dir):
    pulled = run_pyctr("pull", "alpine:3.19", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == f"Pulled alpine:3.19 (3.19.4, sha256:{SHA_3_19_4})\n"
    rootfs = images_dir(fresh_env) / "alpine" / "3.19.4" / "rootfs"
    assert (rootfs / "etc/alpine-release").read_text().strip() == "3.19.4"


def test_repull_after_rmi_uses_the_download_cache(run_pyctr, fresh_env, local_mirror_dir,
                                                  tmp_path, serve_directory):
    assert run_pyctr("pull", "alpine", env=fresh_env).returncode == 0
    assert run_pyctr("rmi", "alpine", env=fresh_env).returncode == 0
    assert records(fresh_env) == []
    # A mirror that still lists the release but lost the tarball: only the cache can serve it.
    mirror = copy_mirror(local_mirror_dir, tmp_path)
    (mirror / TARBALL_3_20_3).unlink()
    url = serve_directory(mirror)
    again = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert again.returncode == 0, again.stderr
    assert "Downloading" not in again.stderr
    assert [r["Id"] for r in records(fresh_env)] == [f"sha256:{SHA_3_20_3}"]


def test_latest_moving_to_another_release_drops_the_unused_old_image(
        run_pyctr, fresh_env, local_mirror_dir, tmp_path, serve_directory):
    assert run_pyctr("pull", "alpine", env=fresh_env).returncode == 0
    mirror = copy_mirror(local_mirror_dir, tmp_path)
    pointer = mirror / "alpine" / "latest-stable"
    pointer.unlink()
    pointer.symlink_to("v3.19")  # as on the real mirror: a symlink
    url = serve_directory(mirror)
    moved = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert moved.returncode == 0, moved.stderr
    assert [(r["Version"], r["RepoTags"]) for r in records(fresh_env)] == [("3.19.4", ["alpine:latest"])]


def mirror_with_latest_stable_as(layout: str, source: Path, tmp_path: Path) -> Path:
    """A copy of the local mirror whose latest-stable points at v3.20 as a real symlink (the real
    mirror's layout) or as a small file naming the branch (a mirror copied without its links)."""
    mirror = copy_mirror(source, tmp_path)
    pointer = mirror / "alpine" / "latest-stable"
    pointer.unlink()
    if layout == "symlink":
        pointer.symlink_to("v3.20")
    else:
        pointer.write_text("v3.20\n")
    return mirror


@pytest.mark.parametrize("layout", ["symlink", "file"])
def test_latest_is_recorded_by_its_branch_url_whichever_layout_the_mirror_has(
        run_pyctr, fresh_env, local_mirror_dir, tmp_path, serve_directory, layout):
    mirror = mirror_with_latest_stable_as(layout, local_mirror_dir, tmp_path)
    handler = faulty_handler({})  # no faults: it only counts the requests
    url = serve_directory(mirror, handler)
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    [record] = records(fresh_env)
    assert record["Source"] == f"{url}/{TARBALL_3_20_3}"
    assert f"Downloading {url}/{TARBALL_3_20_3}" in pulled.stderr
    assert handler.hits[f"/{TARBALL_3_20_3}"] == 1
    assert not [p for p in handler.hits if "latest-stable" in p and not p.endswith(".yaml")
                and p != "/alpine/latest-stable"], handler.hits

    # latest-stable moves on; the recorded URL still gives the very bytes that were pulled.
    pointer = mirror / "alpine" / "latest-stable"
    pointer.unlink()
    pointer.symlink_to("v3.19") if layout == "symlink" else pointer.write_text("v3.19\n")
    with urllib.request.urlopen(record["Source"], timeout=10) as response:
        assert hashlib.sha256(response.read()).hexdigest() == record["Sha256"] == SHA_3_20_3


# -- pulls that must fail, leaving nothing -----------------------------------------------------


def test_tampered_tarball_is_refused_before_unpacking(run_pyctr, fresh_env, local_mirror_dir,
                                                      tmp_path, serve_directory):
    mirror = copy_mirror(local_mirror_dir, tmp_path)
    tarball = mirror / TARBALL_3_20_3
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tarball.write_bytes(bytes(data))
    url = serve_directory(mirror)

    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert pulled.returncode == 125
    error = pulled.stderr.splitlines()[-1]
    assert error.startswith("Error: checksum mismatch for ")
    assert f"{url}/{TARBALL_3_20_3}" in error
    assert f"expected sha256 {SHA_3_20_3}, got {hashlib.sha256(data).hexdigest()}" in error
    assert "Traceback" not in pulled.stderr
    assert leftovers(fresh_env) == []
    assert "Unpacked" not in pulled.stderr


def test_truncated_tarball_is_a_checksum_mismatch(run_pyctr, fresh_env, local_mirror_dir,
                                                  tmp_path, serve_directory):
    mirror = copy_mirror(local_mirror_dir, tmp_path)
    tarball = mirror / TARBALL_3_20_3
    tarball.write_bytes(tarball.read_bytes()[:1_000_000])
    url = serve_directory(mirror)
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert pulled.returncode == 125
    assert "checksum mismatch" in pulled.stderr
    assert "1000000 bytes received, the index says 3490290" in pulled.stderr
    assert leftovers(fresh_env) == []


def test_download_cut_off_midway_is_retried_then_fails(run_pyctr, fresh_env, local_mirror_dir,
                                                       serve_directory):
    handler = faulty_handler({".tar.gz": ["cut"] * 10})
    url = serve_directory(local_mirror_dir, handler)
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert pulled.returncode == 125
    error = pulled.stderr.splitlines()[-1]
    assert error.startswith(f"Error: download of {url}/{TARBALL_3_20_3} failed: the connection broke")
    assert "of 3490290 bytes" in error and "(3 tries)" in error
    assert handler.hits[f"/{TARBALL_3_20_3}"] == 3  # PYCTR_PULL_RETRIES=2 in the tests
    assert leftovers(fresh_env) == []


def test_download_cut_off_once_succeeds_on_retry(run_pyctr, fresh_env, local_mirror_dir, serve_directory):
    handler = faulty_handler({".tar.gz": ["cut"]})
    url = serve_directory(local_mirror_dir, handler)
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    assert handler.hits[f"/{TARBALL_3_20_3}"] == 2
    assert [r["Version"] for r in records(fresh_env)] == ["3.20.3"]


def test_server_error_then_success_is_retried(run_pyctr, fresh_env, local_mirror_dir, serve_directory):
    handler = faulty_handler({"latest-releases.yaml": ["500"], ".tar.gz": ["500"]})
    url = serve_directory(local_mirror_dir, handler)
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine:3.20", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    assert handler.hits[f"/{RELEASES}/latest-releases.yaml"] == 2
    assert handler.hits[f"/{TARBALL_3_20_3}"] == 2
    assert [r["Version"] for r in records(fresh_env)] == ["3.20.3"]


def test_server_errors_that_persist_fail_with_the_status(run_pyctr, fresh_env, local_mirror_dir,
                                                         serve_directory):
    handler = faulty_handler({".tar.gz": ["500"] * 10})
    url = serve_directory(local_mirror_dir, handler)
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine:3.20", env=fresh_env)
    assert pulled.returncode == 125
    assert pulled.stderr.splitlines()[-1] == \
        f"Error: {url}/{TARBALL_3_20_3} returned 500 Internal Server Error (3 tries)"
    assert handler.hits[f"/{TARBALL_3_20_3}"] == 3
    assert leftovers(fresh_env) == []


@pytest.mark.parametrize("tag, missing", [
    ("3.20.9", "alpine-minirootfs-3.20.9-x86_64.tar.gz.sha256"),
    ("3.99", "v3.99/releases/x86_64/latest-releases.yaml"),
])
def test_unknown_release_is_a_404(run_pyctr, fresh_env, local_mirror_dir, tag, missing):
    pulled = run_pyctr("pull", f"alpine:{tag}", env=fresh_env)
    assert pulled.returncode == 125
    error = pulled.stderr.splitlines()[-1]
    assert error.startswith("Error: unknown Alpine ")
    assert error.endswith(f"{missing} returned 404 Not Found")
    assert leftovers(fresh_env) == []


def test_unreachable_mirror_fails_fast(run_pyctr, fresh_env):
    url = f"http://127.0.0.1:{closed_port()}/alpine"
    started = time.monotonic()
    pulled = run_pyctr("pull", "--mirror", url, "alpine", env=fresh_env)
    assert pulled.returncode == 125
    assert time.monotonic() - started < 10
    assert pulled.stderr.splitlines()[-1] == \
        f"Error: cannot reach {url}/latest-stable/releases/x86_64/latest-releases.yaml: " \
        "Connection refused (3 tries)"
    assert leftovers(fresh_env) == []


def test_silent_mirror_fails_within_the_timeout(run_pyctr, fresh_env):
    # A socket that listens but never answers: the kernel accepts the connection, nobody reads.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/alpine"
        env = fresh_env | {"PYCTR_PULL_TIMEOUT": "0.5", "PYCTR_PULL_RETRIES": "1"}
        started = time.monotonic()
        pulled = run_pyctr("pull", "--mirror", url, "alpine", env=env)
        elapsed = time.monotonic() - started
    assert pulled.returncode == 125
    assert "did not answer within 0.5s (2 tries)" in pulled.stderr
    assert elapsed < 6


@pytest.mark.parametrize("ref, message", [
    ("alpine:stable", "Error: malformed tag 'stable' for alpine: use latest, edge,"),
    ("alpine:3.20.3.1", "Error: malformed tag '3.20.3.1' for alpine"),
    ("Alpine", "Error: invalid reference format: repository name must be lowercase"),
    ("alpine:", "Error: malformed tag ''"),
])
def test_bad_references_get_one_clear_line(run_pyctr, fresh_env, ref, message):
    pulled = run_pyctr("pull", ref, env=fresh_env)
    assert pulled.returncode == 125
    assert pulled.stderr.startswith(message) and pulled.stderr.count("\n") == 1


def test_concurrent_pulls_end_with_one_good_image(fresh_env, local_mirror_dir, serve_directory):
    handler = faulty_handler({".tar.gz": ["slow", "slow"]})  # both downloads would overlap
    url = serve_directory(local_mirror_dir, handler)
    command = [sys.executable, "-m", "pyctr.runtime", "pull", "--mirror", f"{url}/alpine"]
    pulls = [subprocess.Popen(command + [ref], env=fresh_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for ref in ("alpine", "alpine:3.20")]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in pulls]
    for p in pulls:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in results] == [0, 0], results
    assert handler.hits[f"/{TARBALL_3_20_3}"] == 1  # the second pull found the first one's image
    [record] = records(fresh_env)
    assert sorted(record["RepoTags"]) == ["alpine:3.20", "alpine:latest"]
    assert sorted(p.name for p in (images_dir(fresh_env) / "alpine").iterdir()) == ["3.20.3"]
    rootfs = images_dir(fresh_env) / "alpine" / "3.20.3" / "rootfs"
    assert (rootfs / "etc/alpine-release").read_text().strip() == "3.20.3"


def test_explain_prints_the_shell_commands_of_a_pull(run_pyctr, fresh_env, local_mirror_dir):
    pulled = run_pyctr("--explain", "pull", "alpine", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stderr.splitlines()

    def first(start: str, contains: str = "") -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(start) and contains in line)

    order = [
        first("curl -fsSL ", "latest-releases.yaml"),
        first("curl -fLo ", "alpine-minirootfs-3.20.3-x86_64.tar.gz"),
        first(f"echo '{SHA_3_20_3}  ", "| sha256sum -c"),
        first("echo '", "| sha512sum -c"),
        first("mv ", "_cache/alpine-minirootfs-3.20.3-x86_64.tar.gz"),
        first("mkdir -p "),
        first("tar -xzf ", "_cache/alpine-minirootfs-3.20.3-x86_64.tar.gz -C "),
        first("mv ", "alpine/3.20.3"),
    ]
    assert order == sorted(order)


def test_progress_bar_only_on_a_terminal(fresh_env, local_mirror_dir):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", "pull", "alpine"], env=fresh_env,
                          encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "alpine-minirootfs-3.20.3-x86_64.tar.gz: 100%|" in child.before


def test_ensure_image_finds_a_local_image_without_the_network(pyctr_env):
    # The runtime calls ensure_image() on every `run`: with the mirror unreachable it must still work.
    env = pyctr_env | {"PYCTR_ALPINE_MIRROR": f"http://127.0.0.1:{closed_port()}/alpine"}
    code = ("import json, sys; from pyctr.images import store;"
            "image = store.ensure_image('alpine');"
            "print(json.dumps([image, store.find_image('alpine:3.20'), sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    image, missing, modules = json.loads(done.stdout)
    assert image["Rootfs"] == str(images_dir(pyctr_env) / "alpine" / "3.20.3" / "rootfs")
    assert Path(image["Rootfs"], "bin/busybox").is_file()
    assert (image["Name"], image["Tag"], image["Version"]) == ("alpine", "latest", "3.20.3")
    assert missing is None
    assert not {"requests", "urllib3", "yaml", "tqdm", "tarfile"} & set(modules)


@pytest.mark.parametrize("args", [["--version"], ["images"]])
def test_cheap_commands_do_not_import_the_download_stack(pyctr_env, args):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pyctr.runtime", *args],
                          env=pyctr_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "pyctr.runtime.cli" in imported  # the measurement works
    assert not {"requests", "urllib3", "yaml", "tqdm"} & imported


# -- unpacking safely -------------------------------------------------------------------------


def test_unpack_keeps_owners_modes_and_links(tmp_path):
    from pyctr.images.unpack import tree_size, unpack

    sentinel = tmp_path / "host-file"
    sentinel.write_text("host")
    archive = make_tarball(tmp_path / "good.tar.gz", [
        dict(name="bin", kind=tarfile.DIRTYPE, mode=0o755),
        dict(name="bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001),
        dict(name="bin/same", kind=tarfile.LNKTYPE, linkname="bin/tool", mode=0o4755, uid=1000, gid=1001),
        dict(name="bin/abs", kind=tarfile.SYMTYPE, linkname="/bin/tool"),
        dict(name="bin/rel", kind=tarfile.SYMTYPE, linkname="../bin/tool"),
        dict(name="tmp", kind=tarfile.DIRTYPE, mode=0o1777),
        dict(name="run/fifo", kind=tarfile.FIFOTYPE, mode=0o600),
        # A later entry replaces an earlier one, and never writes through it.
        dict(name="etc/passwd", kind=tarfile.SYMTYPE, linkname=str(sentinel)),
        dict(name="etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
    ])
    rootfs = tmp_path / "rootfs"
    unpack(archive, rootfs)

    tool = (rootfs / "bin/tool").stat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o4755, 1000, 1001)
    assert (rootfs / "bin/same").stat().st_ino == tool.st_ino
    assert os.readlink(rootfs / "bin/abs") == "/bin/tool"
    assert os.readlink(rootfs / "bin/rel") == "../bin/tool"
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o1777
    assert stat.S_ISFIFO((rootfs / "run/fifo").lstat().st_mode)
    assert not (rootfs / "etc/passwd").is_symlink()
    assert sentinel.read_text() == "host"
    assert tree_size(rootfs) == len(b"#!/bin/sh\n") + len(b"root:x:0:0::/root:/bin/sh\n")


HOSTILE = {
    "dotdot": [dict(name="../escaped", data=b"x")],
    "dotdot-inside": [dict(name="etc/../../escaped", data=b"x")],
    "absolute": [dict(name="{outside}/escaped", data=b"x")],
    "symlink-escape": [dict(name="etc", kind=tarfile.SYMTYPE, linkname="../../..")],
    "write-through-symlink": [dict(name="etc", kind=tarfile.SYMTYPE, linkname="{outside}"),
                              dict(name="etc/escaped", data=b"x")],
    # From images/evil/.1.tmp-PID/rootfs, five levels up is the test's tmp_path, with the sentinel.
    "hardlink-escape": [dict(name="passwd", kind=tarfile.LNKTYPE,
                             linkname="../../../../../{sentinel_name}")],
    "hardlink-absolute": [dict(name="passwd", kind=tarfile.LNKTYPE, linkname="{sentinel}")],
    "hardlink-through-symlink": [dict(name="s", kind=tarfile.SYMTYPE, linkname="{sentinel}"),
                                 dict(name="passwd", kind=tarfile.LNKTYPE, linkname="s")],
    "device": [dict(name="dev/mem", kind=tarfile.CHRTYPE, mode=0o600)],
    "replace-top": [dict(name=".", kind=tarfile.SYMTYPE, linkname="{outside}")],
}


def hostile_tarball(kind: str, tmp_path: Path) -> tuple[Path, Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host")
    members = []
    for member in HOSTILE[kind]:
        member = dict(member)
        for key in ("name", "linkname"):
            if key in member:
                member[key] = member[key].format(outside=outside, sentinel=sentinel,
                                                 sentinel_name=sentinel.name)
        members.append(member)
    return make_tarball(tmp_path / f"{kind}.tar.gz", members), outside, sentinel


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_tarball_import_is_refused(run_pyctr, fresh_env, tmp_path, kind):
    archive, outside, sentinel = hostile_tarball(kind, tmp_path)
    imported = run_pyctr("import", archive, "evil:1", env=fresh_env)
    assert imported.returncode == 125, imported.stderr
    assert imported.stderr.startswith(f"Error: refusing to unpack {archive}: entry ")
    assert imported.stderr.count("\n") == 1
    assert list(outside.iterdir()) == []
    assert sentinel.read_text() == "host" and sentinel.stat().st_nlink == 1
    assert leftovers(fresh_env) == []


def test_hostile_tarball_from_a_mirror_is_refused(run_pyctr, fresh_env, tmp_path, serve_directory):
    archive, outside, _ = hostile_tarball("write-through-symlink", tmp_path)
    releases = tmp_path / "mirror" / RELEASES
    releases.mkdir(parents=True)
    served = releases / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
    shutil.copy(archive, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    (releases / f"{served.name}.sha256").write_text(f"{digest}  {served.name}\n")
    url = serve_directory(tmp_path / "mirror")
    pulled = run_pyctr("pull", "--mirror", f"{url}/alpine", "alpine:3.20.3", env=fresh_env)
    assert pulled.returncode == 125
    assert "refusing to unpack" in pulled.stderr and "through the symlink 'etc'" in pulled.stderr
    assert list(outside.iterdir()) == []
    # The verified tarball stays in the download cache; no image was made from it.
    assert records(fresh_env) == []
    assert leftovers(fresh_env) == [f"_cache/{served.name}"]


# -- import, images, rmi ----------------------------------------------------------------------


def test_import_gz_and_xz_offline(run_pyctr, fresh_env, local_mirror_dir, tmp_path):
    genuine = local_mirror_dir / "alpine/v3.19/releases/x86_64/alpine-minirootfs-3.19.4-x86_64.tar.gz"
    offline = fresh_env | {"PYCTR_ALPINE_MIRROR": f"http://127.0.0.1:{closed_port()}/alpine"}
    imported = run_pyctr("import", genuine, "tools:v1", env=offline)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"sha256:{SHA_3_19_4}\n"

    xz = tmp_path / "rootfs.tar.xz"
    xz.write_bytes(lzma.compress(gzip.decompress(genuine.read_bytes())))
    imported = run_pyctr("import", xz, "tools:xz", env=offline)
    assert imported.returncode == 0, imported.stderr
    xz_id = f"sha256:{hashlib.sha256(xz.read_bytes()).hexdigest()}"
    assert imported.stdout == f"{xz_id}\n"

    by_id = {r["Id"]: r for r in records(offline)}
    assert by_id[f"sha256:{SHA_3_19_4}"]["RepoTags"] == ["tools:v1"]
    assert by_id[f"sha256:{SHA_3_19_4}"]["Version"] == "3.19.4"  # read from the rootfs
    assert by_id[f"sha256:{SHA_3_19_4}"]["Source"] == genuine.as_uri()
    assert by_id[xz_id]["RepoTags"] == ["tools:xz"]
    assert (images_dir(offline) / "tools/v1/rootfs/bin/busybox").is_file()
    assert stat.S_IMODE((images_dir(offline) / "tools/xz/rootfs/tmp").stat().st_mode) == 0o1777

    # The same bytes again under another name are the same image, with one more tag.
    assert run_pyctr("import", genuine, "alpine:3.19.4", env=offline).returncode == 0
    by_id = {r["Id"]: r for r in records(offline)}
    assert by_id[f"sha256:{SHA_3_19_4}"]["RepoTags"] == ["tools:v1", "alpine:3.19.4"]
    assert sorted(p.name for p in images_dir(offline).iterdir()) == ["tools"]


@pytest.mark.parametrize("content, message", [
    (b"not a tarball at all", "not a readable tar archive"),
    (None, "no such file"),
])
def test_import_of_a_bad_file_fails_cleanly(run_pyctr, fresh_env, tmp_path, content, message):
    path = tmp_path / "bad.tar"
    if content is not None:
        path.write_bytes(content)
    imported = run_pyctr("import", path, "bad:1", env=fresh_env)
    assert imported.returncode == 125
    assert message in imported.stderr and imported.stderr.count("\n") == 1
    assert leftovers(fresh_env) == []


def test_images_table_json_and_quiet(run_pyctr, fresh_env, local_mirror_dir):
    for ref in ("alpine", "alpine:3.19"):
        assert run_pyctr("pull", ref, env=fresh_env).returncode == 0

    table = run_pyctr("images", env=fresh_env)
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    cells = sorted(row.split()[:3] + row.split()[-1:] for row in rows)
    # SIZE: the unpacked rootfs's regular files, Docker's style (3 significant digits, 1 MB = 10^6 B).
    assert cells == [["alpine", "3.19", SHA_3_19_4[:12], "7.39MB"],
                     ["alpine", "latest", SHA_3_20_3[:12], "7.79MB"]]
    assert all(re.search(r"   (Less than a second|\d+ seconds?) ago   ", row) for row in rows), rows

    listed = json.loads(run_pyctr("images", "--format", "json", env=fresh_env).stdout)
    assert {i["Id"] for i in listed} == {SHA_3_20_3, SHA_3_19_4}
    for image in listed:  # podman's keys
        assert image.keys() == {"Id", "ParentId", "RepoTags", "RepoDigests", "Size", "SharedSize",
                                "VirtualSize", "Labels", "Containers", "Names", "Digest", "Created",
                                "CreatedAt"}
        assert image["Names"] == image["RepoTags"] and image["Size"] > 7_000_000
        assert abs(image["Created"] - time.time()) < 600 and image["CreatedAt"].endswith("Z")

    quiet = run_pyctr("images", "-q", env=fresh_env).stdout.split()
    assert sorted(quiet) == sorted([SHA_3_20_3[:12], SHA_3_19_4[:12]])
    only = run_pyctr("images", "alpine:3.19", env=fresh_env).stdout.splitlines()
    assert len(only) == 2 and only[1].split()[1] == "3.19"


def test_rmi_removes_a_tag_then_the_image(run_pyctr, fresh_env, local_mirror_dir):
    for ref in ("alpine", "alpine:3.20.3"):
        assert run_pyctr("pull", ref, env=fresh_env).returncode == 0
    rootfs = images_dir(fresh_env) / "alpine/3.20.3/rootfs"

    removed = run_pyctr("rmi", "alpine", env=fresh_env)
    assert (removed.returncode, removed.stdout) == (0, "Untagged: alpine:latest\n")
    assert rootfs.is_dir()
    assert records(fresh_env)[0]["RepoTags"] == ["alpine:3.20.3"]
    assert records(fresh_env)[0]["Tag"] == "3.20.3"

    removed = run_pyctr("rmi", "alpine:3.20.3", env=fresh_env)
    assert removed.returncode == 0
    assert removed.stdout == f"Untagged: alpine:3.20.3\nDeleted: sha256:{SHA_3_20_3}\n"
    assert not rootfs.exists() and records(fresh_env) == []

    missing = run_pyctr("rmi", "alpine", env=fresh_env)
    assert (missing.returncode, missing.stderr) == (125, "Error: No such image: alpine:latest\n")


def test_rmi_refuses_an_image_a_container_uses(run_pyctr, fresh_env, local_mirror_dir):
    assert run_pyctr("pull", "alpine", env=fresh_env).returncode == 0
    # The runtime is not here yet: write the container record it will write
    # (containers/ID/config.json with the image record's Id as ImageID).
    config = Path(fresh_env["PYCTR_ROOT"]) / "containers" / "c0ffee" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"Id": "c0ffee", "Name": "web", "Image": "alpine",
                                  "ImageID": f"sha256:{SHA_3_20_3}"}))

    refused = run_pyctr("rmi", "alpine", env=fresh_env)
    assert refused.returncode == 125
    assert refused.stderr == ("Error: unable to remove alpine: image d4e6fd67dcf7 is used by container "
                              "web; remove the container first, or use --force\n")
    assert [r["RepoTags"] for r in records(fresh_env)] == [["alpine:latest"]]

    forced = run_pyctr("rmi", "--force", "alpine", env=fresh_env)
    assert forced.returncode == 0
    assert "Warning: container web was made from image d4e6fd67dcf7" in forced.stderr
    assert records(fresh_env) == [] and leftovers(fresh_env) != []  # the download cache stays
    assert not (images_dir(fresh_env) / "alpine").exists()


def test_rmi_by_id_and_of_several_images(run_pyctr, fresh_env, local_mirror_dir):
    for ref in ("alpine", "alpine:3.20", "alpine:3.19"):
        assert run_pyctr("pull", ref, env=fresh_env).returncode == 0
    refused = run_pyctr("rmi", SHA_3_20_3[:8], env=fresh_env)
    assert refused.returncode == 125
    assert "it is tagged alpine:latest, alpine:3.20" in refused.stderr

    removed = run_pyctr("rmi", "-f", SHA_3_20_3[:8], "nope:1", "alpine:3.19", env=fresh_env)
    assert removed.returncode == 125  # nope:1 failed; the others were still removed
    assert removed.stderr == "Error: No such image: nope:1\n"
    assert removed.stdout.splitlines() == [
        "Untagged: alpine:latest", "Untagged: alpine:3.20", f"Deleted: sha256:{SHA_3_20_3}",
        "Untagged: alpine:3.19", f"Deleted: sha256:{SHA_3_19_4}"]
    assert records(fresh_env) == []


def test_human_sizes_and_ages_read_like_docker():
    from datetime import datetime, timedelta, timezone

    from pyctr.runtime.humanize import ago as human_ago, size as human_size

    assert [human_size(n) for n in (0, 999, 1000, 7792915, 123456789, 5 * 10**12)] == \
        ["0B", "999B", "1kB", "7.79MB", "123MB", "5TB"]
    now = datetime.now(timezone.utc)
    ago = {s: human_ago((now - timedelta(seconds=s)).isoformat()) for s in (5, 65, 150, 3700, 7300, 86400 * 3)}
    assert ago == {5: "5 seconds ago", 65: "About a minute ago", 150: "2 minutes ago",
                   3700: "About an hour ago", 7300: "2 hours ago", 86400 * 3: "3 days ago"}


def test_shared_fixtures_give_each_test_alpine_and_its_own_root(run_pyctr, pyctr_env, pyctr_root):
    # run_pyctr without env= runs in pyctr_env: the session's pulled alpine, a root of its own.
    listed = run_pyctr("images", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [image] = json.loads(listed.stdout)
    assert image["RepoTags"] == ["alpine:latest"]
    [record] = json.loads(run_pyctr("image", "inspect", "alpine").stdout)
    lower = record["GraphDriver"]["Data"]["LowerDir"]
    assert Path(lower, "bin/busybox").is_file()
    assert Path(pyctr_env["PYCTR_ROOT"]) != pyctr_root
    assert images_dir(pyctr_env).resolve() == (pyctr_root / "images").resolve()
