"""Layered images (issue 11): OCI layouts built offline with umoci and skopeo from the Alpine
minirootfs (tests/imagebuild.py), loaded with `pyctr load`, installed as layers, and run.

Every container runs with --network none and is removed with its test (layered_env).
"""

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import SHARED_MIRROR, needs_userns, remove_all_containers
from imagebuild import ALPINE_TARBALL, OciLayout, layer_member, zstd_copy
from test_userns_run import etc_root  # noqa: F401 -- the fixture: a pool of subordinate ids

pytestmark = [
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="the local mirror holds x86_64 releases only"),
    pytest.mark.skipif(not (SHARED_MIRROR / ALPINE_TARBALL).is_file(), reason="needs the local Alpine mirror"),
]

BASE, TWO, CONFIGURED, ZSTD, BAD_DIFF_ID = ("pyctr-test/base:1", "pyctr-test/two:1", "localhost:5000/team/app:1",
                                             "pyctr-test/zstd:1", "pyctr-test/bad-diff-id:1")
ROOTED = "pyctr-test/rooted:1"
OPAQUE = "trusted.overlay.opaque"
NET_RAW_CAP = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # VFS_CAP_REVISION_2, effective: cap_net_raw

# Layers that try to write outside their folder, or hold what a layer must not: today's hostile
# tarballs (tests/test_images.py), and whiteouts that try the same.
HOSTILE = {
    "absolute-path": [layer_member("{outside}/escaped", data=b"x")],
    "dotdot": [layer_member("../../escaped", data=b"x")],
    "symlink-escape": [layer_member("etc", tarfile.SYMTYPE, linkname="../../..")],
    "write-through-symlink": [layer_member("etc", tarfile.SYMTYPE, linkname="{outside}"),
                              layer_member("etc/escaped", data=b"x")],
    "hardlink-escape": [layer_member("passwd", tarfile.LNKTYPE, linkname="../../../../../{sentinel_name}")],
    "hardlink-absolute": [layer_member("passwd", tarfile.LNKTYPE, linkname="{sentinel}")],
    "hardlink-through-symlink": [layer_member("s", tarfile.SYMTYPE, linkname="{sentinel}"),
                                 layer_member("passwd", tarfile.LNKTYPE, linkname="s")],
    "device": [layer_member("dev/mem", tarfile.CHRTYPE, mode=0o600)],
    "whiteout-device-in-the-tar": [layer_member("etc/motd", tarfile.CHRTYPE, mode=0)],
    "replace-top": [layer_member(".", tarfile.SYMTYPE, linkname="{outside}")],
    "whiteout-dotdot": [layer_member("../.wh.escaped")],
    "whiteout-through-symlink": [layer_member("link", tarfile.SYMTYPE, linkname="{outside}"),
                                 layer_member("link/.wh.victim")],
    "opaque-through-symlink": [layer_member("link", tarfile.SYMTYPE, linkname="{outside}"),
                               layer_member("link/.wh..wh..opq")],
    "whiteout-of-dotdot": [layer_member("etc/", tarfile.DIRTYPE, mode=0o755), layer_member("etc/.wh..."),
                           layer_member("etc/.wh..")],
}


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict:
    """The test images, built once: {"layout": OciLayout, "all": tar of the good ones,
    "zstd": tar, "bad": tar, "hostile": {kind: (tar, outside, sentinel)}}."""
    work = tmp_path_factory.mktemp("imagebuild")
    layout = OciLayout(work / "layout")
    layout.base(BASE, SHARED_MIRROR / ALPINE_TARBALL, work)
    # Second layer: deletes /etc/motd and the folder /mnt, makes /etc/apk opaque with one new file,
    # and has a file of its own next to a whiteout of the same name (which hides only lower layers).
    layout.add_layer(BASE, TWO, [
        layer_member("etc/", tarfile.DIRTYPE, mode=0o755),
        layer_member("etc/.wh.motd"),
        layer_member(".wh.mnt"),
        layer_member("etc/apk/", tarfile.DIRTYPE, mode=0o755),
        layer_member("etc/apk/.wh..wh..opq"),
        layer_member("etc/apk/fresh", data=b"fresh\n"),
        layer_member("srv/", tarfile.DIRTYPE, mode=0o755),
        layer_member("srv/keep", data=b"kept\n"),
        layer_member("srv/.wh.keep"),
        # A file capability is kept; overlayfs's own xattrs never come from a tar.
        layer_member("srv/capped", data=b"#!/bin/sh\n", mode=0o755, xattrs={"security.capability": NET_RAW_CAP}),
        layer_member("srv/forged/", tarfile.DIRTYPE, mode=0o755, xattrs={OPAQUE: b"y"}),
    ], work)
    layout.configure(BASE, CONFIGURED, "--config.entrypoint", "/bin/echo", "--config.entrypoint", "ep",
                     "--config.cmd", "default", "--config.cmd", "cmd",
                     "--config.env", "GREETING=hello", "--config.env", "PATH=/usr/bin:/bin",
                     "--config.workingdir", "/srv/app", "--config.user", "nobody",
                     "--config.exposedports", "8080/tcp")

    def lie(config):
        config["rootfs"]["diff_ids"][1] = "sha256:" + hashlib.sha256(b"another layer").hexdigest()

    layout.rewrite_config(TWO, BAD_DIFF_ID, lie)
    # A layer with a root entry of its own, under one without.
    layout.add_layer(BASE, "rooted-1", [layer_member("./", tarfile.DIRTYPE, mode=0o750, gid=10),
                                        layer_member("etc/rooted", data=b"1\n")], work)
    layout.add_layer("rooted-1", ROOTED, [layer_member("etc/more", data=b"2\n")], work)
    built = {"layout": layout, "all": layout.tar(work / "all.tar", only=[BASE, TWO, CONFIGURED]),
             "bad": layout.tar(work / "bad.tar", only=[BAD_DIFF_ID]),
             "rooted": layout.tar(work / "rooted.tar", only=[ROOTED])}
    zstd = zstd_copy(layout, TWO, work / "zstd-layout", ZSTD)
    built["zstd_layout"] = zstd
    built["zstd"] = zstd.tar(work / "zstd.tar")

    hostile = {}
    for kind, members in HOSTILE.items():
        outside = work / f"outside-{kind}"
        outside.mkdir()
        sentinel = work / f"sentinel-{kind}"
        sentinel.write_text("host")
        filled = []
        for info, data in members:
            info = _copy_info(info)
            info.name = info.name.format(outside=outside, sentinel=sentinel, sentinel_name=sentinel.name)
            info.linkname = info.linkname.format(outside=outside, sentinel=sentinel, sentinel_name=sentinel.name)
            filled.append((info, data))
        tag = f"evil/{kind}:1"
        layout.empty(f"empty-{kind}")
        layout.add_layer(f"empty-{kind}", tag, filled, work)
        hostile[kind] = (layout.tar(work / f"{kind}.tar", only=[tag]), outside, sentinel)
    built["hostile"] = hostile
    return built


