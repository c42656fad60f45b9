"""docker-archive (issue 11): `pyctr save` and images/archive.py against a real Docker.

One private dockerd for the module (tests/ociclients.py: its own network and mount namespaces,
data-root and exec-root, no bridge and no iptables; stopped and cleaned at the end). Containers
run on Docker's default runtime, runc, with --network none.

The test image is built offline with umoci from the Alpine minirootfs that pyctr pulled: two
gzip layers, the second adding /the/file, and a config with Cmd and Env. Its blobs are copied
into a private blob store (what a pull or an OCI-layout load will do), and from there:

    write_docker_archive -> docker load -> docker image inspect, docker run
    docker save (Docker 20.10's layout), skopeo's docker-archive (layers behind symlinks),
    Docker 25's OCI-shaped layout, a zstd layer -> read_docker_archive
    hostile archives -> `pyctr load`: one line, exit 125, nothing in the blob store
    `pyctr save alpine` -> docker load -> docker run; twice gives the same bytes
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from imagebuild import SKOPEO
from netsandbox import run
from ociclients import ClientSandbox, Docker

from pyctr.images import archive, compression, oci
from pyctr.runtime import settings
from pyctr.runtime.errors import PyctrError

THE_FILE = "from the second layer\n"
TWO = "pyctr-test/two:1"
BASE = "pyctr-test/base:1"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# -- fixtures ----------------------------------------------------------------------------------


@contextlib.contextmanager
def private_store(root: Path):
    """pyctr's settings (and so the blob store) on `root` for this process, restored after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYCTR_ROOT", str(root / "root"))
        patch.setenv("PYCTR_STATE", str(root / "state"))
        patch.setattr(settings, "_current", None)
        settings.configure()
        yield oci.blobs_dir()
        settings._current = None


@pytest.fixture
def blob_store(tmp_path):
    with private_store(tmp_path / "store") as blobs:
        yield blobs


@pytest.fixture(scope="module")
def box():
    box = ClientSandbox()
    yield box
    box.close()


@pytest.fixture(scope="module")
def docker(box) -> Docker:
    # --add-runtime wants a runtime; the containers here run on the default one, runc.
    docker = Docker(box, Path(shutil.which("runc")))
    docker.start()
    return docker


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory, pyctr_root):
    """An OCI layout built by umoci: layer 1 the minirootfs, layer 2 adds /the/file."""
    tarballs = sorted((pyctr_root / "images" / "_cache").glob("alpine-minirootfs-*.tar.gz"))
    assert tarballs, f"pyctr pull alpine left no minirootfs tarball in {pyctr_root}/images/_cache"
    work = tmp_path_factory.mktemp("umoci")
    layout, bundle, image = work / "layout", work / "bundle", f"{work / 'layout'}:t"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", image])
    run(["umoci", "unpack", "--image", image, bundle])
    run(["tar", "-xzf", tarballs[-1], "-C", bundle / "rootfs", "--numeric-owner"])
    run(["umoci", "repack", "--refresh-bundle", "--image", image, bundle])
    (bundle / "rootfs" / "the").mkdir()
    (bundle / "rootfs" / "the" / "file").write_text(THE_FILE)
    run(["umoci", "repack", "--image", image, bundle])
    run(["umoci", "config", "--image", image, "--config.cmd", "/bin/sh",
         "--config.env", PATH_ENV, "--config.env", "GREETING=hello"])
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = (blobs / manifest["config"]["digest"][7:]).read_bytes()
    layers = [oci.Layer(d["digest"], d["mediaType"], d["size"]) for d in manifest["layers"]]
    assert [layer.compression for layer in layers] == ["gzip", "gzip"]
    # The first layer alone is an image too: it shares its layer with the two-layer image.
    base = json.loads(config)
    base["rootfs"]["diff_ids"] = base["rootfs"]["diff_ids"][:1]
    base.pop("history", None)
    return SimpleNamespace(layout=layout, blobs=blobs, config=config, layers=layers,
                           diff_ids=json.loads(config)["rootfs"]["diff_ids"],
                           base_config=json.dumps(base).encode(), minirootfs=tarballs[-1])


