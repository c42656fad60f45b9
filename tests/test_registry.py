"""Registry images, the registry side (issue 11): references, pulls from a real registry (Debian's
docker-registry on 127.0.0.1) without auth, with htpasswd Basic auth and with token auth, and
`pyctr login` / `pyctr logout` with Docker's config file.

registry.fetch is called in this process (`pyctr pull` of registry references is wired elsewhere);
login and logout run through the CLI. Faults are real: a blob changed in the registry's storage,
a blob the registry lacks, a body cut short by a proxy on loopback, a wrong password.
"""

import base64
import hashlib
import http.server
import io
import json
import os
import stat
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests

from registryserver import (Htpasswd, TokenServer, layout_digest, layout_manifest, registries,  # noqa: F401
                            test_layout)

from pyctr.images import credentials, oci, reference, registry
from pyctr.images.progress import PullProgress
from pyctr.runtime import settings
from pyctr.runtime.errors import NotFoundError, PyctrError

USERS = {"alice": "wonderland"}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """A fresh pyctr root for this process's registry.fetch, and a Docker config folder of its own."""
    root = tmp_path / "root"
    for name, value in {"PYCTR_ROOT": root, "PYCTR_STATE": tmp_path / "state",
                        "DOCKER_CONFIG": tmp_path / "docker", "PYCTR_PULL_TIMEOUT": "5",
                        "PYCTR_PULL_RETRIES": "2", "PYCTR_PULL_BACKOFF": "0.05"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(settings, "_current", None)
    settings.configure()
    yield root
    monkeypatch.setattr(settings, "_current", None)


@pytest.fixture
def plain(registries, test_layout):
    """A registry without auth holding pyctr/base:1, pyctr/multi:1 (an index) and pyctr/zstd:1."""
    server = registries()
    server.push(test_layout, "base", "pyctr/base:1")
    server.push(test_layout, "multi", "pyctr/multi:1", all_platforms=True)
    server.push(test_layout, "zstd", "pyctr/zstd:1")
    return server


def stored_blobs(root: Path) -> list[str]:
    folder = root / "images/_blobs/sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def ref(server, name: str) -> reference.Reference:
    return reference.parse(f"{server.host}/{name}")


class Events:
    """A report for registry.fetch that keeps what it is told."""

    def __init__(self):
        self.events = []

    def __call__(self, layer, status, current=None, total=None):
        self.events.append((layer, status))

    def statuses(self, layer: str) -> list[str]:
        return [s for l, s in self.events if l == layer and s != "Downloading"]


# -- references -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, registry_, repository, tag, digest, familiar", [
    ("nginx", "docker.io", "library/nginx", "latest", None, "nginx:latest"),
    ("nginx:alpine", "docker.io", "library/nginx", "alpine", None, "nginx:alpine"),
    ("team/app", "docker.io", "team/app", "latest", None, "team/app:latest"),
    ("docker.io/library/alpine", "docker.io", "library/alpine", "latest", None, "docker.io/library/alpine:latest"),  # not the mirror's alpine
    ("index.docker.io/library/busybox:1", "docker.io", "library/busybox", "1", None, "busybox:1"),
    ("localhost:5000/team/app:1", "localhost:5000", "team/app", "1", None, "localhost:5000/team/app:1"),
    ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
    ("127.0.0.1:5000/a/b/c:v1.2-rc_3", "127.0.0.1:5000", "a/b/c", "v1.2-rc_3", None, "127.0.0.1:5000/a/b/c:v1.2-rc_3"),
    ("[::1]:5000/app", "[::1]:5000", "app", "latest", None, "[::1]:5000/app:latest"),
    ("nginx@sha256:" + "a" * 64, "docker.io", "library/nginx", None, "sha256:" + "a" * 64, None),
    ("my.registry/x_y__z-w:t@sha256:" + "b" * 64, "my.registry", "x_y__z-w", "t", "sha256:" + "b" * 64,
     "my.registry/x_y__z-w:t"),
])
def test_references_parse_as_dockers(text, registry_, repository, tag, digest, familiar):
    parsed = reference.parse(text)
    assert (parsed.registry, parsed.repository, parsed.tag, parsed.digest) == (registry_, repository, tag, digest)
    assert parsed.repo_tag == familiar
    assert parsed.repo_digest("sha256:" + "c" * 64).endswith("@sha256:" + "c" * 64)
    assert reference.parse(str(parsed)) == parsed  # the full form reads back the same