def _copy_info(info: tarfile.TarInfo) -> tarfile.TarInfo:
    copy = tarfile.TarInfo(info.name)
    for key in ("type", "linkname", "mode", "uid", "gid", "size"):
        setattr(copy, key, getattr(info, key))
    return copy


@pytest.fixture
def layered_env(fresh_env):
    yield fresh_env
    remove_all_containers(fresh_env)


def images_dir(env: dict) -> Path:
    return Path(env["PYCTR_ROOT"]) / "images"


def layer_folders(env: dict) -> list[str]:
    top = images_dir(env) / "_layers"
    return sorted(p.name for p in top.iterdir()) if top.exists() else []


def blobs(env: dict) -> list[str]:
    top = images_dir(env) / "_blobs" / "sha256"
    return sorted(p.name for p in top.iterdir()) if top.exists() else []


def records(env: dict) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(images_dir(env).glob("_images/*/image.json"))]


def load(run_pyctr, env: dict, tar: Path):
    loaded = run_pyctr("load", "-i", tar, env=env)
    assert loaded.returncode == 0, loaded.stderr
    return loaded


def run_in(run_pyctr, env: dict, *args):
    return run_pyctr("run", "--rm", "--network", "none", *args, env=env)


# -- load, layers, whiteouts --------------------------------------------------------------------