def stock(image) -> None:
    """Copy the test image's blobs into the current blob store, as a pull would leave them."""
    oci.blobs_dir().mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        shutil.copyfile(image.blobs / layer.digest[7:], oci.blob_path(layer.digest))


@pytest.fixture(scope="module")
def loaded(docker, two_layers, tmp_path_factory):
    """Both test images written by write_docker_archive and loaded into dockerd."""
    work = tmp_path_factory.mktemp("written")
    with private_store(work):
        stock(two_layers)
        out = work / "images.tar"
        archive.write_docker_archive(str(out), [
            archive.ImageToSave([TWO], two_layers.config, two_layers.layers),
            archive.ImageToSave([BASE], two_layers.base_config, two_layers.layers[:1]),
        ])
    result = docker("load", "-i", out, timeout=120)
    return SimpleNamespace(archive=out, output=result.stdout)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    return digest(path.read_bytes())


# -- pyctr writes, docker loads -----------------------------------------------------------------


def test_written_archive_loads_into_docker_with_its_id_and_tags(docker, loaded, two_layers):
    assert f"Loaded image: {TWO}\n" in loaded.output and f"Loaded image: {BASE}\n" in loaded.output
    for ref, config in ((TWO, two_layers.config), (BASE, two_layers.base_config)):
        [inspected] = json.loads(docker("image", "inspect", ref).stdout)
        assert inspected["Id"] == digest(config)
        assert inspected["RepoTags"] == [ref]
        assert inspected["RootFS"]["Layers"] == json.loads(config)["rootfs"]["diff_ids"]
        assert inspected["Config"]["Cmd"] == ["/bin/sh"]


def test_written_archive_runs_in_docker(docker, loaded):
    ran = docker("run", "--rm", "--network", "none", TWO, "sh", "-c", "cat /the/file; echo $GREETING")
    assert ran.stdout == THE_FILE + "hello\n"
    base = docker("run", "--rm", "--network", "none", BASE, "sh", "-c",
                  "test -e /the/file && echo present || echo absent")
    assert base.stdout == "absent\n"


