"""Pull an image from a registry (the distribution HTTP API v2) into the blob store, verified.

    GET /v2/                       the ping: 200, or 401 with a WWW-Authenticate challenge:
                                   Basic (send the stored credentials), or Bearer: ask the
                                   challenge's realm for a token (service, scope
                                   repository:NAME:pull), with the credentials as Basic auth,
                                   anonymously without; the token serves the whole pull
    GET /v2/NAME/manifests/REF     an index (OCI, or Docker's manifest list): pick a platform, then
                                   GET its manifest by digest; an image manifest (OCI, Docker
                                   schema 2); schema 1 is refused
    GET /v2/NAME/blobs/DIGEST      the config and each layer, hashed while they stream into a
                                   temporary file beside the blob store, renamed in once verified

fetch() is the entry point. Timeouts and retries are transfer.py's (PYCTR_PULL_*).
"""

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

from pyctr.images import credentials, oci, reference
from pyctr.images.reference import Reference
from pyctr.images.transfer import CutShort, Transfer, http_get, open_session, reason, stream_errors
from pyctr.runtime import explain
from pyctr.runtime.errors import NotFoundError, PyctrError

ACCEPT = ", ".join([oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST,
                    *oci.DOCKER_SCHEMA1])
MAX_MANIFEST = 4 << 20  # bytes; a manifest is a few KB
MAX_CONFIG = 16 << 20  # bytes; a config is read into memory (as pyctr load's limit)
CONFIG_TYPES = (oci.OCI_CONFIG, oci.DOCKER_CONFIG)

# `uname -m` -> Go's GOARCH and, where it has one, the variant, as image indexes name platforms.
_GO_PLATFORM = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv8l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", None), "i486": ("386", None), "i586": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
    "loongarch64": ("loong64", None), "mips64": ("mips64", None),
}
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}

# report(layer, status, current, total): layer is the 12-hex short digest; status is docker pull's
# ("Pulling fs layer", "Already exists", "Downloading", "Verifying Checksum", "Download complete");
# current/total are bytes, given with "Downloading" only.
Report = Callable[[str, str, "int | None", "int | None"], None]


def silent(layer: str, status: str, current: int | None = None, total: int | None = None) -> None:
    pass


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, entry: dict) -> bool:
        """Does an index entry's `platform` object describe this platform?"""
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        variant = entry.get("variant") or ("v8" if self.architecture == "arm64" else None)
        return self.variant is None or variant == self.variant


def host_platform() -> Platform:
    machine = os.uname().machine
    architecture, variant = _GO_PLATFORM.get(machine, (machine, None))
    return Platform("linux", architecture, variant)


def parse_platform(text: str) -> Platform:
    """"linux/arm64", "linux/arm/v7", "linux/amd64"; PyctrError for anything else."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_.-]+", p) for p in parts):
        raise PyctrError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], such as linux/arm64")
    architecture = _ARCH_ALIASES.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else None
    return Platform(parts[0], architecture, variant)


def fetch(ref: Reference, platform: str | None = None, report: Report = silent,
          transfer: Transfer | None = None) -> oci.ImageContent:
    """Fetch ref's manifest, config and layers into the blob store, each verified; blobs already
    there are not fetched again. `platform` ("linux/arm64") picks from an index; default: the host's."""
    wanted = parse_platform(platform) if platform else host_platform()
    client = Client(ref.registry, ref.repository, transfer or Transfer.from_env(),
                    credentials.lookup(ref.registry))
    try:
        client.authenticate()
        media_type, body, top_digest = client.manifest(ref.manifest_reference, ref.digest, what=str(ref))
        if media_type in oci.INDEX_TYPES:
            entry = _pick_platform(_parse(body, ref), wanted, ref)
            media_type, body, _ = client.manifest(entry["digest"], entry["digest"], what=str(ref))
            if media_type not in oci.MANIFEST_TYPES:
                raise PyctrError(f"{ref}: the index entry for {wanted} is a {media_type}, not an image manifest")
        config_desc, layers = _image_manifest(_parse(body, ref), ref)

        if config_desc["size"] > MAX_CONFIG:
            raise PyctrError(f"the config of {ref} is {config_desc['size']} bytes, more than pyctr "
                             f"reads for a config ({MAX_CONFIG})")
        if not oci.has_blob(config_desc["digest"]):
            client.fetch_blob(config_desc["digest"], config_desc["size"], None, report)
        config = oci.blob_path(config_desc["digest"]).read_bytes()
        if platform:
            _check_config_platform(config, wanted, ref)
        _fetch_layers(client, layers, report)
    finally:
        client.close()
    return oci.ImageContent(
        config=config, layers=layers, manifest_digest=top_digest,
        repo_tags=[ref.repo_tag] if ref.tag and not ref.digest else [],
        repo_digests=[ref.repo_digest(top_digest)],
        source=f"{client.base}/v2/{ref.repository}/manifests/{ref.manifest_reference}")


