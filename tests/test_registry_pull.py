"""Registry images end to end (issue 11): `pyctr pull` and `pyctr run` of images that skopeo
pushed to a private docker-registry on 127.0.0.1, through the CLI, and the walk-through's ending:
one container serves a page, another on the same bridge network fetches it.

The images are built offline from the Alpine minirootfs with umoci (tests/imagebuild.py): a
two-layer image whose second layer deletes a file and makes an opaque folder, an image with
Entrypoint, Cmd, Env, WorkingDir and User, and a web image whose httpd is Debian's static busybox.
"""

import json
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import SHARED_MIRROR
from imagebuild import ALPINE_TARBALL, OciLayout, layer_member
from netsandbox import PYTHON, Sandbox, build_cluster, eventually, pull_alpine, run
from registryserver import Htpasswd, TokenServer, registries, test_layout  # noqa: F401

STATIC_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (scripts/setup.sh --dev)
PAGE = b"<h1>Welcome to pyctr!</h1>\n"
USERS = {"alice": "wonderland"}

pytestmark = pytest.mark.skipif(not (SHARED_MIRROR / ALPINE_TARBALL).is_file(), reason="needs the local Alpine mirror")


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> OciLayout:
    """base, two (a whiteout and an opaque folder), configured, and web, in one OCI layout."""
    work = tmp_path_factory.mktemp("pull-images")
    images = OciLayout(work / "layout")
    images.base("base", SHARED_MIRROR / ALPINE_TARBALL, work)
    images.add_layer("base", "two", [
        layer_member("etc/", tarfile.DIRTYPE, mode=0o755),
        layer_member("etc/.wh.motd"),
        layer_member("etc/apk/", tarfile.DIRTYPE, mode=0o755),
        layer_member("etc/apk/.wh..wh..opq"),
        layer_member("etc/apk/fresh", data=b"fresh\n"),
    ], work)
    images.configure("base", "configured", "--config.entrypoint", "/bin/echo", "--config.entrypoint", "ep",
                     "--config.cmd", "default", "--config.env", "GREETING=hello",
                     "--config.workingdir", "/srv", "--config.user", "nobody")
    if STATIC_BUSYBOX.is_file():
        images.add_layer("base", "web-files", [
            layer_member("opt/", tarfile.DIRTYPE, mode=0o755),
            layer_member("opt/busybox", data=STATIC_BUSYBOX.read_bytes(), mode=0o755),
            layer_member("www/", tarfile.DIRTYPE, mode=0o755),
            layer_member("www/index.html", data=PAGE),
        ], work)
        images.configure("web-files", "web", "--config.entrypoint", "/opt/busybox",
                         "--config.cmd", "httpd", "--config.cmd", "-f", "--config.cmd", "-p",
                         "--config.cmd", "80", "--config.cmd", "-h", "--config.cmd", "/www",
                         "--config.exposedports", "80/tcp")
    return images


@pytest.fixture
def plain(registries, layout):  # noqa: F811
    server = registries()
    for tag in ("two", "configured"):
        server.push(layout.folder, tag, f"pyctr/{tag}:1")
    return server


def one_error_line(stderr: str) -> bool:
    """docker pull's progress lines, then one error line at the end."""
    lines = stderr.splitlines()
    return bool(lines) and lines[-1].startswith("Error: ") and sum(line.startswith("Error") for line in lines) == 1


def pulled_id(run_pyctr, env, ref: str) -> str:
    return json.loads(run_pyctr("image", "inspect", ref, env=env).stdout)[0]["Id"]