def test_repo_digests_use_the_familiar_name():
    assert reference.parse("nginx:alpine").repo_digest("sha256:" + "d" * 64) == "nginx@sha256:" + "d" * 64
    assert (reference.parse("localhost:5000/team/app:1").repo_digest("sha256:" + "d" * 64)
            == "localhost:5000/team/app@sha256:" + "d" * 64)


@pytest.mark.parametrize("text", [
    "", "Nginx", "team/UPPER", "nginx:", "nginx:-tag", "nginx:" + "t" * 129, "a b", "/x", "x//y", "x/",
    "x__-y", "-x", "nginx@sha256:abc", "nginx@md5:" + "a" * 32, "nginx@", "host:port:bad/x",
    "a" * 64, "x/" + "y" * 255,
])
def test_bad_references_are_one_line_errors(text):
    with pytest.raises(PyctrError) as caught:
        reference.parse(text)
    assert caught.value.exit_code == 125 and "\n" not in str(caught.value)


@pytest.mark.parametrize("text, mirror", [
    ("alpine", True), ("alpine:latest", True), ("alpine:edge", True), ("alpine:3.20", True),
    ("alpine:3.20.3", True), ("docker.io/library/alpine", False), ("library/alpine", False),
    ("alpine@sha256:" + "a" * 64, False), ("alpine:3", True), ("alpine:stable", True), ("nginx", False),
])
def test_alpine_names_stay_the_mirrors(text, mirror):
    assert reference.is_alpine_mirror_name(text) is mirror


def test_where_registries_are(monkeypatch):
    monkeypatch.delenv("PYCTR_REGISTRY_MIRROR", raising=False)
    monkeypatch.delenv("PYCTR_INSECURE_REGISTRIES", raising=False)
    assert reference.registry_url("docker.io") == "https://registry-1.docker.io"
    assert reference.registry_url("localhost:5000") == "http://localhost:5000"
    assert reference.registry_url("127.3.4.5:80") == "http://127.3.4.5:80"
    assert reference.registry_url("[::1]:5000") == "http://[::1]:5000"
    assert reference.registry_url("registry.example:5000") == "https://registry.example:5000"
    assert reference.registry_url("10.0.0.1") == "https://10.0.0.1"
    monkeypatch.setenv("PYCTR_INSECURE_REGISTRIES", "registry.example:5000, 10.0.0.1")
    assert reference.registry_url("registry.example:5000") == "http://registry.example:5000"
    assert reference.registry_url("registry.example:6000") == "https://registry.example:6000"
    assert reference.registry_url("10.0.0.1:5000") == "http://10.0.0.1:5000"
    monkeypatch.setenv("PYCTR_REGISTRY_MIRROR", "http://127.0.0.1:5001/")
    assert reference.registry_url("docker.io") == "http://127.0.0.1:5001"
    assert reference.registry_url("docker.io", mirror=False) == "https://registry-1.docker.io"


def test_platforms():
    assert str(registry.parse_platform("linux/arm64")) == "linux/arm64"
    assert str(registry.parse_platform("linux/aarch64/v8")) == "linux/arm64/v8"
    assert str(registry.parse_platform("linux/x86_64")) == "linux/amd64"
    for bad in ("linux", "linux/", "a/b/c/d", "linux/arm 64"):
        with pytest.raises(PyctrError):
            registry.parse_platform(bad)
    if os.uname().machine == "x86_64":
        assert registry.host_platform() == registry.Platform("linux", "amd64")


# -- pulls ------------------------------------------------------------------------------------


def test_fetch_stores_the_verified_config_and_layers(store, plain, test_layout):
    events = Events()
    content = registry.fetch(ref(plain, "pyctr/base:1"), report=events)

    manifest = layout_manifest(test_layout, "base")
    assert content.image_id == manifest["config"]["digest"]
    assert content.config == oci.blob_path(manifest["config"]["digest"]).read_bytes()
    assert [layer.digest for layer in content.layers] == [d["digest"] for d in manifest["layers"]]
    assert content.layers[0].compression == "gzip"
    for digest in [manifest["config"]["digest"], *(d["digest"] for d in manifest["layers"])]:
        assert "sha256:" + hashlib.sha256(oci.blob_path(digest).read_bytes()).hexdigest() == digest
    assert stored_blobs(store) == sorted(d.removeprefix("sha256:") for d in
                                         [manifest["config"]["digest"], *(l["digest"] for l in manifest["layers"])])
    # The manifest digest is the registry's, and the names are Docker's familiar forms.
    head = requests.head(f"{plain.url}/v2/pyctr/base/manifests/1",
                         headers={"Accept": oci.OCI_MANIFEST}, timeout=5)
    assert content.manifest_digest == head.headers["Docker-Content-Digest"] == layout_digest(test_layout, "base")
    assert content.repo_tags == [f"{plain.host}/pyctr/base:1"]
    assert content.repo_digests == [f"{plain.host}/pyctr/base@{content.manifest_digest}"]
    assert content.source == f"{plain.url}/v2/pyctr/base/manifests/1"
    layer_id = content.layers[0].digest[7:19]
    assert events.statuses(layer_id) == ["Pulling fs layer", "Verifying Checksum", "Download complete"]
    assert (layer_id, "Downloading") in events.events


