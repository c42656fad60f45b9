"""Attacks on pyctr's image handling (issue 11), tried for real: a hostile registry, a hostile
image (manifest, config, layers), a hostile archive for `pyctr load`, hostile names, and another
local user. Each test names the known case (Docker, containerd, runc) it tries; SECURITY.md's
table lists them.

The hostile servers are http.server threads on loopback addresses only: 127.0.0.1 is the
registry, 127.0.0.2 "another host" (a storage backend, a token realm, a foreign layer's URL).
Images are written here by hand (tarfile, JSON) from the Alpine minirootfs, so that they can
hold what no tool would write. Containers run with --network none and are removed with the test.
"""

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import SHARED_MIRROR, remove_all_containers
from imagebuild import ALPINE_TARBALL, layer_member
from registryserver import free_port

MINIROOTFS = SHARED_MIRROR / ALPINE_TARBALL
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER, PASSWORD = "alice", "wonderland"

pytestmark = [
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="the local mirror holds x86_64 releases only"),
    pytest.mark.skipif(not MINIROOTFS.is_file(), reason="needs the local Alpine mirror"),
]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(members: list) -> bytes:
    """A plain layer tar of (TarInfo, data) pairs (imagebuild.layer_member makes them)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


class Image:
    """An OCI image written by hand: the Alpine minirootfs as its base layer (unless told), then
    `layers` (plain tar bytes), and `defaults` merged into its config's run defaults."""

    def __init__(self, layers: list[bytes] = (), defaults: dict | None = None, base: bool = True,
                 config_size: int | None = None):
        blobs = ([MINIROOTFS.read_bytes()] if base else []) + list(layers)
        self.layers = []  # (blob, media type, diff_id)
        for blob in blobs:
            zipped = blob[:2] == b"\x1f\x8b"
            self.layers.append((blob, "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if zipped else ""),
                                digest(gzip.decompress(blob) if zipped else blob)))
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], **(defaults or {})},
                  "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in self.layers]}}
        self.config = json.dumps(config).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(self.config),
                       "size": len(self.config) if config_size is None else config_size},
            "layers": [{"mediaType": t, "digest": digest(b), "size": len(b)} for b, t, _ in self.layers],
        }).encode()

    @property
    def blobs(self) -> dict[str, bytes]:
        return {digest(b): b for b in [self.config, self.manifest, *(b for b, _, _ in self.layers)]}

    def layout_tar(self, path: Path, tag: str, manifest_digest: str | None = None) -> Path:
        """The image as an OCI layout tar for `pyctr load`, named `tag`."""
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest_digest or digest(self.manifest),
            "size": len(self.manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
        files.update({f"blobs/sha256/{d[7:]}": b for d, b in self.blobs.items()})
        with tarfile.open(path, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


# -- hostile servers ---------------------------------------------------------------------------


class Server:
    """An HTTP server on a loopback address; answer(handler) -> (status, headers, body) decides,
    and every request is kept as (path, headers)."""

    def __init__(self, address: str = "127.0.0.1"):
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                status, headers, body = outer.answer(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.host = f"{address}:{self.httpd.server_address[1]}"
        self.url = f"http://{self.host}"

    def answer(self, handler) -> tuple[int, dict, bytes]:
        return 404, {}, b""

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorizations(self) -> list[str]:
        return [h["Authorization"] for _, h in self.requests if "Authorization" in h]


class Registry(Server):
    """A registry of one image, under any name and tag. `auth`: None, "basic", or a realm URL
    (Bearer; the token is TOKEN). `blobs_at`: layers are 307-redirected to that URL + /DIGEST.
    `blobs`: what it serves instead of the image's blobs, by digest."""

    TOKEN = "registry-token"

    def __init__(self, image: Image, auth: str | None = None, blobs_at: str | None = None,
                 blobs: dict | None = None, manifest: bytes | None = None):
        self.image, self.auth, self.blobs_at = image, auth, blobs_at
        self.blobs = image.blobs if blobs is None else blobs
        self.manifest = image.manifest if manifest is None else manifest
        super().__init__()

    def answer(self, handler):
        path = handler.path.split("?")[0]
        if self.auth and not self._authorized(handler.headers.get("Authorization", "")):
            challenge = ('Basic realm="test"' if self.auth == "basic"
                         else f'Bearer realm="{self.auth}",service="test"')
            return 401, {"WWW-Authenticate": challenge}, b""
        if path == "/v2/":
            return 200, {}, b"{}"
        if re.fullmatch(r"/v2/.+/manifests/.+", path):
            return 200, {"Content-Type": OCI_MANIFEST}, self.manifest
        blob = re.fullmatch(r"/v2/.+/blobs/(sha256:[0-9a-f]{64})", path)
        if blob and blob.group(1) in self.blobs:
            if self.blobs_at and blob.group(1) != digest(self.image.config):
                return 307, {"Location": f"{self.blobs_at}/{blob.group(1)}"}, b""
            return 200, {}, self.blobs[blob.group(1)]
        return 404, {}, b""

    def _authorized(self, header: str) -> bool:
        if self.auth == "basic":
            import base64

            return header == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return header == f"Bearer {self.TOKEN}"


class Storage(Server):
    """Another host: serves the blobs it is given at /DIGEST (a storage backend, or an attacker)."""

    def __init__(self, blobs: dict[str, bytes]):
        self.blobs = blobs
        super().__init__("127.0.0.2")

    def answer(self, handler):
        data = self.blobs.get(handler.path.strip("/"))
        return (200, {}, data) if data is not None else (404, {}, b"")


class Realm(Server):
    """A token server on another host: any caller gets Registry.TOKEN."""

    def __init__(self):
        super().__init__("127.0.0.2")

    def answer(self, handler):
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": Registry.TOKEN}).encode()


@pytest.fixture
def servers():
    started = []

    def start(server):
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def env(fresh_env, tmp_path):
    """A fresh store, and a Docker config with alice's credentials for every loopback host."""
    docker = tmp_path / "docker"
    docker.mkdir()
    fresh_env = dict(fresh_env, DOCKER_CONFIG=str(docker))
    yield fresh_env
    remove_all_containers(fresh_env)


def log_in(env: dict, *hosts: str) -> None:
    import base64

    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path = Path(env["DOCKER_CONFIG"]) / "config.json"
    path.write_text(json.dumps({"auths": {host: {"auth": auth} for host in hosts}}))
    path.chmod(0o600)


def store_files(env: dict) -> list[str]:
    """Everything under the blob store and the layer and image folders, hidden files too."""
    images = Path(env["PYCTR_ROOT"]) / "images"
    return sorted(str(p.relative_to(images)) for sub in ("_blobs/sha256", "_layers", "_images")
                  if (images / sub).is_dir() for p in (images / sub).iterdir())


def one_error_line(result) -> bool:
    """Exit 125 and one "Error: " line, the last (a pull says what it pulls first)."""
    lines = result.stderr.splitlines()
    return (result.returncode == 125 and bool(lines) and lines[-1].startswith("Error: ")
            and sum(line.startswith("Error") for line in lines) == 1 and "Traceback" not in result.stderr)


# -- a hostile registry ------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_a_redirect_to_another_host_gets_no_credentials(run_pyctr, env, servers, auth):
    """Blobs redirected to a storage host (S3 and the like): Docker sends the registry's
    Authorization there only if it is the same host; requests drops it on another host."""
    image = Image()
    storage = servers(Storage(image.blobs))
    realm = servers(Realm()) if auth == "bearer" else None
    registry = servers(Registry(image, auth="basic" if auth == "basic" else f"{realm.url}/token",
                                blobs_at=storage.url))
    log_in(env, registry.host)
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert len(storage.requests) == 1  # the layer, from the other host
    assert storage.authorizations() == []
    assert registry.authorizations()  # while the registry itself got them


def test_credentials_go_only_to_their_registrys_realm_as_dockers(run_pyctr, env, servers):
    """A Bearer realm on another host gets the registry's own credentials, as Docker sends them
    (Docker Hub's realm is auth.docker.io): those of that registry only, never another's; and
    the token goes back to the registry alone."""
    image = Image()
    realm = servers(Realm())
    registry = servers(Registry(image, auth=f"{realm.url}/token"))
    log_in(env, "127.0.0.1:1")  # credentials of another registry only
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert realm.authorizations() == []  # anonymous: nothing of 127.0.0.1:1's was sent
    log_in(env, registry.host)
    realm.requests.clear()
    pulled = run_pyctr("pull", f"{registry.host}/team/app:2", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert [a.split()[0] for a in realm.authorizations()] == ["Basic"]
    assert all(a == f"Bearer {Registry.TOKEN}" for a in registry.authorizations())


@pytest.mark.parametrize("realm, base, refused", [
    ("https://auth.docker.io/token", "https://registry-1.docker.io", False),  # Docker Hub's own
    ("http://127.0.0.2:5001/token", "http://127.0.0.1:5000", False),  # loopback for loopback
    ("http://auth.docker.io/token", "https://registry-1.docker.io", True),  # the password in clear
    ("http://169.254.169.254/latest/meta-data", "https://r.example", True),  # cloud metadata
    ("https://127.0.0.1/token", "https://r.example", True),  # a service of this machine
    ("https://0.0.0.0/token", "https://r.example", True),
    ("file:///etc/shadow", "https://r.example", True),
])
def test_a_token_realm_that_would_leak_credentials_is_refused(realm, base, refused):
    """The realm checks of oras-go and go-containerregistry (after CVE-2020-15157): the registry
    picks the realm, so a hostile one could ask for the password in clear or aim it at this
    machine or the cloud's metadata service."""
    from pyctr.images import registry
    from pyctr.runtime.errors import PyctrError

    if refused:
        with pytest.raises(PyctrError, match="realm"):
            registry.check_realm(realm, "r.example", base)
    else:
        registry.check_realm(realm, "r.example", base)


def test_a_realm_at_an_unspecified_address_is_never_asked(run_pyctr, env, servers):
    """0.0.0.0 reaches this machine's own services (as 169.254.169.254 would a cloud's metadata,
    which this test must not reach even if the check goes)."""
    image = Image(base=False)
    # Nothing listens there: without the check, the pull would fail with another error.
    registry = servers(Registry(image, auth=f"http://0.0.0.0:{free_port()}/token"))
    log_in(env, registry.host)
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert one_error_line(pulled) and "is no address for a registry's token server" in pulled.stderr, pulled.stderr


def test_foreign_layer_urls_are_never_fetched(run_pyctr, env, servers):
    """containerd CVE-2020-15157: a layer's `urls` pointed at the attacker, who answered 401 and
    got the registry's credentials. pyctr fetches every blob from the registry alone."""
    image = Image()
    attacker = servers(Storage(image.blobs))
    manifest = json.loads(image.manifest)
    for layer in manifest["layers"]:
        layer["urls"] = [f"{attacker.url}/{layer['digest']}"]
    registry = servers(Registry(image, auth="basic", manifest=json.dumps(manifest).encode()))
    log_in(env, registry.host)
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert attacker.requests == []


def test_huge_manifests_and_configs_are_refused_before_they_are_read(run_pyctr, env, servers):
    """Memory: a manifest is read whole (at most 4 MiB), a config too (at most 16 MiB, refused by
    its descriptor's size before any byte is fetched)."""
    from pyctr.images import registry as client

    image = Image(base=False)
    huge = servers(Registry(image, manifest=image.manifest + b" " * (client.MAX_MANIFEST + 1)))
    pulled = run_pyctr("pull", f"{huge.host}/team/app:1", env=env)
    assert one_error_line(pulled) and "larger than" in pulled.stderr, pulled.stderr

    image = Image(base=False, config_size=client.MAX_CONFIG + 1)
    registry = servers(Registry(image))
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert one_error_line(pulled) and "more than pyctr reads for a config" in pulled.stderr, pulled.stderr
    assert not [path for path, _ in registry.requests if "/blobs/" in path]
    assert store_files(env) == []


def test_deeply_nested_json_is_one_line(run_pyctr, env, servers):
    """A manifest of 100,000 nested arrays: Python's parser gives up (RecursionError), in one line."""
    image = Image(base=False)
    registry = servers(Registry(image, manifest=b"[" * 100_000 + b"]" * 100_000))
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert one_error_line(pulled), pulled.stderr


def test_a_registrys_words_reach_the_terminal_without_escape_sequences(run_pyctr, env, servers):
    """A registry's error message is shown to the user: its control characters (ESC sequences
    that clear, retitle or rewrite a terminal) are not passed on."""
    class Hostile(Registry):
        def answer(self, handler):
            if handler.path == "/v2/":
                return 200, {}, b"{}"
            doc = {"errors": [{"code": "DENIED", "message": "\x1b]0;owned\x07\x1b[2Jfine"}]}
            return 403, {"Content-Type": "application/json"}, json.dumps(doc).encode()

    registry = servers(Hostile(Image(base=False)))
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert one_error_line(pulled) and "DENIED" in pulled.stderr, pulled.stderr
    assert "\x1b" not in pulled.stderr and "\x07" not in pulled.stderr


def test_a_blob_that_does_not_verify_leaves_no_file_behind(run_pyctr, env, servers):
    """The temporary files a download writes (.HEX.PID.part) go when it fails: nothing in the
    store, hidden or not. They live in the private store, where no other user can plant a link."""
    image = Image()
    blobs = dict(image.blobs)
    layer = digest(image.layers[0][0])
    blobs[layer] = blobs[layer][:-1] + bytes([blobs[layer][-1] ^ 1])
    registry = servers(Registry(image, blobs=blobs))
    pulled = run_pyctr("pull", f"{registry.host}/team/app:1", env=env)
    assert one_error_line(pulled) and "digest mismatch" in pulled.stderr, pulled.stderr
    assert [f for f in store_files(env) if not f.endswith(digest(image.config)[7:])] == []
    assert os.stat(env["PYCTR_ROOT"]).st_mode & 0o777 == 0o700


def test_a_blob_removed_between_pull_and_install_installs_nothing(env, servers, monkeypatch):
    """A pull fetches outside the store lock; an rmi of another image that shared a blob may
    remove it meanwhile. The install then stops in one line and keeps nothing."""
    from pyctr.images import oci, reference, registry, store
    from pyctr.runtime import settings
    from pyctr.runtime.errors import PyctrError

    for name in ("PYCTR_ROOT", "PYCTR_STATE", "DOCKER_CONFIG"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setattr(settings, "_current", None)
    settings.configure()
    image = Image(layers=[tar_bytes([layer_member("etc/extra", data=b"x")])])
    server = servers(Registry(image))
    content = registry.fetch(reference.parse(f"{server.host}/team/app:1"))
    oci.blob_path(content.layers[1].digest).unlink()  # what the other image's rmi freed
    with pytest.raises(PyctrError, match="removed meanwhile"):
        store.install_content(content)
    assert [f for f in store_files(env) if f.startswith(("_layers", "_images"))] == []
    monkeypatch.setattr(settings, "_current", None)


def big_pax_header(megabytes: int) -> bytes:
    """A tar whose first member has a pax header of that many MiB: a few KB once gzipped."""
    value = "A" * (megabytes << 20)
    info, data = layer_member("file", data=b"x")
    info.pax_headers = {"comment": value}
    return tar_bytes([(info, data)])


def test_a_huge_pax_header_is_refused_before_it_is_read(run_pyctr, env, tmp_path):
    """tarfile reads a pax (or GNU long-name) header whole into memory: 200 KB of gzip cost
    600 MB. Over 1 MiB is refused, as Go's archive/tar does, in a layer and in the archive
    given to `pyctr load`."""
    layer = gzip.compress(big_pax_header(2))
    assert len(layer) < 64 << 10
    loaded = load(run_pyctr, env, Image([layer], base=False), tmp_path)
    assert one_error_line(loaded) and "extended header of" in loaded.stderr, loaded.stderr
    outer = tmp_path / "outer.tar.gz"
    outer.write_bytes(gzip.compress(big_pax_header(2)))
    loaded = run_pyctr("load", "-i", outer, env=env)
    assert one_error_line(loaded) and "extended header of" in loaded.stderr, loaded.stderr
    assert [f for f in store_files(env) if f.startswith(("_layers", "_images"))] == []
    # Below the limit, such a header is read as any other.
    assert load(run_pyctr, env, Image([big_pax_header(0)], base=False), tmp_path, "attack/ok:1").returncode == 0


# -- hostile layers: across layers -------------------------------------------------------------


def load(run_pyctr, env: dict, image: Image, tmp_path: Path, tag: str = "attack/app:1"):
    return run_pyctr("load", "-i", image.layout_tar(tmp_path / f"{tag.replace('/', '_')}.tar", tag), env=env)


def run_in(run_pyctr, env: dict, *args):
    return run_pyctr("run", "--rm", "--network", "none", *args, env=env)


def test_a_lower_layers_symlink_to_the_host_leads_nowhere_from_an_upper_layer(run_pyctr, env, tmp_path):
    """Each layer is unpacked into its own folder, so a symlink of a lower layer (to a host
    path, absolute as the container reads it) is not there when an upper layer writes through
    it, whites it out or makes it opaque (moby's layer-breakout cases)."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "victim").write_text("host\n")
    lower = tar_bytes([layer_member("hostdir", tarfile.SYMTYPE, linkname=str(host)),
                       layer_member("victimlink", tarfile.SYMTYPE, linkname=f"{host}/victim"),
                       layer_member("opq", tarfile.SYMTYPE, linkname=str(host))])
    upper = tar_bytes([layer_member("hostdir/escaped", data=b"inside\n"),
                       layer_member(".wh.victimlink"),
                       layer_member("opq/.wh..wh..opq")])
    loaded = load(run_pyctr, env, Image([lower, upper]), tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    ran = run_in(run_pyctr, env, "attack/app:1", "sh", "-c",
                 "cat /hostdir/escaped; test -e /victimlink || echo gone; test -d /opq && echo dir")
    assert (ran.returncode, ran.stdout) == (0, "inside\ngone\ndir\n"), ran.stderr
    assert sorted(p.name for p in host.iterdir()) == ["victim"]
    assert (host / "victim").read_text() == "host\n"
    assert "trusted.overlay.opaque" not in os.listxattr(host)


def test_a_hardlink_to_a_lower_layers_file_is_refused(run_pyctr, env, tmp_path):
    """link(2) would follow a lower layer's symlink to the host's file; a layer may hardlink only
    files it holds itself."""
    victim = tmp_path / "victim"
    victim.write_text("host\n")
    lower = tar_bytes([layer_member("s", tarfile.SYMTYPE, linkname=str(victim)),
                       layer_member("file", data=b"lower\n")])
    for name, link in (("to-symlink", "s"), ("to-file", "file")):
        upper = tar_bytes([layer_member(name, tarfile.LNKTYPE, linkname=link)])
        loaded = load(run_pyctr, env, Image([lower, upper], base=False), tmp_path, f"attack/{name}:1")
        assert one_error_line(loaded) and "refusing to unpack layer" in loaded.stderr, loaded.stderr
    assert victim.stat().st_nlink == 1 and victim.read_text() == "host\n"
    assert [f for f in store_files(env) if f.startswith(("_layers", "_images"))] == []


# -- a hostile config ---------------------------------------------------------------------------


def test_a_working_dir_through_a_lower_layers_symlink_stays_in_the_container(run_pyctr, env, tmp_path):
    """The image's WorkingDir is made (as Docker does) by the container's init, past pivot_root:
    a symlink to a host path is read in the container's root, never the host's."""
    host = tmp_path / "host"
    host.mkdir()
    link = layer_member("app", tarfile.SYMTYPE, linkname=str(host))
    # The symlink dangles in the container: the start fails in one line, 125 (Docker would make
    # the path in the root), and nothing is made on the host.
    loaded = load(run_pyctr, env, Image([tar_bytes([link])], {"WorkingDir": "/app/sub"}), tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    ran = run_in(run_pyctr, env, "attack/app:1", "pwd")
    assert ran.returncode == 125 and ran.stderr.count("\n") == 1, ran.stderr
    assert ran.stderr.startswith("Error: working directory /app/sub: "), ran.stderr
    assert list(host.iterdir()) == []
    # The image holds that path too: its own copy is the working directory.
    lower = tar_bytes([layer_member(str(host).lstrip("/") + "/", tarfile.DIRTYPE, mode=0o755), link])
    loaded = load(run_pyctr, env, Image([lower], {"WorkingDir": "/app/sub"}), tmp_path, "attack/app:2")
    assert loaded.returncode == 0, loaded.stderr
    ran = run_in(run_pyctr, env, "attack/app:2", "sh", "-c", "pwd -P; touch made-here")
    assert (ran.returncode, ran.stdout) == (0, f"{host}/sub\n"), ran.stderr
    assert list(host.iterdir()) == []


def test_a_working_dir_in_proc_self_fd_never_reaches_the_host(run_pyctr, env, tmp_path):
    """runc CVE-2024-21626 "attack 1": an image whose WORKDIR is /proc/self/fd/N, N a descriptor
    the runtime leaked to the container's init, starts it in a host folder; `..` climbs to the
    host's root. pyctr's init holds no host folder open there, and checks that its working
    directory is inside the root."""
    marker = tmp_path / "marker"
    marker.write_text("host-only\n")
    climb = "../" * 12 + str(marker).lstrip("/")
    for fd in range(3, 10):
        tag = f"attack/fd{fd}:1"
        assert load(run_pyctr, env, Image(defaults={"WorkingDir": f"/proc/self/fd/{fd}"}), tmp_path, tag
                    ).returncode == 0
        ran = run_in(run_pyctr, env, tag, "sh", "-c", f"cat {climb}")
        assert "host-only" not in ran.stdout, (fd, ran.stdout)
        assert ran.returncode != 0, (fd, ran.stdout, ran.stderr)


def test_a_user_without_a_passwd_entry_and_env_with_newlines(run_pyctr, env, tmp_path):
    """User 4242, in no /etc/passwd: uid 4242, gid 0, as Docker (runc) gives it; a name in none
    is refused in one line. An Env value with a newline stays one variable: the environment goes
    to execve as a list, never through a file of lines."""
    loaded = load(run_pyctr, env, Image(defaults={"User": "4242", "Env": [PATH_ENV, "A=one\nB=two"]}), tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    ran = run_in(run_pyctr, env, "attack/app:1", "sh", "-c",
                 'id -u; id -g; echo "${B-unset}"; printf "%s" "$A" | wc -l')
    assert (ran.returncode, ran.stdout.split()) == (0, ["4242", "0", "unset", "1"]), ran.stderr
    loaded = load(run_pyctr, env, Image(defaults={"User": "ghost"}), tmp_path, "attack/ghost:1")
    assert loaded.returncode == 0, loaded.stderr
    ran = run_in(run_pyctr, env, "attack/ghost:1", "true")
    assert ran.returncode == 126 and "unable to find user ghost" in ran.stderr, ran.stderr
    assert ran.stderr.count("\n") == 1, ran.stderr
    # A NUL byte no execve can pass, and a relative WorkingDir: the start fails in one line.
    for number, defaults in enumerate([{"Env": [PATH_ENV, "A=a\0b"]}, {"WorkingDir": "tmp/rel"}]):
        tag = f"attack/bad{number}:1"
        assert load(run_pyctr, env, Image(defaults=defaults), tmp_path, tag).returncode == 0
        ran = run_in(run_pyctr, env, tag, "true")
        assert ran.returncode != 0 and ran.stderr.startswith("Error: ") and ran.stderr.count("\n") == 1, ran.stderr


# -- hostile names -------------------------------------------------------------------------------


def test_a_digest_or_tag_is_never_a_path(run_pyctr, env, tmp_path):
    """Digests name blobs and layers on disk (blobs/sha256/HEX): only sha256:<64 hex> passes.
    Tags are only ever in records, and must parse as Docker's references (ASCII)."""
    image = Image(base=False, layers=[tar_bytes([layer_member("f", data=b"x")])])
    loaded = run_pyctr("load", "-i", image.layout_tar(tmp_path / "d.tar", "attack/app:1",
                                                      manifest_digest="sha256:../../../../etc/passwd"), env=env)
    assert one_error_line(loaded) and "malformed digest" in loaded.stderr, loaded.stderr
    for tag in ("../../../../tmp/evil:1", "attack/app:l\u0430test"):  # a Cyrillic а
        loaded = load(run_pyctr, env, image, tmp_path, tag)
        assert one_error_line(loaded) and "invalid reference format" in loaded.stderr, (tag, loaded.stderr)
    assert [f for f in store_files(env) if f.startswith("_images")] == []
    pulled = run_pyctr("pull", "127.0.0.1:9/app:l\u0430test", env=env)
    assert one_error_line(pulled) and "malformed tag" in pulled.stderr, pulled.stderr


# -- another local user ------------------------------------------------------------------------


def test_login_writes_no_file_through_a_planted_symlink(tmp_path, monkeypatch):
    """Under `sudo -E`, $DOCKER_CONFIG (or ~/.docker) can be a user's own folder. The file is
    written under a random new name (O_EXCL) and renamed over config.json: a symlink planted at
    a predictable name (here the old .config.json.PID.tmp) or at config.json itself never makes
    root write through it."""
    from pyctr.images import credentials

    folder = tmp_path / "docker"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # anyone may plant files here
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    (folder / f".config.json.{os.getpid()}.tmp").symlink_to(victim)
    for pid in range(os.getpid() + 1, os.getpid() + 50):
        (folder / f".config.json.{pid}.tmp").symlink_to(victim)
    credentials.store("127.0.0.1:5000", USER, PASSWORD)
    assert victim.read_text() == "root:secret\n"
    written = folder / "config.json"
    assert not written.is_symlink() and written.stat().st_mode & 0o777 == 0o600
    assert credentials.lookup("127.0.0.1:5000") == (USER, PASSWORD)

    other = tmp_path / "other.json"
    other.write_text("{}")
    written.unlink()
    written.symlink_to(other)  # config.json itself a link: replaced, its target untouched
    credentials.store("127.0.0.1:5000", USER, PASSWORD)
    assert other.read_text() == "{}" and not written.is_symlink()