def test_load_an_oci_layout_and_run_its_layers(run_pyctr, layered_env, images):
    loaded = load(run_pyctr, layered_env, images["all"])
    assert sorted(loaded.stdout.splitlines()) == sorted(f"Loaded image: {t}" for t in (BASE, TWO, CONFIGURED))
    layout = images["layout"]
    base_diff, second_diff = layout.config(TWO)["rootfs"]["diff_ids"]
    # Each layer once: the base layer is shared by the three images.
    assert layer_folders(layered_env) == sorted([base_diff[7:], second_diff[7:]])

    ran = run_in(run_pyctr, layered_env, TWO, "sh", "-c",
                 "test ! -e /etc/motd && test ! -e /mnt && ls -A /etc/apk && cat /srv/keep /etc/alpine-release")
    assert (ran.returncode, ran.stdout) == (0, "fresh\nkept\n3.20.3\n"), ran.stderr
    # The base image, below the same layer folder, still has all of it.
    ran = run_in(run_pyctr, layered_env, BASE, "sh", "-c", "cat /etc/motd >/dev/null && ls /etc/apk && ls -d /mnt")
    assert ran.returncode == 0 and "world" in ran.stdout and "/mnt" in ran.stdout, ran.stderr

    # On disk: overlayfs's whiteouts, made by pyctr.
    second = images_dir(layered_env) / "_layers" / second_diff[7:] / "diff"
    for whiteout in (second / "etc/motd", second / "mnt"):
        st = os.lstat(whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(second / "etc/apk", OPAQUE) == b"y"
    assert (second / "srv/keep").read_text() == "kept\n"
    assert os.getxattr(second / "srv/capped", "security.capability") == NET_RAW_CAP
    assert OPAQUE not in os.listxattr(second / "srv/forged")
    assert not any(p.name.startswith(".wh.") for p in second.rglob("*"))


def test_load_from_stdin_and_again_is_idempotent(run_pyctr, layered_env, images):
    with open(images["all"], "rb") as stdin:
        loaded = subprocess.run([sys.executable, "-m", "pyctr.runtime", "load"], env=layered_env, stdin=stdin,
                                capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert len(loaded.stdout.splitlines()) == 3
    before = (layer_folders(layered_env), blobs(layered_env), [r["Id"] for r in records(layered_env)])
    load(run_pyctr, layered_env, images["all"])
    assert (layer_folders(layered_env), blobs(layered_env), [r["Id"] for r in records(layered_env)]) == before
    assert not list(images_dir(layered_env).glob(".load-*"))  # stdin's copy is gone


def test_zstd_layers(run_pyctr, layered_env, images):
    manifest = images["zstd_layout"].manifest(ZSTD)
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    load(run_pyctr, layered_env, images["zstd"])
    ran = run_in(run_pyctr, layered_env, ZSTD, "sh", "-c", "test ! -e /etc/motd && ls -A /etc/apk")
    assert (ran.returncode, ran.stdout) == (0, "fresh\n"), ran.stderr
    # The same uncompressed layers as the gzip image: the same diff_ids.
    assert records(layered_env)[0]["RootFS"]["Layers"] == images["layout"].config(TWO)["rootfs"]["diff_ids"]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_layers_are_refused(run_pyctr, layered_env, images, kind):
    tar, outside, sentinel = images["hostile"][kind]
    loaded = run_pyctr("load", "-i", tar, env=layered_env)
    assert loaded.returncode == 125, loaded.stderr
    assert loaded.stderr.startswith("Error: refusing to unpack layer sha256:"), loaded.stderr
    assert loaded.stderr.count("\n") == 1
    assert list(outside.iterdir()) == []
    assert sentinel.read_text() == "host" and sentinel.stat().st_nlink == 1
    # Nothing kept: no image, no layer, no blob, no work folder.
    assert records(layered_env) == [] and layer_folders(layered_env) == [] and blobs(layered_env) == []


def test_a_layer_whose_diff_id_does_not_match_keeps_nothing(run_pyctr, layered_env, images):
    loaded = run_pyctr("load", "-i", images["bad"], env=layered_env)
    assert loaded.returncode == 125
    assert "does not match the image's config" in loaded.stderr and loaded.stderr.count("\n") == 1
    assert records(layered_env) == [] and layer_folders(layered_env) == [] and blobs(layered_env) == []


def test_a_changed_blob_in_the_archive_keeps_nothing(run_pyctr, layered_env, images, tmp_path):
    copy = OciLayout(tmp_path / "copy")
    subprocess.run(["cp", "-a", f"{images['layout'].folder}/.", str(copy.folder)], check=True)
    second = copy.blob(copy.manifest(TWO)["layers"][1]["digest"])
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    second.write_bytes(bytes(data))
    loaded = run_pyctr("load", "-i", copy.tar(tmp_path / "changed.tar", only=[TWO]), env=layered_env)
    assert loaded.returncode == 125
    assert "does not match its digest" in loaded.stderr and loaded.stderr.count("\n") == 1
    # The blobs copied before it (the manifest, the config, the base layer) went too.
    assert records(layered_env) == [] and layer_folders(layered_env) == [] and blobs(layered_env) == []


def test_an_index_in_the_layout_gives_this_machines_image(run_pyctr, layered_env, images, tmp_path):
    copy = OciLayout(tmp_path / "copy")
    subprocess.run(["cp", "-a", f"{images['layout'].folder}/.", str(copy.folder)], check=True)
    two, two_id = copy._descriptor(TWO), copy.manifest(TWO)["config"]["digest"]
    arm64 = {"mediaType": two["mediaType"], "digest": "sha256:" + "0" * 64, "size": 1,
             "platform": {"architecture": "arm64", "os": "linux"}}  # its blob is not even there
    amd64 = {"mediaType": two["mediaType"], "digest": two["digest"], "size": two["size"],
             "platform": {"architecture": "amd64", "os": "linux"}}
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [arm64, amd64]}).encode()
    digest = "sha256:" + hashlib.sha256(nested).hexdigest()
    copy.blob(digest).write_bytes(nested)
    (copy.folder / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": len(nested),
        "annotations": {"org.opencontainers.image.ref.name": "pyctr-test/multi:1"}}]}))
    loaded = load(run_pyctr, layered_env, copy.tar(tmp_path / "multi.tar"))
    assert loaded.stdout == "Loaded image: pyctr-test/multi:1\n"
    assert [r["Id"] for r in records(layered_env)] == [two_id]


