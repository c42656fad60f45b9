"""Image references as Docker reads them: [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST].

    nginx                     docker.io/library/nginx:latest
    nginx:alpine              docker.io/library/nginx:alpine
    team/app                  docker.io/team/app:latest
    localhost:5000/team/app   localhost:5000/team/app:latest
    nginx@sha256:HEX          docker.io/library/nginx, by digest (no tag)

The first component is a registry when it has a dot or a colon, or is `localhost`.
`alpine`, `alpine:latest`, `alpine:edge`, `alpine:3.20` and `alpine:3.20.3` are not registry
references: they stay the Alpine mirror's minirootfs (is_alpine_mirror_name).

Where a registry is: loopback registries over plain HTTP, as Docker does; the hosts listed in
PYCTR_INSECURE_REGISTRIES (comma-separated host[:port]) too; any other over HTTPS. docker.io goes
to PYCTR_REGISTRY_MIRROR when it is set (like Docker's registry-mirrors).
"""

import ipaddress
import os
import re
from dataclasses import dataclass

from pyctr.runtime.errors import PyctrError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
DOCKER_HUB_URL = "https://registry-1.docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")

# The grammar of github.com/distribution/reference (facts, written anew).
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # Go's \w: ASCII only
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed reference; `tag` is "latest" when neither a tag nor a digest was given."""

    registry: str  # docker.io, localhost:5000, 127.0.0.1:5000, [::1]:5000
    repository: str  # library/nginx, team/app
    tag: str | None = None
    digest: str | None = None  # sha256:HEX

    @property
    def familiar_name(self) -> str:
        """The name as Docker shows it: nginx, team/app, localhost:5000/team/app."""
        if self.registry == DEFAULT_REGISTRY and self.repository != "library/alpine":
            return self.repository.removeprefix("library/")
        # Docker Hub's alpine keeps its whole name: "alpine" is the Alpine mirror's image.
        return f"{self.registry}/{self.repository}"

    @property
    def repo_tag(self) -> str | None:
        """nginx:alpine, localhost:5000/team/app:1 (None when pulled by digest alone)."""
        return f"{self.familiar_name}:{self.tag}" if self.tag else None

    def repo_digest(self, digest: str) -> str:
        """nginx@sha256:..., the form of Docker's RepoDigests."""
        return f"{self.familiar_name}@{digest}"

    @property
    def manifest_reference(self) -> str:
        """What the registry's /manifests/ endpoint is asked for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """Read a reference; PyctrError (one line) when it does not parse."""
    rest, at, digest = text.partition("@")
    if at:
        if not _ANY_DIGEST.fullmatch(digest):
            raise PyctrError(f"invalid reference format: {text!r} has a malformed digest")
        if not _DIGEST.fullmatch(digest):
            raise PyctrError(f"invalid reference format: {text!r}: pyctr checks sha256:<64 hex> digests")
    registry, name = _split_registry(rest, text)
    name, tag = _split_tag(name, text)
    if not name:
        raise PyctrError(f"invalid reference format: {text!r}")
    if name.lower() != name:
        raise PyctrError(f"invalid reference format: repository name must be lowercase: {text!r}")
    if not all(_PATH_PART.fullmatch(part) for part in name.split("/")):
        raise PyctrError(f"invalid reference format: {text!r}")
    if re.fullmatch(r"[0-9a-f]{64}", name) and registry is None:
        raise PyctrError(f"invalid repository name ({name}), cannot specify 64-byte hexadecimal strings")
    registry = normalize_registry(registry) if registry else DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in name:
        name = f"library/{name}"
    if len(name) > _MAX_NAME:
        raise PyctrError(f"invalid reference format: repository name must not be more than {_MAX_NAME} characters")
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(registry, name, tag, digest if at else None)


def is_alpine_mirror_name(text: str) -> bool:
    """True for alpine and alpine:TAG: the Alpine mirror's names, as before registries (its tags
    are latest, edge, 3.20 and 3.20.3; another tag is an error, not a pull from Docker Hub).
    docker.io/library/alpine[:TAG] and alpine@DIGEST are Docker Hub's image."""
    return text.partition(":")[0] == "alpine" and "@" not in text


def normalize_registry(text: str) -> str:
    """host[:port] as references and the Docker config name it: docker.io for Docker Hub's names,
    the scheme and any path of a URL dropped (https://index.docker.io/v1/ -> docker.io)."""
    host = re.sub(r"^[a-z]+://", "", text.strip()).split("/", 1)[0]
    if not host or not _REGISTRY.fullmatch(host):
        raise PyctrError(f"invalid registry address {text!r}: expected host[:port]")
    return DEFAULT_REGISTRY if host.lower() in _DOCKER_HUB_ALIASES else host


def registry_url(registry: str, mirror: bool = True) -> str:
    """The base URL of a registry's API (without /v2/). `mirror`: docker.io may go to the mirror
    (pulls); a login goes to Docker Hub itself, as Docker's does."""
    if registry == DEFAULT_REGISTRY:
        mirror = os.environ.get("PYCTR_REGISTRY_MIRROR", "").strip() if mirror else ""
        if mirror and not mirror.startswith(("http://", "https://")):
            raise PyctrError(f"PYCTR_REGISTRY_MIRROR must be an http:// or https:// URL, not {mirror!r}")
        return (mirror or DOCKER_HUB_URL).rstrip("/")
    scheme = "http" if is_loopback(registry) or _is_listed_insecure(registry) else "https"
    return f"{scheme}://{registry}"


def _split_registry(text: str, whole: str) -> tuple[str | None, str]:
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not _REGISTRY.fullmatch(first):
            raise PyctrError(f"invalid reference format: {whole!r} has a malformed registry {first!r}")
        return first, rest
    return None, text


def _split_tag(name: str, whole: str) -> tuple[str, str | None]:
    # After the registry is split off, a colon can only start the tag.
    name, colon, tag = name.partition(":")
    if not colon:
        return name, None
    if not _TAG.fullmatch(tag):
        raise PyctrError(f"invalid reference format: {whole!r} has a malformed tag {tag!r}")
    return name, tag


def _host(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0]


def is_loopback(registry: str) -> bool:
    host = _host(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_listed_insecure(registry: str) -> bool:
    listed = {entry.strip() for entry in os.environ.get("PYCTR_INSECURE_REGISTRIES", "").split(",")}
    return registry in listed or _host(registry) in listed