def test_written_archive_has_plain_layers_each_once(loaded, two_layers):
    with tarfile.open(loaded.archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        repositories = json.load(tar.extractfile("repositories"))
        layer_tars = [m for m in tar if m.name.endswith("/layer.tar")]
        # the shared first layer once; each written uncompressed, with its diff_id's sha256
        assert sorted(digest(tar.extractfile(m).read()) for m in layer_tars) == sorted(two_layers.diff_ids)
    assert [image["RepoTags"] for image in manifest] == [[TWO], [BASE]]
    assert manifest[1]["Layers"] == manifest[0]["Layers"][:1]
    assert manifest[0]["Config"] == digest(two_layers.config)[7:] + ".json"
    assert repositories == {"pyctr-test/two": {"1": manifest[0]["Layers"][1].split("/")[0]},
                            "pyctr-test/base": {"1": manifest[1]["Layers"][0].split("/")[0]}}


# -- docker (and others) write, pyctr reads -----------------------------------------------------


def assert_read_back(contents, config: bytes, tags: list[str]) -> None:
    """The image is there with its ID and tags, every blob in the store and good, and each
    layer's tar is its config's diff_id."""
    [content] = [c for c in contents if c.image_id == digest(config)]
    assert content.config == config and content.repo_tags == tags
    assert oci.has_blob(content.image_id) and file_digest(oci.blob_path(content.image_id)) == content.image_id
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    assert len(content.layers) == len(diff_ids)
    for layer, diff_id in zip(content.layers, diff_ids):
        blob = oci.blob_path(layer.digest)
        assert file_digest(blob) == layer.digest and blob.stat().st_size == layer.size
        assert compression.uncompressed_digest(blob, layer.digest, layer.compression)[0] == diff_id


def only_blobs(blobs: Path) -> set[str]:
    """The blob store holds only blobs whose name is their sha256: no temporary files."""
    names = set(os.listdir(blobs)) if blobs.exists() else set()
    for name in names:
        assert file_digest(blobs / name) == f"sha256:{name}", f"{name} in the blob store is not its sha256"
    return names


def test_docker_save_reads_back(docker, loaded, two_layers, blob_store, tmp_path):
    saved = tmp_path / "saved.tar"
    docker("save", "-o", saved, TWO, BASE, timeout=120)
    with tarfile.open(saved) as tar:  # Docker 20.10's layout: v1 layer folders and repositories
        names = tar.getnames()
    assert "repositories" in names and any(n.endswith("/layer.tar") for n in names)

    contents = archive.read_docker_archive(saved)
    assert len(contents) == 2
    assert_read_back(contents, two_layers.config, [TWO])
    assert_read_back(contents, two_layers.base_config, [BASE])
    two, base = sorted(contents, key=lambda c: -len(c.layers))
    assert base.layers == two.layers[:1]  # the shared layer is one blob
    assert [layer.compression for layer in two.layers] == ["", ""]  # docker saves plain tars
    assert only_blobs(blob_store) == {d[7:] for d in [*two_layers.diff_ids, two.image_id, base.image_id]}


def test_skopeo_archive_with_symlinked_layers_reads_back(two_layers, blob_store, tmp_path):
    out = tmp_path / "skopeo.tar"
    run([*SKOPEO, "copy", "--quiet", f"oci:{two_layers.layout}:t", f"docker-archive:{out}:{TWO}"],
        timeout=120)
    with tarfile.open(out) as tar:  # skopeo's legacy layer folders link to the layer files
        assert any(m.issym() and m.name.endswith("/layer.tar") for m in tar)
    assert_read_back(archive.read_docker_archive(out), two_layers.config, [TWO])


def oci_shaped_archive(out: Path, image, layers: list[tuple[str, bytes]], tags=(TWO,)) -> Path:
    """Docker 25's layout: manifest.json beside an OCI layout, its paths blobs/sha256/HEX."""
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": b'{"manifests":[]}',
               f"blobs/sha256/{digest(image.config)[7:]}": image.config}
    members.update((f"blobs/sha256/{d[7:]}", data) for d, data in layers)
    members["manifest.json"] = json.dumps([{
        "Config": f"blobs/sha256/{digest(image.config)[7:]}", "RepoTags": list(tags),
        "Layers": [f"blobs/sha256/{d[7:]}" for d, _ in layers]}]).encode()
    return write_tar(out, [(name, data) for name, data in members.items()])


def test_oci_shaped_archive_with_gzip_and_zstd_layers(two_layers, blob_store, tmp_path):
    zstandard = pytest.importorskip("zstandard")
    first = (two_layers.blobs / two_layers.layers[0].digest[7:]).read_bytes()
    second = zstandard.ZstdCompressor().compress(
        gzip.decompress((two_layers.blobs / two_layers.layers[1].digest[7:]).read_bytes()))
    out = oci_shaped_archive(tmp_path / "oci-shaped.tar", two_layers,
                             [(digest(first), first), (digest(second), second)])
    [content] = archive.read_docker_archive(out)
    assert_read_back([content], two_layers.config, [TWO])
    assert [layer.digest for layer in content.layers] == [digest(first), digest(second)]
    assert [layer.compression for layer in content.layers] == ["gzip", "zstd"]

    # and written again, each layer decompressed to the tar its diff_id names
    again = tmp_path / "again.tar"
    archive.write_docker_archive(str(again), [archive.ImageToSave([TWO], content.config, content.layers)])
    with tarfile.open(again) as tar:
        written = [digest(tar.extractfile(m).read()) for m in tar if m.name.endswith("/layer.tar")]
    assert written == two_layers.diff_ids