def test_blobs_already_stored_are_not_fetched_again(store, plain, tmp_path):
    registry.fetch(ref(plain, "pyctr/base:1"))
    with Proxy(plain.url) as proxy:
        events = Events()
        content = registry.fetch(reference.parse(f"{proxy.host}/pyctr/base:1"), report=events)
    assert not [path for path in proxy.hits if "/blobs/" in path]
    assert events.statuses(content.layers[0].digest[7:19]) == ["Already exists"]


def test_fetch_by_digest_checks_the_manifest_and_gives_no_tag(store, plain, test_layout):
    digest = layout_digest(test_layout, "base")
    content = registry.fetch(ref(plain, f"pyctr/base@{digest}"))
    assert content.manifest_digest == digest
    assert content.repo_tags == []
    assert content.repo_digests == [f"{plain.host}/pyctr/base@{digest}"]
    # Another manifest's digest is another manifest: the registry has none by that digest.
    other = layout_digest(test_layout, "zstd")
    with pytest.raises(NotFoundError, match="manifest .* not found"):
        registry.fetch(ref(plain, f"pyctr/base@{other}"))


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the test index has amd64 and arm64 only")
def test_an_index_gives_the_hosts_platform_or_the_one_asked_for(store, plain, test_layout):
    host = registry.fetch(ref(plain, "pyctr/multi:1"))
    assert json.loads(host.config)["architecture"] == "amd64"
    assert host.layers == registry.fetch(ref(plain, "pyctr/base:1")).layers
    assert host.manifest_digest == layout_digest(test_layout, "multi")  # the index's, as Docker's RepoDigests

    arm = registry.fetch(ref(plain, "pyctr/multi:1"), platform="linux/arm64")
    assert json.loads(arm.config)["architecture"] == "arm64"
    assert layer_files(arm.layers[0]) == {"platform": b"arm64\n"}
    assert registry.fetch(ref(plain, "pyctr/multi:1"), platform="linux/arm64/v8").config == arm.config

    with pytest.raises(PyctrError) as caught:
        registry.fetch(ref(plain, "pyctr/multi:1"), platform="linux/s390x")
    assert str(caught.value) == (f"no image for linux/s390x in {plain.host}/pyctr/multi:1 "
                                 "(it has linux/amd64, linux/arm64/v8)")
    with pytest.raises(PyctrError, match="is an image for linux/amd64, not linux/arm64"):
        registry.fetch(ref(plain, "pyctr/base:1"), platform="linux/arm64")


def test_a_zstd_layer(store, plain):
    import zstandard

    content = registry.fetch(ref(plain, "pyctr/zstd:1"))
    (layer,) = content.layers
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+zstd" and layer.compression == "zstd"
    tar = zstandard.ZstdDecompressor().stream_reader(open(oci.blob_path(layer.digest), "rb")).read()
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == json.loads(content.config)["rootfs"]["diff_ids"][0]


def test_schema1_is_refused(store, registries, test_layout):
    server = registries(schema1=True)
    server.push(test_layout, "base", "pyctr/old:1", dest_format="v2s1")
    assert requests.get(f"{server.url}/v2/pyctr/old/manifests/1", timeout=5).json()["schemaVersion"] == 1
    with pytest.raises(PyctrError) as caught:
        registry.fetch(ref(server, "pyctr/old:1"))
    assert "Docker schema 1 image" in str(caught.value) and caught.value.exit_code == 125
    assert stored_blobs(store) == []