def check_login(registry: str, username: str, password: str, transfer: Transfer | None = None) -> None:
    """Do these credentials open `registry`? Returns if so; PyctrError (one line) if not."""
    client = Client(registry, None, transfer or Transfer.from_env(), (username, password))
    try:
        client.authenticate()
        if client.scheme == "basic":  # a Bearer login is checked by the token server's answer
            with client.get("/v2/") as response:
                client.check(response, "/v2/")
    finally:
        client.close()


class Client:
    """One registry and one repository: requests carrying the authorization the registry asked for."""

    def __init__(self, registry: str, repository: str | None, transfer: Transfer,
                 creds: tuple[str, str] | None):
        self.registry = registry
        self.repository = repository
        self.transfer = transfer
        self.creds = creds
        self.base = reference.registry_url(registry, mirror=repository is not None)  # login: Hub itself
        self.http = open_session(transfer)
        self.scheme = None  # "basic" or "bearer" once the ping asked for one
        self.authorization = None

    def close(self) -> None:
        self.http.close()

    def authenticate(self) -> None:
        """Ping /v2/ and answer its challenge, if it makes one."""
        url = f"{self.base}/v2/"
        with http_get(self.http, self.transfer, url) as response:
            if response.status_code == 200:
                return
            if response.status_code != 401:
                raise PyctrError(f"{url} returned {response.status_code} {_shown(response.reason)}: "
                                 "not a registry (API v2)?")
            scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        self.scheme = scheme
        if scheme == "basic":
            if self.creds is None:
                raise PyctrError(f"{self.registry} requires a login: pyctr login {self.registry}")
            self.authorization = "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()
        elif scheme == "bearer":
            self.authorization = "Bearer " + self._token(params)
        else:
            raise PyctrError(f"{self.registry} asks for {_shown(scheme) or 'an unnamed'} authentication, "
                             "which pyctr does not speak (Basic and Bearer only)")

    def _token(self, params: dict) -> str:
        realm = params.get("realm", "")
        check_realm(realm, self.registry, self.base)
        query = {k: params[k] for k in ("service",) if k in params}
        if self.repository:
            query["scope"] = f"repository:{self.repository}:pull"
        if self.creds:
            query["account"] = self.creds[0]
        with http_get(self.http, self.transfer, realm, params=query, auth=self.creds) as response:
            if response.status_code in (401, 403):
                who = f"the credentials of {self.creds[0]!r}" if self.creds else "an anonymous token"
                raise PyctrError(f"unauthorized: the token server of {self.registry} ({realm}) refused "
                                 f"{who} ({response.status_code}{_error_text(response)})")
            if response.status_code != 200:
                raise PyctrError(f"the token server {realm} returned {response.status_code} {_shown(response.reason)}")
            try:
                answer = response.json()
                token = answer.get("token") or answer.get("access_token")
            except (ValueError, AttributeError):
                token = None
        if not isinstance(token, str) or not token:
            raise PyctrError(f"the token server {realm} answered without a token")
        return token

    def get(self, path: str, accept: str | None = None, stream: bool = False):
        explain.step("curl", "-fsSL", *(["-H", f"Accept: {accept}"] if accept else []), self.base + path)
        headers = {"Accept": accept} if accept else {}
        if self.authorization:
            # requests drops it on a redirect to another host (a storage backend), as it should.
            headers["Authorization"] = self.authorization
        return http_get(self.http, self.transfer, self.base + path, stream=stream, headers=headers)

    def check(self, response, path: str, missing: str = "") -> None:
        """One line for an error answer: 401/403, 404 (`missing` says what was missing), others."""
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            hint = "" if self.creds else f"; pyctr login {self.registry}?"
            what = f"to pull {self.repository}" if self.repository else "by these credentials"
            raise PyctrError(f"unauthorized: {self.registry} refused access {what} "
                             f"({status}{_error_text(response)}){hint}")
        if status == 404 and missing:
            raise NotFoundError(f"{missing} ({_error_text(response).lstrip(': ') or '404 Not Found'})")
        tries = f" ({self.transfer.tries} tries)" if status >= 500 else ""
        raise PyctrError(f"{self.base}{path} returned {status} {_shown(response.reason)}{_error_text(response)}{tries}")

    def manifest(self, name: str, digest: str | None, what: str) -> tuple[str, bytes, str]:
        """(media type, bytes, sha256 digest) of the manifest `name` (a tag or a digest). Checks the
        bytes against `digest` when given, and against the registry's Docker-Content-Digest."""
        path = f"/v2/{self.repository}/manifests/{name}"
        body, content_type, header_digest = _retrying(self.transfer, f"the manifest of {what}",
                                                      lambda: self._read_manifest(path, what))
        media_type = _media_type(body, content_type, what)  # first: schema 1's digest is not over its bytes
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if digest and actual != digest:
            raise PyctrError(f"manifest digest mismatch for {what}: asked for {digest}, got {actual}")
        if header_digest and header_digest.startswith("sha256:") and header_digest != actual:
            raise PyctrError(f"manifest digest mismatch for {what}: the registry says {header_digest}, "
                             f"the bytes are {actual}")
        return media_type, body, actual

    def _read_manifest(self, path: str, what: str) -> tuple[bytes, str, str]:
        with self.get(path, accept=ACCEPT, stream=True) as response:
            self.check(response, path, missing=f"manifest for {what} not found")
            chunks, received = [], 0
            try:
                for chunk in response.iter_content(1 << 16):
                    received += len(chunk)
                    if received > MAX_MANIFEST:
                        raise PyctrError(f"the manifest of {what} is larger than {MAX_MANIFEST} bytes")
                    chunks.append(chunk)
            except stream_errors() as e:
                raise CutShort(f"the connection broke after {received} bytes ({reason(e)})") from None
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            return b"".join(chunks), content_type, response.headers.get("Docker-Content-Digest", "")

    def fetch_blob(self, digest: str, size: int, layer: str | None, report: Report) -> None:
        """Stream a blob into the blob store, verified; `layer` is its id for report (None: no report)."""
        path = oci.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        note = report if layer else silent
        try:
            _retrying(self.transfer, f"blob {digest}",
                      lambda: self._download_blob(digest, size, part, lambda n: note(layer, "Downloading", n, size)))
            note(layer, "Verifying Checksum", None, None)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        note(layer, "Download complete", None, None)

    def _download_blob(self, digest: str, size: int, part, progress: Callable[[int], None]) -> None:
        path = f"/v2/{self.repository}/blobs/{digest}"
        sha256, received = hashlib.sha256(), 0
        with self.get(path, stream=True) as response:
            self.check(response, path, missing=f"the manifest names blob {digest}, "
                                               f"which {self.registry}/{self.repository} does not have")
            try:
                with open(part, "wb") as out:
                    # The raw stream: the bytes as the registry sent them, never decoded.
                    for chunk in response.raw.stream(1 << 16, decode_content=False):
                        received += len(chunk)
                        if received > size:
                            raise PyctrError(f"blob {digest} from {self.registry} is larger than the "
                                             f"{size} bytes its manifest says; nothing stored")
                        out.write(chunk)
                        sha256.update(chunk)
                        progress(received)
            except stream_errors() as e:
                raise CutShort(f"the connection broke after {received} of {size} bytes ({reason(e)})") from None
        if received < size:
            raise CutShort(f"the body ended after {received} of {size} bytes")
        actual = "sha256:" + sha256.hexdigest()
        if actual != digest:
            raise PyctrError(f"digest mismatch for blob {digest} from {self.registry}: "
                             f"the bytes are {actual}; nothing stored")