def test_pull_then_run_a_layered_image_from_a_registry(run_pyctr, fresh_env, plain, layout):
    ref = f"{plain.host}/pyctr/two:1"
    pulled = run_pyctr("pull", ref, env=fresh_env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == f"{ref}\n"  # docker pull's last line: the reference pulled
    lines = pulled.stderr.splitlines()
    assert lines[0] == "1: Pulling from " + f"{plain.host}/pyctr/two"
    layers = layout.manifest("two")["layers"]
    for layer in layers:  # without a terminal: one line per layer
        assert [line for line in lines if line.startswith(layer["digest"][7:19])] == \
            [f"{layer['digest'][7:19]}: Pull complete"]
    assert lines[-1] == f"Status: Downloaded newer image for {ref}"

    image = json.loads(run_pyctr("image", "inspect", ref, env=fresh_env).stdout)[0]
    assert image["Id"] == layout.manifest("two")["config"]["digest"]
    assert image["RepoTags"] == [ref]
    assert image["RepoDigests"][0].startswith(f"{plain.host}/pyctr/two@sha256:")
    assert image["RootFS"]["Layers"] == layout.config("two")["rootfs"]["diff_ids"]

    ran = run_pyctr("run", "--rm", "--network", "none", ref, "sh", "-c",
                    "test ! -e /etc/motd && ls /etc/apk", env=fresh_env)
    assert (ran.returncode, ran.stdout) == (0, "fresh\n"), ran.stderr

    again = run_pyctr("pull", ref, env=fresh_env)
    assert again.returncode == 0
    assert again.stderr.splitlines()[-1] == f"Status: Image is up to date for {ref}"
    assert all(f"{layer['digest'][7:19]}: Already exists" in again.stderr for layer in layers)


def test_run_pulls_what_is_missing_and_follows_the_image_config(run_pyctr, fresh_env, plain):
    ref = f"{plain.host}/pyctr/configured:1"
    ran = run_pyctr("run", "--rm", "--network", "none", ref, env=fresh_env)
    assert (ran.returncode, ran.stdout) == (0, "ep default\n"), ran.stderr
    assert ran.stderr.startswith(f"Unable to find image '{ref}' locally\n")
    shown = run_pyctr("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c",
                      'echo "$GREETING $(pwd) $(id -un)"', env=fresh_env)
    assert (shown.returncode, shown.stdout) == (0, "hello /srv nobody\n"), shown.stderr


def test_an_index_gives_this_machines_image_unless_platform_says_otherwise(run_pyctr, fresh_env, registries,  # noqa: F811
                                                                          test_layout):  # noqa: F811
    server = registries()
    server.push(test_layout, "multi", "pyctr/multi:1", all_platforms=True)
    ref = f"{server.host}/pyctr/multi:1"
    assert run_pyctr("pull", ref, env=fresh_env).returncode == 0
    assert json.loads(run_pyctr("image", "inspect", ref, env=fresh_env).stdout)[0]["Architecture"] == "amd64"
    arm = run_pyctr("pull", "--platform", "linux/arm64", ref, env=fresh_env)
    assert arm.returncode == 0, arm.stderr
    image = json.loads(run_pyctr("image", "inspect", ref, env=fresh_env).stdout)[0]
    assert image["Architecture"] == "arm64"  # the variant is in the index, not in this config
    missing = run_pyctr("pull", "--platform", "linux/s390x", ref, env=fresh_env)
    assert missing.returncode == 125 and missing.stderr.count("Error:") == 1


def test_zstd_layers_pull_and_run(run_pyctr, fresh_env, registries, test_layout):  # noqa: F811
    server = registries()
    server.push(test_layout, "zstd", "pyctr/zstd:1")
    ref = f"{server.host}/pyctr/zstd:1"
    ran = run_pyctr("run", "--rm", "--network", "none", ref, "cat", "/etc/alpine-release", env=fresh_env)
    assert (ran.returncode, ran.stdout) == (0, "3.20.3\n"), ran.stderr


def test_docker_hub_names_go_to_the_registry_mirror_and_alpine_stays_the_alpine_mirrors(
        run_pyctr, fresh_env, registries, layout):  # noqa: F811
    server = registries()
    server.push(layout.folder, "two", "library/busybox:1")
    server.push(layout.folder, "configured", "library/alpine:3")
    env = {**fresh_env, "PYCTR_REGISTRY_MIRROR": server.url}
    assert run_pyctr("pull", "busybox:1", env=env).returncode == 0
    assert run_pyctr("pull", "docker.io/library/alpine:3", env=env).returncode == 0
    assert run_pyctr("pull", "alpine:3.20", env=env).returncode == 0  # the Alpine mirror
    tags = {tag for image in json.loads(run_pyctr("images", "--format", "json", env=env).stdout)
            for tag in image["RepoTags"]}
    assert tags == {"busybox:1", "docker.io/library/alpine:3", "alpine:3.20"}
    hub = run_pyctr("run", "--rm", "--network", "none", "docker.io/library/alpine:3", env=env)
    assert hub.stdout == "ep default\n", hub.stderr
    mirror = run_pyctr("run", "--rm", "--network", "none", "alpine:3.20", "cat", "/etc/alpine-release", env=env)
    assert mirror.stdout == "3.20.3\n"
    # The same image by its Docker Hub name, in full or short.
    assert pulled_id(run_pyctr, env, "docker.io/library/busybox:1") == pulled_id(run_pyctr, env, "busybox:1")


def test_basic_auth_needs_a_login_and_a_wrong_password_is_one_line(run_pyctr, fresh_env, registries, layout,  # noqa: F811
                                                                   tmp_path):
    server = registries(auth=Htpasswd(USERS))
    server.push(layout.folder, "two", "pyctr/two:1", creds="alice:wonderland")
    env = {**fresh_env, "DOCKER_CONFIG": str(tmp_path / "docker")}
    ref = f"{server.host}/pyctr/two:1"
    refused = run_pyctr("pull", ref, env=env)
    assert refused.returncode == 125
    assert one_error_line(refused.stderr)
    wrong = run_pyctr("login", "-u", "alice", "--password-stdin", server.host, input="nope\n", env=env)
    assert wrong.returncode == 125 and wrong.stderr.count("\n") == 1
    login = run_pyctr("login", "-u", "alice", "--password-stdin", server.host, input="wonderland\n", env=env)
    assert login.returncode == 0 and "Login Succeeded" in login.stdout
    assert run_pyctr("pull", ref, env=env).returncode == 0
    assert not list((Path(env["PYCTR_ROOT"]) / "images" / "_blobs" / "sha256").glob("*.part"))


def test_bearer_tokens_anonymous_and_with_a_login(run_pyctr, fresh_env, registries, layout, tmp_path):  # noqa: F811
    tokens = TokenServer(USERS, anonymous=True)
    server = registries(auth=tokens)
    server.push(layout.folder, "two", "pyctr/two:1", creds="alice:wonderland")
    env = {**fresh_env, "DOCKER_CONFIG": str(tmp_path / "docker")}
    ref = f"{server.host}/pyctr/two:1"
    anonymous = run_pyctr("pull", ref, env=env)
    assert anonymous.returncode == 0, anonymous.stderr
    login = run_pyctr("login", "-u", "alice", "--password-stdin", server.host, input="wonderland\n", env=env)
    assert login.returncode == 0, login.stderr
    ran = run_pyctr("run", "--rm", "--network", "none", ref, "cat", "/etc/apk/fresh", env=env)
    assert (ran.returncode, ran.stdout) == (0, "fresh\n"), ran.stderr


def test_a_changed_blob_is_one_line_and_stores_nothing(run_pyctr, fresh_env, plain, layout):
    layer = layout.manifest("two")["layers"][-1]["digest"]
    blob = plain.blob_file(layer)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    pulled = run_pyctr("pull", f"{plain.host}/pyctr/two:1", env=fresh_env)
    assert pulled.returncode == 125
    assert one_error_line(pulled.stderr) and layer[7:19] in pulled.stderr.splitlines()[-1], pulled.stderr
    images = Path(fresh_env["PYCTR_ROOT"]) / "images"
    assert not (images / "_blobs" / "sha256" / layer[7:]).exists()
    assert not list((images / "_blobs" / "sha256").glob("*.part"))
    assert json.loads(run_pyctr("images", "--format", "json", env=fresh_env).stdout) == []


# --- the walk-through's ending --------------------------------------------------------------
@pytest.fixture(scope="module")
def one_node():
    sandbox = Sandbox()
    try:
        images = pull_alpine(sandbox.dir / "images-root")
        yield SimpleNamespace(sandbox=sandbox, images=images, **build_cluster(sandbox, images))
    finally:
        sandbox.close()


@pytest.mark.skipif(not STATIC_BUSYBOX.is_file(), reason="needs Debian's busybox-static (setup.sh --dev)")
def test_a_container_serves_a_page_that_another_fetches_on_one_bridge(one_node, registries, layout):  # noqa: F811
    server = registries()
    server.push(layout.folder, "web", "pyctr/web:1")
    ref = f"{server.host}/pyctr/web:1"
    # Pulled in this (the host's) namespace, where the registry listens: the nodes share the store.
    images_root = one_node.images.parent
    run([PYTHON, "-m", "pyctr.runtime", "pull", ref],
        env={**os.environ, "PYCTR_ROOT": str(images_root), "PYCTR_STATE": str(images_root / "state")})
    node1 = one_node.node1
    node1.start("--name", "web", ref)
    node1.start("--name", "client", "alpine", "sleep", "600")
    web_ip = node1.ip_of("web")
    assert "80/tcp" in node1.inspect("web", "{{json .Config.ExposedPorts}}")
    page = eventually(lambda: node1.exec("client", f"wget -qO- http://{web_ip}/", check=False).stdout or None)
    assert page == PAGE.decode()
    node1.pyctr("rm", "-f", "web", "client")