def test_an_unknown_tag_or_repository(store, plain):
    with pytest.raises(NotFoundError, match=r"manifest for .*/pyctr/base:2 not found \(MANIFEST_UNKNOWN"):
        registry.fetch(ref(plain, "pyctr/base:2"))
    with pytest.raises(NotFoundError, match="not found"):
        registry.fetch(ref(plain, "pyctr/none:1"))


def test_the_registry_mirror_serves_docker_io(store, plain, monkeypatch):
    monkeypatch.setenv("PYCTR_REGISTRY_MIRROR", plain.url)
    content = registry.fetch(reference.parse("pyctr/base:1"))  # docker.io/pyctr/base:1
    assert content.repo_tags == ["pyctr/base:1"]
    assert content.source == f"{plain.url}/v2/pyctr/base/manifests/1"


# -- bad blobs --------------------------------------------------------------------------------


def test_a_blob_changed_in_the_registry_is_refused_and_nothing_stored(store, registries, test_layout):
    server = registries()
    server.push(test_layout, "base", "pyctr/base:1")
    layer = layout_manifest(test_layout, "base")["layers"][0]["digest"]
    data = bytearray(server.blob_file(layer).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    server.blob_file(layer).write_bytes(bytes(data))

    with pytest.raises(PyctrError) as caught:
        registry.fetch(ref(server, "pyctr/base:1"))
    assert str(caught.value).startswith(f"digest mismatch for blob {layer} from {server.host}")
    assert caught.value.exit_code == 125
    assert layer.removeprefix("sha256:") not in stored_blobs(store)
    assert not [name for name in stored_blobs(store) if name.startswith(".")]  # no leftovers


def test_a_blob_the_registry_lacks(store, registries, test_layout):
    server = registries()
    server.push(test_layout, "base", "pyctr/base:1")
    layer = layout_manifest(test_layout, "base")["layers"][0]["digest"]
    server.delete_blob("pyctr/base", layer)
    with pytest.raises(NotFoundError) as caught:
        registry.fetch(ref(server, "pyctr/base:1"))
    assert str(caught.value) == (f"the manifest names blob {layer}, which {server.host}/pyctr/base does not "
                                 "have (BLOB_UNKNOWN: blob unknown to registry)")
    assert layer.removeprefix("sha256:") not in stored_blobs(store)


def test_a_body_cut_short_is_retried_then_refused(store, plain, test_layout):
    layer = layout_manifest(test_layout, "base")["layers"][0]["digest"]
    blob_path = f"/v2/pyctr/base/blobs/{layer}"
    with Proxy(plain.url, cut=blob_path) as proxy:
        with pytest.raises(PyctrError) as caught:
            registry.fetch(reference.parse(f"{proxy.host}/pyctr/base:1"))
    assert proxy.hits[blob_path] == 3  # PYCTR_PULL_RETRIES=2: three tries
    assert str(caught.value).startswith(f"download of blob {layer} failed: ")
    assert str(caught.value).endswith("(3 tries)") and "\n" not in str(caught.value)
    assert layer.removeprefix("sha256:") not in stored_blobs(store)
    assert not [name for name in stored_blobs(store) if name.startswith(".")]


def test_a_cut_that_heals_is_retried_to_success(store, plain, test_layout):
    layer = layout_manifest(test_layout, "base")["layers"][0]["digest"]
    blob_path = f"/v2/pyctr/base/blobs/{layer}"
    with Proxy(plain.url, cut=blob_path, cut_times=1) as proxy:
        content = registry.fetch(reference.parse(f"{proxy.host}/pyctr/base:1"))
    assert proxy.hits[blob_path] == 2
    assert oci.has_blob(content.layers[0].digest)


# -- auth -------------------------------------------------------------------------------------


def write_docker_login(store: Path, host: str, user: str, password: str) -> None:
    """The config file as `docker login` writes it (tab-indented, auth = base64 of user:password)."""
    folder = Path(os.environ["DOCKER_CONFIG"])
    folder.mkdir(mode=0o700, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text('{\n\t"auths": {\n\t\t"%s": {\n\t\t\t"auth": "%s"\n\t\t}\n\t}\n}' % (host, auth))


def test_basic_auth_with_credentials_docker_login_stored(store, registries, test_layout):
    server = registries(auth=Htpasswd(USERS))
    server.push(test_layout, "base", "pyctr/base:1", creds="alice:wonderland")
    with pytest.raises(PyctrError, match=f"^{server.host} requires a login: pyctr login {server.host}$"):
        registry.fetch(ref(server, "pyctr/base:1"))

    write_docker_login(store, server.host, "alice", "wrong")
    with pytest.raises(PyctrError, match="^unauthorized: .* refused access to pull pyctr/base .*401"):
        registry.fetch(ref(server, "pyctr/base:1"))

    write_docker_login(store, server.host, "alice", "wonderland")
    content = registry.fetch(ref(server, "pyctr/base:1"))
    assert oci.has_blob(content.layers[0].digest)


def test_bearer_tokens_anonymous_and_with_credentials(store, registries, test_layout):
    tokens = TokenServer(USERS, anonymous=True)
    server = registries(auth=tokens)
    server.push(test_layout, "base", "pyctr/base:1", creds="alice:wonderland")

    registry.fetch(ref(server, "pyctr/base:1"))
    assert tokens.requests[-1] == {"scope": "repository:pyctr/base:pull", "account": "", "authorized": False,
                                   "granted": [{"type": "repository", "name": "pyctr/base", "actions": ["pull"]}]}
    asked = len(tokens.requests)

    write_docker_login(store, server.host, "alice", "wonderland")
    registry.fetch(ref(server, "pyctr/base:1"))
    assert len(tokens.requests) == asked + 1  # one token serves the whole pull
    assert tokens.requests[-1]["authorized"] and tokens.requests[-1]["account"] == "alice"


def test_bearer_without_anonymous_access(store, registries, test_layout):
    tokens = TokenServer(USERS, anonymous=False)
    server = registries(auth=tokens)
    server.push(test_layout, "base", "pyctr/base:1", creds="alice:wonderland")
    with pytest.raises(PyctrError, match="^unauthorized: the token server of .* refused an anonymous token"):
        registry.fetch(ref(server, "pyctr/base:1"))
    write_docker_login(store, server.host, "alice", "nope")
    with pytest.raises(PyctrError, match="refused the credentials of 'alice'"):
        registry.fetch(ref(server, "pyctr/base:1"))
    assert stored_blobs(store) == []


# -- login and logout (the CLI) ---------------------------------------------------------------


@pytest.fixture
def cli_env(fresh_env, tmp_path) -> dict:
    return fresh_env | {"DOCKER_CONFIG": str(tmp_path / "docker")}


def config_of(env: dict) -> dict:
    return json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text())


def test_login_and_logout_keep_dockers_config(registries, run_pyctr, cli_env):
    server = registries(auth=Htpasswd(USERS))
    folder = Path(cli_env["DOCKER_CONFIG"])
    folder.mkdir(mode=0o700)
    (folder / "config.json").write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}},
                                                    "psFormat": "table {{.ID}}"}))

    done = run_pyctr("login", "-u", "alice", "--password-stdin", server.host, env=cli_env, input="wonderland\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, "Login Succeeded\n", "")
    config = config_of(cli_env)
    assert config["auths"][server.host] == {"auth": base64.b64encode(b"alice:wonderland").decode()}
    assert config["auths"]["other.example"] == {"auth": "eDp5"} and config["psFormat"] == "table {{.ID}}"
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == ["config.json"]  # no temporary file left

    # Without -u and a password, the stored credentials are checked again, as Docker does.
    again = run_pyctr("login", server.host, env=cli_env, input="")
    assert again.returncode == 0 and again.stdout.endswith("Login Succeeded\n")

    done = run_pyctr("logout", server.host, env=cli_env)
    assert (done.returncode, done.stdout) == (0, f"Removing login credentials for {server.host}\n")
    config = config_of(cli_env)
    assert server.host not in config["auths"] and config["psFormat"] == "table {{.ID}}"
    done = run_pyctr("logout", server.host, env=cli_env)
    assert (done.returncode, done.stdout) == (0, f"Not logged in to {server.host}\n")


def test_login_makes_the_folder_private(registries, run_pyctr, cli_env):
    server = registries(auth=Htpasswd(USERS))
    done = run_pyctr("login", "-u", "alice", "-p", "wonderland", f"http://{server.host}/", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "--password-stdin" in done.stderr  # Docker's warning about -p
    folder = Path(cli_env["DOCKER_CONFIG"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o600
    assert list(config_of(cli_env)["auths"]) == [server.host]


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_a_wrong_password_is_one_line_and_stores_nothing(auth, registries, run_pyctr, cli_env):
    server = registries(auth=Htpasswd(USERS) if auth == "basic" else TokenServer(USERS))
    done = run_pyctr("login", "-u", "alice", "--password-stdin", server.host, env=cli_env, input="queen\n")
    assert done.returncode == 125 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unauthorized" in done.stderr
    assert not (Path(cli_env["DOCKER_CONFIG"]) / "config.json").exists()
    if auth == "bearer":
        done = run_pyctr("login", "-u", "alice", "--password-stdin", server.host, env=cli_env, input="wonderland")
        assert (done.returncode, done.stdout) == (0, "Login Succeeded\n")


def test_login_without_a_terminal_or_a_password(run_pyctr, cli_env):
    for argv in (["login", "-u", "alice", "127.0.0.1:1"], ["login", "127.0.0.1:1"]):
        done = run_pyctr(*argv, env=cli_env, input="")
        assert done.returncode == 125 and done.stderr.count("\n") == 1
        assert "without a terminal" in done.stderr
    done = run_pyctr("login", "--password-stdin", "127.0.0.1:1", env=cli_env, input="x")
    assert done.returncode == 125 and "--username" in done.stderr
    done = run_pyctr("login", "-u", "a", "bad host!", env=cli_env, input="x")
    assert done.returncode == 125 and done.stderr.count("\n") == 1 and "invalid registry address" in done.stderr


def test_docker_hub_credentials_use_dockers_key(store):
    credentials.store("docker.io", "bob", "pw:with:colons")
    config = json.loads(credentials.config_path().read_text())
    assert list(config["auths"]) == ["https://index.docker.io/v1/"]
    assert credentials.lookup("docker.io") == ("bob", "pw:with:colons")
    assert credentials.lookup(reference.normalize_registry("index.docker.io")) == ("bob", "pw:with:colons")
    assert credentials.remove("docker.io") and credentials.lookup("docker.io") is None


# -- progress ---------------------------------------------------------------------------------


def test_progress_is_one_line_per_layer_without_a_terminal():
    out = io.StringIO()
    progress = PullProgress(out)
    for status in ("Pulling fs layer", "Downloading", "Verifying Checksum", "Download complete", "Pull complete"):
        progress("abcdef012345", status, 5 if status == "Downloading" else None, 10)
    progress("bbbbbbbbbbbb", "Already exists")  # the blob was here...
    progress("bbbbbbbbbbbb", "Pull complete")  # ...its layer was not: still one line
    assert out.getvalue() == "abcdef012345: Pull complete\nbbbbbbbbbbbb: Already exists\n"


def test_progress_redraws_in_place_on_a_terminal():
    import pty

    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal:
            progress = PullProgress(terminal)
            progress("aaaaaaaaaaaa", "Pulling fs layer")
            progress("bbbbbbbbbbbb", "Pulling fs layer")
            progress("aaaaaaaaaaaa", "Downloading", 10, 10)
        output = read_all(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "aaaaaaaaaaaa: Pulling fs layer" in output and "bbbbbbbbbbbb: Pulling fs layer" in output
    assert "\x1b[2A\r\x1b[2Kaaaaaaaaaaaa: Downloading [" in output and "10B/10B" in output


# -- helpers ----------------------------------------------------------------------------------


def read_all(fd: int) -> str:
    """What a terminal's master end holds: read until it stays quiet (one read may get a part)."""
    import select

    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def layer_files(layer: oci.Layer) -> dict[str, bytes]:
    with tarfile.open(oci.blob_path(layer.digest)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


class Proxy:
    """An HTTP proxy on 127.0.0.1 in front of a registry: counts GETs per path, and can cut the
    body of one path short (headers with the full Content-Length, then half the bytes, then close)."""

    def __init__(self, upstream: str, cut: str | None = None, cut_times: int | None = None):
        self.upstream, self.cut, self.cut_times = upstream, cut, cut_times
        self.hits: Counter = Counter()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner.hits[self.path] += 1
                headers = {k: v for k, v in self.headers.items() if k in ("Accept", "Authorization")}
                upstream = requests.get(owner.upstream + self.path, headers=headers, timeout=10)
                body = upstream.content
                self.send_response(upstream.status_code)
                for name in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate"):
                    if name in upstream.headers:
                        self.send_header(name, upstream.headers[name])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cutting = self.path == owner.cut and (owner.cut_times is None
                                                      or owner.hits[self.path] <= owner.cut_times)
                if cutting:
                    self.wfile.write(body[:len(body) // 2])
                    self.close_connection = True
                else:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