def test_not_an_image_archive(run_pyctr, layered_env, tmp_path):
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tar:
        tar.add(__file__, arcname="hello.py")
    for args, message in ((["-i", junk], "not an image archive pyctr can load"),
                          (["-i", tmp_path / "missing.tar"], "no such file")):
        loaded = run_pyctr("load", *args, env=layered_env)
        assert loaded.returncode == 125 and message in loaded.stderr and loaded.stderr.count("\n") == 1


# -- the image's config -------------------------------------------------------------------------


def test_entrypoint_cmd_env_workdir_user_and_their_overrides(run_pyctr, layered_env, images):
    load(run_pyctr, layered_env, images["all"])
    show = "echo $GREETING $PATH $(pwd) $(stat -c %a:%u .) $(id -u)"
    cases = [
        ([CONFIGURED], "ep default cmd\n"),  # Entrypoint + the image's Cmd
        ([CONFIGURED, "a", "b"], "ep a b\n"),  # Entrypoint + the arguments
        (["--entrypoint", "/bin/echo", CONFIGURED], "\n"),  # --entrypoint drops the image's Cmd
        (["--entrypoint", "", CONFIGURED, "echo", "x"], "x\n"),  # "" clears it
        # The WorkingDir, missing in the image, is made as Docker makes it: root's, 0755.
        (["--entrypoint", "/bin/sh", CONFIGURED, "-c", show], "hello /usr/bin:/bin /srv/app 755:0 65534\n"),
        (["-e", "GREETING=bye", "-w", "/tmp", "-u", "0", "--entrypoint", "/bin/sh", CONFIGURED, "-c", show],
         "bye /usr/bin:/bin /tmp 1777:0 0\n"),
    ]
    for args, expected in cases:
        ran = run_in(run_pyctr, layered_env, *args)
        assert (ran.returncode, ran.stdout) == (0, expected), (args, ran.stderr)

    created = run_pyctr("create", "--network", "none", "--name", "c1", CONFIGURED, "x", env=layered_env)
    assert created.returncode == 0, created.stderr
    data = json.loads(run_pyctr("inspect", "c1", env=layered_env).stdout)[0]
    config = data["Config"]
    assert (data["Path"], data["Args"]) == ("/bin/echo", ["ep", "x"])
    assert (config["Entrypoint"], config["Cmd"]) == (["/bin/echo", "ep"], ["x"])
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert (config["User"], config["WorkingDir"]) == ("nobody", "/srv/app")
    assert "GREETING=hello" in config["Env"] and "PATH=/usr/bin:/bin" in config["Env"]
    lower = data["GraphDriver"]["Data"]["LowerDir"].split(":")
    assert lower == [str(images_dir(layered_env) / "_layers" / d[7:] / "diff")
                     for d in reversed(images["layout"].config(CONFIGURED)["rootfs"]["diff_ids"])]