def check_realm(realm: str, registry: str, base: str) -> None:
    """Refuse a token realm the registry's credentials must not go to: not http(s), plain http
    for a registry reached over https, or an address literal no registry would name for its
    token server (link-local such as the cloud metadata 169.254.169.254, unspecified, or
    loopback when the registry, at `base`, is not). Another host by name is allowed: Docker Hub's realm is
    auth.docker.io. (The checks of oras-go and go-containerregistry, after CVE-2020-15157.)"""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(realm)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise PyctrError(f"{registry}'s Bearer challenge has no usable realm ({realm!r})")
    if parts.scheme == "http" and base.startswith("https://"):
        raise PyctrError(f"refusing {registry}'s token realm {realm}: plain http for a registry "
                         "reached over https would send the credentials in clear")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    registry_host = urlsplit(base).hostname or ""
    on_loopback = registry_host == "localhost" or reference.is_loopback(f"[{registry_host}]")
    if address.is_link_local or address.is_unspecified or address.is_multicast or \
            address.is_loopback and not on_loopback:
        raise PyctrError(f"refusing {registry}'s token realm {realm}: "
                         f"{address} is no address for a registry's token server")


def parse_challenge(header: str) -> tuple[str, dict]:
    """`Bearer realm="https://auth/token",service="reg",scope="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest))
    return scheme.lower(), params


def _fetch_layers(client: Client, layers: list[oci.Layer], report: Report) -> None:
    # As docker pull: every layer's line first, then the downloads one after another.
    missing = []
    for layer in layers:
        layer_id = oci.check_digest(layer.digest)[:12]
        if oci.has_blob(layer.digest):
            report(layer_id, "Already exists", None, None)
        else:
            report(layer_id, "Pulling fs layer", None, None)
            missing.append((layer, layer_id))
    for layer, layer_id in missing:
        client.fetch_blob(layer.digest, layer.size, layer_id, report)


def _retrying(transfer: Transfer, what: str, attempt: Callable):
    """urllib3 retries a request until its headers arrive; a body cut short is retried here."""
    for number in range(transfer.tries):
        try:
            return attempt()
        except CutShort as e:
            if number + 1 == transfer.tries:
                raise PyctrError(f"download of {what} failed: {e} ({transfer.tries} tries)") from None
            time.sleep(transfer.backoff * 2 ** number)
    raise AssertionError("unreachable")


def _parse(body: bytes, ref: Reference) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PyctrError(f"the manifest of {ref} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise PyctrError(f"the manifest of {ref} is not a JSON object")
    return doc


def _media_type(body: bytes, content_type: str, what: str) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    if content_type in oci.DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise PyctrError(f"{what} is a Docker schema 1 image, a format pyctr does not pull "
                         "(deprecated since 2017): push it again with a current Docker, skopeo or crane")
    media_type = doc.get("mediaType") or content_type
    if media_type not in oci.INDEX_TYPES + oci.MANIFEST_TYPES:
        # OCI allows mediaType to be absent: the document's shape tells.
        if "manifests" in doc:
            return oci.OCI_INDEX
        if "config" in doc and "layers" in doc:
            return oci.OCI_MANIFEST
        raise PyctrError(f"the manifest of {what} has media type {media_type!r}, which pyctr does not pull")
    return media_type


def _pick_platform(index: dict, wanted: Platform, ref: Reference) -> dict:
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    for entry in entries:
        if isinstance(entry.get("platform"), dict) and wanted.matches(entry["platform"]):
            _check_descriptor(entry, ref)
            return entry
    offered = sorted({str(Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant")))
                      for e in entries if isinstance(p := e.get("platform"), dict)})
    raise NotFoundError(f"no image for {wanted} in {ref} (it has {', '.join(offered) or 'no platforms'})")


def _image_manifest(doc: dict, ref: Reference) -> tuple[dict, list[oci.Layer]]:
    """The config's descriptor and the layers of an image manifest, checked for shape."""
    config = doc.get("config")
    if not isinstance(config, dict) or not isinstance(doc.get("layers"), list):
        raise PyctrError(f"the manifest of {ref} is malformed: no config or no layers")
    _check_descriptor(config, ref)
    if config.get("mediaType") not in CONFIG_TYPES:
        raise PyctrError(f"{ref} is not a container image: its config is a {config.get('mediaType')!r}")
    layers = []
    for descriptor in doc["layers"]:
        _check_descriptor(descriptor, ref)
        layer = oci.Layer(descriptor["digest"], str(descriptor.get("mediaType")), descriptor["size"])
        layer.compression  # noqa: B018 -- refuses a layer type pyctr cannot unpack, before any download
        layers.append(layer)
    return config, layers


def _check_descriptor(descriptor, ref: Reference) -> None:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("size"), int) \
            or descriptor["size"] < 0 or not isinstance(descriptor.get("digest"), str):
        raise PyctrError(f"the manifest of {ref} is malformed: a descriptor without digest or size")
    oci.check_digest(descriptor["digest"])


def _check_config_platform(config: bytes, wanted: Platform, ref: Reference) -> None:
    try:
        doc = json.loads(config)
        found = Platform(doc.get("os", ""), doc.get("architecture", ""), doc.get("variant"))
    except (ValueError, AttributeError):
        raise PyctrError(f"the config of {ref} is not a JSON object") from None
    if (found.os, found.architecture) != (wanted.os, wanted.architecture):
        raise PyctrError(f"{ref} is an image for {found}, not {wanted}")


def _error_text(response) -> str:
    """The registry's own words for an error: ": CODE: message" from its JSON errors, if any."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return _shown(f": {first.get('code', '')}: {first.get('message', '')}".rstrip(": "))
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return ""


def _shown(text) -> str:
    """Text a server chose, as it may reach a terminal: control characters (escape sequences
    that would redraw or retitle the user's terminal) as "?"."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", str(text))
