"""What the OCI image spec and Docker's image formats call things, and the content-addressed blob store.

An image from a registry, from `pyctr load` or for `pyctr save` is the same few parts:

    manifest   JSON: the config's digest and the layers' digests, media types and sizes
    config     JSON: architecture, os, the run defaults (Entrypoint, Cmd, Env, WorkingDir, User,
               ExposedPorts), and rootfs.diff_ids: the sha256 of each layer's uncompressed tar
    layers     tar archives, plain, gzip or zstd, each the changes to the layers below it

Every blob is kept once, by digest, whatever images share it:

    $PYCTR_ROOT/images/_blobs/sha256/HEX
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pyctr.runtime import settings
from pyctr.runtime.errors import PyctrError

# Manifests: what a registry may answer for a reference.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

# Configs.
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

# Layers, by compression ("" is a plain tar).
LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Layer:
    """One layer as a manifest names it; its blob is in the blob store."""

    digest: str  # sha256:HEX of the blob as stored (compressed or not)
    media_type: str
    size: int

    @property
    def compression(self) -> str:
        """"", "gzip" or "zstd"; PyctrError for a layer type pyctr cannot unpack."""
        try:
            return LAYER_COMPRESSION[self.media_type]
        except KeyError:
            raise PyctrError(f"layer {self.digest[:19]} has media type {self.media_type!r}, "
                             "which pyctr cannot unpack") from None


@dataclass
class ImageContent:
    """An image whose blobs (config and layers) are all in the blob store, ready to install.

    What a pull and a load hand to the store, which unpacks the layers and records the image.
    """

    config: bytes  # the config blob as it was fetched: its sha256 is the image's ID
    layers: list[Layer]
    manifest_digest: str | None = None  # sha256:HEX of the manifest fetched from a registry
    repo_tags: list[str] = field(default_factory=list)  # "nginx:alpine", "localhost:5000/a/b:1"
    repo_digests: list[str] = field(default_factory=list)  # "nginx@sha256:..."
    source: str = ""  # where it came from: a registry URL or a file

    @property
    def image_id(self) -> str:
        import hashlib

        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def check_digest(digest: str) -> str:
    """The hex part of a sha256 digest; PyctrError for anything else (other algorithms too)."""
    match = _DIGEST.fullmatch(digest or "")
    if not match:
        raise PyctrError(f"unsupported or malformed digest {digest!r}: pyctr checks sha256:<64 hex>")
    return match.group(1)


def blobs_dir() -> Path:
    return settings.current().images_dir / "_blobs" / "sha256"


def blob_path(digest: str) -> Path:
    """Where the blob with this digest is (or goes) in the blob store."""
    return blobs_dir() / check_digest(digest)


def has_blob(digest: str) -> bool:
    return os.path.isfile(blob_path(digest))