def test_nothing_to_run_is_dockers_error(run_pyctr, layered_env, images):
    load(run_pyctr, layered_env, images["all"])
    ran = run_in(run_pyctr, layered_env, "--entrypoint", "", CONFIGURED)
    assert ran.returncode == 125
    assert ran.stderr.startswith("Error: no command specified") and ran.stderr.count("\n") == 1
    assert run_pyctr("ps", "-aq", env=layered_env).stdout == ""


def test_the_upper_layer_takes_the_root_of_the_top_most_layer_with_one(run_pyctr, layered_env, images):
    load(run_pyctr, layered_env, images["all"])
    load(run_pyctr, layered_env, images["rooted"])
    # TWO's second layer has no "./" entry: the base layer's root (Alpine's) counts. ROOTED's
    # top layer has none either: the root entry of the layer below it counts.
    for image, expected in ((TWO, (0, 0, 0o755)), (ROOTED, (0, 10, 0o750))):
        name = image.split("/")[1].replace(":", "-")
        created = run_pyctr("create", "--network", "none", "--name", name, image, env=layered_env)
        assert created.returncode == 0, created.stderr
        container = json.loads(run_pyctr("inspect", name, env=layered_env).stdout)[0]
        upper = os.stat(container["GraphDriver"]["Data"]["UpperDir"])
        assert (upper.st_uid, upper.st_gid, stat.S_IMODE(upper.st_mode)) == expected, image
    ran = run_in(run_pyctr, layered_env, ROOTED, "sh", "-c", "stat -c %a:%g / && cat /etc/rooted /etc/more")
    assert (ran.returncode, ran.stdout) == (0, "750:10\n1\n2\n"), ran.stderr


# -- images, inspect, rmi, prune ---------------------------------------------------------------


