"""Private registries for the tests: Debian's docker-registry (the distribution registry v2) on
127.0.0.1, plain, with htpasswd Basic auth, or with token auth and a token server of our own;
and the test images, built offline from the Alpine minirootfs with umoci and pushed with skopeo.

    RegistryServer(folder, auth=None | Htpasswd(...) | TokenServer(...), schema1=False)
        .start() / .stop()      stop kills the process by its PID and removes the folder
        .host                   "127.0.0.1:PORT", the reference's registry part
        .push(layout, tag, name, creds=None, all_platforms=False, dest_format=None)
        .delete_blob(name, digest), .blob_file(digest)
    TokenServer(users, anonymous=True)   the Bearer flow's realm: JWTs (ES256) whose x5c header
                                         carries a self-signed certificate the registry trusts
    build_test_layout(folder) -> Path    an OCI layout holding the tags of TEST_TAGS

Fixtures (import them into a test module): `registries` (function scope: start(auth=..., ...)
returns a running RegistryServer, all stopped at the end) and `test_layout` (session: the layout,
built once).
"""

import base64
import datetime
import gzip
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from imagebuild import SKOPEO

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MINIROOTFS = SHARED / "alpine-mirror/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz"

# Tags of the layout build_test_layout makes.
TEST_TAGS = {
    "base": "the Alpine minirootfs as one gzip layer, linux/amd64, Cmd /bin/sh",
    "arm64": "a tiny linux/arm64 image: one file, /platform, saying arm64",
    "multi": "an OCI index of base (linux/amd64) and arm64 (linux/arm64/v8)",
    "zstd": "base with its layer recompressed as zstd (media type tar+zstd)",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Htpasswd:
    """Basic auth: the registry checks users against an htpasswd file (bcrypt, as it requires)."""

    def __init__(self, users: dict[str, str]):
        self.users = users

    def config(self, folder: Path) -> dict:
        import bcrypt

        path = folder / "htpasswd"
        path.write_text("".join(f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for user, pw in self.users.items()))
        return {"htpasswd": {"realm": "pyctr-test", "path": str(path)}}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class TokenServer:
    """A token server for the registry's Bearer flow, on 127.0.0.1 (an http.server thread).

    GET /token?service=S&scope=repository:NAME:pull,push[&account=U], with Basic auth or none:
    a user with the right password gets the actions asked for; without credentials, `pull` only
    when `anonymous`; a wrong password is 401. Every request is kept in .requests.
    """

    SERVICE = "pyctr-test-registry"
    ISSUER = "pyctr-test-token-server"

    def __init__(self, users: dict[str, str], anonymous: bool = True):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.users = users
        self.anonymous = anonymous
        self.requests: list[dict] = []  # {"scope", "account", "authorized" (Basic given), "granted"}
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.ISSUER)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.server = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def config(self, folder: Path) -> dict:
        bundle = folder / "token-ca.pem"
        bundle.write_bytes(self.cert_pem)
        return {"token": {"realm": self.realm, "service": self.SERVICE, "issuer": self.ISSUER,
                          "rootcertbundle": str(bundle)}}

    def start(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.answer(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def answer(self, handler) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(handler.path).query)
        scope = (query.get("scope") or [""])[0]
        user = self._user(handler.headers.get("Authorization", ""))
        record = {"scope": scope, "account": (query.get("account") or [""])[0],
                  "authorized": bool(handler.headers.get("Authorization")), "granted": None}
        self.requests.append(record)
        if user is False or (user is None and not self.anonymous):
            return self._send(handler, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        access = []
        if scope.count(":") == 2:
            kind, name, actions = scope.split(":")
            allowed = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": name, "actions": allowed})
        record["granted"] = access
        self._send(handler, 200, {"token": self.token(user or "", access)})

    def token(self, subject: str, access: list) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": subject, "aud": self.SERVICE, "iat": now, "nbf": now - 5,
                  "exp": now + 300, "jti": uuid.uuid4().hex, "access": access}
        # The registry finds the signing key in x5c and checks that certificate against its bundle.
        x5c = [base64.b64encode(self.cert_der).decode()]
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": x5c})

    def _user(self, authorization: str):
        """The user name for a right password, False for a wrong one, None for no credentials."""
        if not authorization.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        return user if self.users.get(user) == password else False

    @staticmethod
    def _send(handler, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class RegistryServer:
    def __init__(self, folder: Path, auth=None, schema1: bool = False):
        self.folder = folder
        self.auth = auth
        self.schema1 = schema1
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        return self.folder / "storage"

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (its filesystem driver's layout)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def start(self) -> "RegistryServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.auth:
            self.auth.start()
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if self.auth:
            config["auth"] = self.auth.config(self.folder)
        if self.schema1:  # lets skopeo push a (signed) schema 1 manifest, for the refusal test
            config["compatibility"] = {"schema1": {"enabled": True}}
        (self.folder / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        log = open(self.folder / "registry.log", "wb")
        self.process = subprocess.Popen(["docker-registry", "serve", str(self.folder / "config.yml")],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"{self.url}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("docker-registry did not start: "
                                       + (self.folder / "registry.log").read_text()[-2000:])
                time.sleep(0.02)

    def stop(self) -> None:
        try:
            if self.process and self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(timeout=10)
        finally:
            if self.auth:
                self.auth.stop()
            shutil.rmtree(self.folder, ignore_errors=True)

    def push(self, layout: Path, tag: str, name: str, creds: str | None = None,
             all_platforms: bool = False, dest_format: str | None = None) -> None:
        """skopeo copy oci:LAYOUT:TAG docker://HOST/NAME; `creds` is "user:password"."""
        argv = [*SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
        if creds:
            argv += ["--dest-creds", creds]
        if all_platforms:
            argv.append("--all")
        if dest_format:
            argv += ["--format", dest_format]
        argv += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}"]
        # skopeo must not read the tests' or the machine's stored logins.
        env = {**os.environ, "REGISTRY_AUTH_FILE": str(self.folder / "skopeo-auth.json"),
               "DOCKER_CONFIG": str(self.folder / "skopeo-docker")}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")

    def delete_blob(self, name: str, digest: str, creds: tuple[str, str] | None = None) -> None:
        """DELETE /v2/NAME/blobs/DIGEST: the repository no longer has the blob."""
        response = requests.delete(f"{self.url}/v2/{name}/blobs/{digest}", auth=creds, timeout=10)
        response.raise_for_status()


# -- the test images --------------------------------------------------------------------------


def build_test_layout(folder: Path) -> Path:
    """An OCI layout with the tags of TEST_TAGS, built offline with umoci (and, for the index and
    the zstd layer, written into the layout by hand as the image spec describes them)."""
    layout = folder / "layout"
    _umoci("init", "--layout", layout)
    _umoci_image(layout, "base", folder / "bundle-base", MINIROOTFS, "amd64")
    tiny = folder / "tiny.tar"
    _tar_with_file(tiny, "platform", b"arm64\n")
    _umoci_image(layout, "arm64", folder / "bundle-arm64", tiny, "arm64")
    _umoci("gc", "--layout", layout)
    base = _tagged(layout, "base")
    arm = _tagged(layout, "arm64")
    index = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**_descriptor(base), "platform": {"architecture": "amd64", "os": "linux"}},
            {**_descriptor(arm), "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }
    _add_manifest(layout, "multi", json.dumps(index).encode(), index["mediaType"])
    _add_zstd_copy(layout, "base", "zstd")
    return layout


def _umoci(*args) -> None:
    done = subprocess.run(["umoci", *map(str, args)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"umoci {' '.join(map(str, args))} failed: {done.stderr.strip()}")


def _umoci_image(layout: Path, tag: str, bundle: Path, rootfs_tar: Path, arch: str) -> None:
    image = f"{layout}:{tag}"
    _umoci("new", "--image", image)
    _umoci("unpack", "--image", image, bundle)
    subprocess.run(["tar", "-xf", rootfs_tar, "-C", bundle / "rootfs"], check=True)
    _umoci("repack", "--image", image, bundle)
    _umoci("config", "--image", image, "--architecture", arch, "--os", "linux",
           "--config.cmd", "/bin/sh", "--history.created_by", f"pyctr tests: {tag}")
    shutil.rmtree(bundle)


def _tar_with_file(path: Path, name: str, data: bytes) -> None:
    import io

    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def _index(layout: Path) -> dict:
    return json.loads((layout / "index.json").read_text())


def _tagged(layout: Path, tag: str) -> dict:
    for entry in _index(layout)["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return entry
    raise KeyError(tag)


def _descriptor(entry: dict) -> dict:
    return {k: entry[k] for k in ("mediaType", "digest", "size")}


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs/sha256" / digest.removeprefix("sha256:")


def _write_blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob(layout, digest).write_bytes(data)
    return digest


def _add_manifest(layout: Path, tag: str, data: bytes, media_type: str) -> None:
    digest = _write_blob(layout, data)
    index = _index(layout)
    index["manifests"].append({"mediaType": media_type, "digest": digest, "size": len(data),
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    (layout / "index.json").write_text(json.dumps(index))


def _add_zstd_copy(layout: Path, source_tag: str, tag: str) -> None:
    """`tag`: source_tag with its layers recompressed as zstd. The diff_ids stay (same tars)."""
    import zstandard

    source = _tagged(layout, source_tag)
    manifest = json.loads(_blob(layout, source["digest"]).read_bytes())
    layers = []
    for layer in manifest["layers"]:
        tar = gzip.decompress(_blob(layout, layer["digest"]).read_bytes())
        data = zstandard.ZstdCompressor().compress(tar)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                       "digest": _write_blob(layout, data), "size": len(data)})
    manifest["layers"] = layers
    _add_manifest(layout, tag, json.dumps(manifest).encode(), source["mediaType"])


def layout_manifest(layout: Path, tag: str) -> dict:
    """The image manifest a layout's tag names (for the tests' expectations)."""
    return json.loads(_blob(layout, _tagged(layout, tag)["digest"]).read_bytes())


def layout_digest(layout: Path, tag: str) -> str:
    return _tagged(layout, tag)["digest"]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def test_layout(tmp_path_factory) -> Path:
    if not MINIROOTFS.is_file():
        pytest.skip(f"needs the Alpine minirootfs at {MINIROOTFS}")
    folder = tmp_path_factory.mktemp("registry-images")
    return build_test_layout(folder)


@pytest.fixture
def registries(tmp_path):
    """start(auth=None, schema1=False) -> a running RegistryServer, stopped when the test ends."""
    started: list[RegistryServer] = []

    def start(auth=None, schema1: bool = False) -> RegistryServer:
        server = RegistryServer(tmp_path / f"registry-{len(started)}", auth=auth, schema1=schema1)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