def test_gzipped_archive_reads(loaded, two_layers, blob_store, tmp_path):
    """`docker save | gzip` is what people keep; docker load takes it, and so does pyctr."""
    packed = tmp_path / "images.tar.gz"
    packed.write_bytes(gzip.compress(loaded.archive.read_bytes(), compresslevel=1))
    assert archive.archive_kind(packed) == "docker-archive"
    assert_read_back(archive.read_docker_archive(packed), two_layers.config, [TWO])


# -- hostile and broken archives ---------------------------------------------------------------


def write_tar(out: Path, members: list) -> Path:
    """members: (name, bytes) for files, (name, ("symlink" | "hardlink", target)) for links."""
    with tarfile.open(out, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out


def small_layer(text: str = "hello\n") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


def small_archive(out: Path, kind: str) -> Path:
    """A sound one-layer docker-archive, or one broken as `kind` says."""
    layer = small_layer()
    diff_ids = [digest(layer)]
    layers = ["l1/layer.tar"]
    extra = []
    if kind == "wrong-diff-id":
        layer = small_layer("not what the config says\n")
    elif kind == "count-mismatch":
        diff_ids.append(digest(layer))
    elif kind == "manifest-outside":
        layers = ["../outside/layer.tar"]
    elif kind == "manifest-absolute":
        layers = ["/etc/passwd"]
    elif kind == "missing-layer":
        layers = ["nothere/layer.tar"]
    elif kind == "dotdot-member":
        extra = [("../x", b"escape")]
    elif kind == "absolute-member":
        extra = [("/x", b"escape")]
    elif kind == "symlink-out":
        layers = ["l2/layer.tar"]
        extra = [("l2/layer.tar", ("symlink", "../../etc/passwd"))]
    elif kind == "hardlink-out":
        extra = [("l2/layer.tar", ("hardlink", "../etc/passwd"))]
    elif kind == "symlink-inside":  # sound: as Docker writes a layer used twice
        layers = ["l2/layer.tar"]
        extra = [("l2/layer.tar", ("symlink", "../l1/layer.tar"))]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = [{"Config": f"{digest(config)[7:]}.json", "RepoTags": ["small:1"], "Layers": layers}]
    if kind == "legacy-tags":  # sound: tags only in the repositories file, as Docker 1.10 wrote
        manifest[0]["RepoTags"] = None
        extra = [("repositories", json.dumps({"small": {"1": "l1"}}).encode())]
    manifest = json.dumps(manifest).encode()
    return write_tar(out, [("l1/layer.tar", layer), (f"{digest(config)[7:]}.json", config),
                           *extra, ("manifest.json", manifest)])


HOSTILE = {
    "dotdot-member": "entry '../x' climbs out of the archive with '..'",
    "absolute-member": "entry '/x' is an absolute path",
    "symlink-out": "entry 'l2/layer.tar' is a link to '../../etc/passwd', outside the archive",
    "hardlink-out": "entry 'l2/layer.tar' is a link to '../etc/passwd', outside the archive",
    "manifest-outside": "manifest.json names a layer '../outside/layer.tar', outside the archive",
    "manifest-absolute": "manifest.json names a layer '/etc/passwd', outside the archive",
    "missing-layer": "manifest.json names a layer 'nothere/layer.tar', which is not in the archive",
    "wrong-diff-id": "layer 1 (l1/layer.tar) is not the layer its config names",
    "count-mismatch": "its config lists 2 layers (rootfs.diff_ids), manifest.json names 1",
    "not-a-tar": "not a readable tar archive",
    "blob-name-mismatch": "does not match its name",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_refused_in_one_line(kind, run_pyctr, fresh_env, tmp_path):
    out = tmp_path / f"{kind}.tar"
    if kind == "not-a-tar":
        out.write_bytes(os.urandom(4096))
    elif kind == "blob-name-mismatch":
        layer = small_layer()
        config = json.dumps({"os": "linux", "rootfs": {"type": "layers",
                                                       "diff_ids": [digest(layer)]}}).encode()
        image = SimpleNamespace(config=config)
        oci_shaped_archive(out, image, [(digest(b"something else"), layer)], tags=("small:1",))
    else:
        small_archive(out, kind)
    loaded = run_pyctr("load", "-i", out, env=fresh_env)
    assert loaded.returncode == 125, loaded.stderr
    assert loaded.stderr.startswith("Error: ") and loaded.stderr.count("\n") == 1, loaded.stderr
    assert HOSTILE[kind] in loaded.stderr
    assert only_blobs(Path(fresh_env["PYCTR_ROOT"]) / "images" / "_blobs" / "sha256") == set()


@pytest.mark.parametrize("kind", ["sound", "symlink-inside", "legacy-tags"])
def test_sound_small_archive_reads(kind, blob_store, tmp_path):
    """The hostile archives above differ from these in the one way each test names."""
    [content] = archive.read_docker_archive(small_archive(tmp_path / "small.tar", kind))
    assert content.repo_tags == ["small:1"]
    assert [layer.digest for layer in content.layers] == [digest(small_layer())]
    assert only_blobs(blob_store) == {content.image_id[7:], digest(small_layer())[7:]}


def test_write_refuses_a_layer_that_is_not_its_diff_id(two_layers, blob_store, tmp_path):
    stock(two_layers)
    config = json.loads(two_layers.config)
    config["rootfs"]["diff_ids"][1] = digest(b"another tar")
    out = tmp_path / "out.tar"
    with pytest.raises(PyctrError, match=r"is not the layer its config names: diff_id sha256:"):
        archive.write_docker_archive(str(out), [([TWO], json.dumps(config).encode(), two_layers.layers)])
    missing = oci.Layer(digest(b"nowhere"), two_layers.layers[0].media_type, 7)
    with pytest.raises(PyctrError, match=r"is missing from the blob store"):
        archive.write_docker_archive(str(out), [([TWO], two_layers.config, [two_layers.layers[0], missing])])
    assert os.listdir(tmp_path) == ["store"]  # no archive, no temporary file


def test_load_refuses_a_missing_file_and_a_terminal(run_pyctr, fresh_env, tmp_path):
    missing = run_pyctr("load", "-i", tmp_path / "nothere.tar", env=fresh_env)
    assert (missing.returncode, missing.stderr) == (125, f"Error: open {tmp_path}/nothere.tar: no such file\n")
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", "load"], env=fresh_env,
                          encoding="utf-8", timeout=30)
    child.expect("Error: requested load from stdin, but stdin is a terminal")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 125


# -- pyctr save of today's images (one rootfs folder) ------------------------------------------


@pytest.fixture
def alpine_env(run_pyctr, fresh_env):
    """A private store with alpine pulled from the tests' mirror."""
    pulled = run_pyctr("pull", "-q", "alpine", env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    return fresh_env


def save(run_pyctr, env, out: Path, *refs) -> dict:
    """`pyctr save -o OUT REFS`; the archive's manifest.json entry."""
    saved = run_pyctr("save", "-o", out, *refs, env=env)
    assert saved.returncode == 0 and saved.stdout == "", saved.stderr
    with tarfile.open(out) as tar:
        return json.load(tar.extractfile("manifest.json"))


def test_pyctr_save_alpine_loads_and_runs_in_docker(docker, run_pyctr, alpine_env, tmp_path):
    [record] = json.loads(run_pyctr("images", "--format", "json", env=alpine_env).stdout)
    version = run_pyctr("run", "--rm", "--network", "none", "alpine", "cat", "/etc/alpine-release",
                        env=alpine_env).stdout.strip()
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    [image] = save(run_pyctr, alpine_env, first, "alpine")
    assert save(run_pyctr, alpine_env, second, "alpine:latest") == [image]
    assert first.read_bytes() == second.read_bytes()  # saved twice: the same image, byte for byte
    assert oct(first.stat().st_mode & 0o777) == "0o600"  # as docker save -o
    with open(tmp_path / "stdout.tar", "wb") as out:  # without -o: to stdout, when it is no terminal
        to_stdout = subprocess.run([sys.executable, "-m", "pyctr.runtime", "save", "alpine"],
                                   env=alpine_env, stdout=out, stderr=subprocess.PIPE, timeout=60)
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert (tmp_path / "stdout.tar").read_bytes() == first.read_bytes()

    loaded = docker("load", "-i", first, timeout=120)
    assert loaded.stdout == "Loaded image: alpine:latest\n"
    [inspected] = json.loads(docker("image", "inspect", "alpine:latest").stdout)
    assert inspected["Id"] == "sha256:" + image["Config"].removesuffix(".json")
    assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")
    ran = docker("run", "--rm", "--network", "none", "alpine:latest", "cat", "/etc/alpine-release")
    assert ran.stdout.strip() == version

    # By ID: no tags, as docker save does.
    [by_id] = save(run_pyctr, alpine_env, tmp_path / "by-id.tar", record["Id"][:12])
    assert by_id["RepoTags"] is None and by_id["Config"] == image["Config"]


def test_pyctr_save_without_the_source_tarball_tars_the_rootfs(docker, run_pyctr, alpine_env, tmp_path):
    """No tarball in the download cache (nor in the blob store): the layer is the rootfs folder,
    tarred the same way each time, with owners and modes intact."""
    images = Path(alpine_env["PYCTR_ROOT"]) / "images"
    for tarball in (images / "_cache").glob("*.tar.gz"):
        tarball.unlink()
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    [image] = save(run_pyctr, alpine_env, first, "alpine")
    shutil.rmtree(images / "_blobs")
    assert save(run_pyctr, alpine_env, second, "alpine") == [image]
    assert first.read_bytes() == second.read_bytes()

    docker("load", "-i", first, timeout=120)
    [inspected] = json.loads(docker("image", "inspect", "alpine:latest").stdout)
    assert inspected["Id"] == "sha256:" + image["Config"].removesuffix(".json")
    ran = docker("run", "--rm", "--network", "none", "alpine:latest", "stat", "-c", "%a %u:%g %n",
                 "/tmp", "/etc/shadow", "/bin/busybox")
    assert ran.stdout.split("\n")[:3] == ["1777 0:0 /tmp", "640 0:42 /etc/shadow", "755 0:0 /bin/busybox"]


def test_save_refuses_a_terminal_and_unknown_images(run_pyctr, pyctr_env):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "pyctr.runtime", "save", "alpine"], env=pyctr_env,
                          encoding="utf-8", timeout=30)
    child.expect("Error: cowardly refusing to save to a terminal. Use the -o flag or redirect")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 125
    unknown = run_pyctr("save", "-o", "/dev/null", "nosuch:1")
    assert (unknown.returncode, unknown.stderr) == (125, "Error: No such image: nosuch:1\n")