def install_with_digest(env: dict, ref_tag: str, repo_digest: str, layout: OciLayout, tag: str) -> dict:
    """store.install_content as a registry pull calls it: the image's blobs are in the store."""
    manifest = layout.manifest(tag)
    script = f"""
import json, sys
from pyctr.images import oci, store
from pyctr.runtime import settings
settings.configure(None, None)
manifest = json.loads({json.dumps(json.dumps(manifest))})
config = oci.blob_path(manifest["config"]["digest"]).read_bytes()
layers = [oci.Layer(l["digest"], l["mediaType"], l["size"]) for l in manifest["layers"]]
content = oci.ImageContent(config, layers, None, [{ref_tag!r}], [{repo_digest!r}], "test")
print(json.dumps(store.install_content(content)))
"""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_images_table_digests_json_and_lookups(run_pyctr, layered_env, images):
    load(run_pyctr, layered_env, images["all"])
    digest = "sha256:" + "ab" * 32
    record = install_with_digest(layered_env, "localhost:5000/team/app:2", f"localhost:5000/team/app@{digest}",
                                 images["layout"], CONFIGURED)
    assert record["RepoTags"] == [CONFIGURED, "localhost:5000/team/app:2"]
    assert all(Path(d).is_dir() for d in record["LayerDirs"])

    table = run_pyctr("images", env=layered_env).stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = {tuple(row.split()[:2]) for row in table[1:]}
    assert rows == {("pyctr-test/base", "1"), ("pyctr-test/two", "1"), ("localhost:5000/team/app", "1"),
                    ("localhost:5000/team/app", "2")}
    digests = run_pyctr("images", "--digests", env=layered_env).stdout.splitlines()
    assert digests[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"]
    by_tag = {tuple(row.split()[:2]): row.split()[2] for row in digests[1:]}
    assert by_tag[("localhost:5000/team/app", "2")] == digest
    assert by_tag[("pyctr-test/base", "1")] == "<none>"
    listed = json.loads(run_pyctr("images", "--format", "json", env=layered_env).stdout)
    assert {"sha256:" + i["Id"] for i in listed} == {record["Id"] for record in records(layered_env)}
    [app2] = [i for i in listed if "localhost:5000/team/app:2" in i["RepoTags"]]
    assert (app2["Digest"], app2["Names"], app2["Containers"]) == (digest, app2["RepoTags"], 0)
    only = run_pyctr("images", "localhost:5000/team/app", env=layered_env).stdout.splitlines()
    assert len(only) == 3

    # An image is found by tag, by familiar or full name, by RepoDigest and by ID prefix.
    image_id = record["Id"]
    for ref in ("localhost:5000/team/app:2", f"localhost:5000/team/app@{digest}", image_id[7:19], image_id):
        found = json.loads(run_pyctr("image", "inspect", ref, env=layered_env).stdout)
        assert [i["Id"] for i in found] == [image_id], ref
    base_id = json.loads(run_pyctr("inspect", BASE, env=layered_env).stdout)[0]["Id"]
    assert base_id == "sha256:" + hashlib.sha256(images["layout"].blob(
        images["layout"].manifest(BASE)["config"]["digest"]).read_bytes()).hexdigest()


def test_inspect_image_has_dockers_keys(run_pyctr, layered_env, images, local_mirror_dir):
    load(run_pyctr, layered_env, images["all"])
    assert run_pyctr("pull", "alpine", env=layered_env).returncode == 0
    for ref in (CONFIGURED, "alpine"):
        inspected = run_pyctr("inspect", ref, env=layered_env)
        assert inspected.returncode == 0, inspected.stderr
        image = json.loads(inspected.stdout)[0]
        assert {"Id", "RepoTags", "RepoDigests", "Created", "Config", "Architecture", "Os", "Size",
                "RootFS"} <= image.keys()
        assert image["Architecture"] == "amd64" and image["Os"] == "linux"
        assert image["RootFS"]["Type"] == "layers"
    configured = json.loads(run_pyctr("image", "inspect", CONFIGURED, env=layered_env).stdout)[0]
    layout_config = images["layout"].config(CONFIGURED)
    assert configured["RootFS"]["Layers"] == layout_config["rootfs"]["diff_ids"]
    assert configured["Config"]["Entrypoint"] == ["/bin/echo", "ep"]
    assert configured["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert configured["Created"] == layout_config["created"]
    alpine = json.loads(run_pyctr("inspect", "alpine", env=layered_env).stdout)[0]
    tarball = SHARED_MIRROR / ALPINE_TARBALL
    import gzip

    assert alpine["RootFS"]["Layers"] == ["sha256:" + hashlib.sha256(gzip.decompress(tarball.read_bytes())).hexdigest()]
    assert alpine["Config"]["Cmd"] == ["/bin/sh"]
    # A record of an older pyctr, without RootFS: computed once from the cached tarball, and saved.
    record_path = next(images_dir(layered_env).glob("alpine/*/image.json"))
    record = json.loads(record_path.read_text())
    del record["RootFS"]
    record_path.write_text(json.dumps(record))
    again = json.loads(run_pyctr("inspect", "alpine", env=layered_env).stdout)[0]
    assert again["RootFS"] == alpine["RootFS"]
    assert json.loads(record_path.read_text())["RootFS"] == alpine["RootFS"]
    missing = run_pyctr("image", "inspect", "nosuch:1", env=layered_env)
    assert missing.returncode == 125 and missing.stderr == "Error: No such image: nosuch:1\n"


def test_rmi_frees_what_no_other_image_holds(run_pyctr, layered_env, images):
    load(run_pyctr, layered_env, images["all"])
    layout = images["layout"]
    base_diff, second_diff = layout.config(TWO)["rootfs"]["diff_ids"]
    base_blob, second_blob = (layer["digest"][7:] for layer in layout.manifest(TWO)["layers"])
    two_config = layout.manifest(TWO)["config"]["digest"][7:]

    # A container made from the image: refused, as for Alpine images.
    assert run_pyctr("create", "--network", "none", "--name", "user", TWO, env=layered_env).returncode == 0
    refused = run_pyctr("rmi", TWO, env=layered_env)
    assert refused.returncode == 125 and "used by container user" in refused.stderr
    assert run_pyctr("rm", "user", env=layered_env).returncode == 0

    removed = run_pyctr("rmi", TWO, env=layered_env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == f"Untagged: {TWO}\nDeleted: sha256:{two_config}\n"
    # Its own layer and blobs are gone; the base layer, which the other images hold, stays.
    assert layer_folders(layered_env) == [base_diff[7:]]
    assert second_blob not in blobs(layered_env) and two_config not in blobs(layered_env)
    assert base_blob in blobs(layered_env)
    ran = run_in(run_pyctr, layered_env, BASE, "cat", "/etc/motd")
    assert ran.returncode == 0 and "Alpine" in ran.stdout

    assert run_pyctr("rmi", BASE, CONFIGURED, env=layered_env).returncode == 0
    assert layer_folders(layered_env) == [] and records(layered_env) == []
    # The manifests, configs and layers of the removed images: no blob is left.
    assert blobs(layered_env) == []


def test_image_prune_dangling_then_all_unused(run_pyctr, layered_env, images, tmp_path):
    load(run_pyctr, layered_env, images["all"])
    layout = images["layout"]
    # Another image takes pyctr-test/base:1: the first one is left dangling, as with Docker.
    retagged = OciLayout(tmp_path / "retag")
    subprocess.run(["cp", "-a", f"{layout.folder}/.", str(retagged.folder)], check=True)
    retagged.rewrite_config(TWO, BASE, lambda config: config.update(author="someone else"))
    load(run_pyctr, layered_env, retagged.tar(tmp_path / "retag.tar", only=[BASE]))
    old_base = "sha256:" + layout.manifest(BASE)["config"]["digest"][7:]
    table = run_pyctr("images", env=layered_env).stdout
    assert "<none>" in table

    pruned = run_pyctr("image", "prune", env=layered_env)
    assert pruned.returncode == 0, pruned.stderr
    lines = pruned.stdout.splitlines()
    assert lines[:2] == ["Deleted Images:", f"deleted: {old_base}"]
    # Its only layer is the Alpine base, which the others hold: its config and manifest were freed.
    from pyctr.runtime import humanize

    freed = os.path.getsize(layout.blob(old_base)) + os.path.getsize(layout.blob(layout._descriptor(BASE)["digest"]))
    assert lines[2:] == ["", f"Total reclaimed space: {humanize.size(freed)}"]
    assert old_base not in {r["Id"] for r in records(layered_env)}
    again = run_pyctr("image", "prune", env=layered_env)
    assert again.stdout == "Total reclaimed space: 0B\n"

    assert run_pyctr("create", "--network", "none", "--name", "keeper", CONFIGURED, env=layered_env).returncode == 0
    everything = run_pyctr("image", "prune", "-a", env=layered_env)
    assert everything.returncode == 0
    assert f"untagged: {TWO}" in everything.stdout and f"untagged: {BASE}" in everything.stdout
    assert [r["RepoTags"] for r in records(layered_env)] == [[CONFIGURED]]
    # The second layer went with the last images that held it; the base layer, which the
    # container's image holds, stays.
    base_diff, second_diff = layout.config(TWO)["rootfs"]["diff_ids"]
    assert layer_folders(layered_env) == [base_diff[7:]]
    assert layout.manifest(TWO)["layers"][1]["digest"][7:] not in blobs(layered_env)


def test_image_prune_removes_what_killed_pulls_and_loads_left_half_written(run_pyctr, layered_env):
    """A pull or load SIGKILLed mid-blob leaves its hidden partial file (named with its PID);
    `image prune` removes those of dead processes and keeps those of a live one."""
    root = Path(layered_env["PYCTR_ROOT"]) / "images"
    blobs_dir, cache = root / "_blobs" / "sha256", root / "_cache"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead, live = gone.pid, os.getpid()
    abandoned = [blobs_dir / f".{'a' * 64}.{dead}.part", blobs_dir / f".staged-{dead}-x1y2.tmp",
                 cache / f".alpine-minirootfs-3.20.3-x86_64.tar.gz.{dead}.part"]
    in_progress = [blobs_dir / f".{'b' * 64}.{live}.part", blobs_dir / f".staged-{live}-z3w4.tmp"]
    for path in abandoned + in_progress:
        path.write_bytes(b"x" * 1000)
    pruned = run_pyctr("image", "prune", env=layered_env)
    assert (pruned.returncode, pruned.stdout) == (0, "Total reclaimed space: 3kB\n"), pruned.stderr
    assert [p.exists() for p in abandoned + in_progress] == [False, False, False, True, True]


# -- user namespaces ----------------------------------------------------------------------------


@needs_userns
@pytest.mark.parametrize("idmapped", [True, False], ids=["idmapped", "chowned-copies"])
def test_layers_in_a_user_namespace(run_pyctr, layered_env, images, etc_root, idmapped):
    env = dict(layered_env, PYCTR_ETC_ROOT=str(etc_root))
    if not idmapped:
        env["PYCTR_USERNS_NO_IDMAP"] = "1"
    load(run_pyctr, env, images["all"])
    ran = run_in(run_pyctr, env, "--userns=auto", TWO, "sh", "-c",
                 "cat /proc/self/uid_map; test ! -e /etc/motd && ls -A /etc/apk; stat -c %u:%g /etc/passwd")
    assert ran.returncode == 0, ran.stderr
    map_line, apk, owner = ran.stdout.splitlines()
    assert (apk, owner) == ("fresh", "0:0")
    host = int(map_line.split()[1])
    layers = images_dir(env) / "_layers"
    copies = sorted(p.relative_to(layers) for p in layers.glob(f"*/diff-{host}.{host}"))
    if idmapped:
        assert copies == []
        return
    # One shifted copy per layer, beside it, whiteouts and opaque folder kept.
    assert len(copies) == 2
    second = layers / images["layout"].config(TWO)["rootfs"]["diff_ids"][1][7:] / f"diff-{host}.{host}"
    whiteout = os.lstat(second / "etc/motd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0 and whiteout.st_uid == host
    assert os.getxattr(second / "etc/apk", OPAQUE) == b"y"
    assert run_pyctr("rmi", TWO, env=env).returncode == 0
    assert not second.parent.exists()  # rmi removed the layer with its copy