# -- pyctr load of what docker saved, and back ---------------------------------------------------


def test_docker_saved_image_loads_and_runs_in_pyctr(docker, loaded, run_pyctr, fresh_env, tmp_path):
    saved = tmp_path / "saved.tar"
    docker("save", "-o", saved, TWO, timeout=120)
    result = run_pyctr("load", "-i", saved, env=fresh_env)
    assert (result.returncode, result.stdout) == (0, f"Loaded image: {TWO}\n"), result.stderr
    ran = run_pyctr("run", "--rm", "--network", "none", TWO, "cat", "/the/file", env=fresh_env)
    assert (ran.returncode, ran.stdout) == (0, THE_FILE), ran.stderr

    # and back: pyctr save of the loaded image is the same image for docker
    again = tmp_path / "again.tar"
    [image] = save(run_pyctr, fresh_env, again, TWO)
    [inspected] = json.loads(docker("image", "inspect", TWO).stdout)
    assert inspected["Id"] == "sha256:" + image["Config"].removesuffix(".json")
    stdin_load = subprocess.run([sys.executable, "-m", "pyctr.runtime", "load"], stdin=open(again, "rb"),
                                env=fresh_env, capture_output=True, text=True, timeout=120)
    assert (stdin_load.returncode, stdin_load.stdout) == (0, f"Loaded image: {TWO}\n"), stdin_load.stderr
