"""Read an OCI image layout tar (what `skopeo copy ... oci-archive:` and `umoci` make) into the
blob store, as oci.ImageContent for store.install_content.

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 an image index: one descriptor per image (or per nested index),
                               its name in the annotation org.opencontainers.image.ref.name
    blobs/sha256/HEX           manifests, configs and layers, by digest

Every blob is copied into the blob store through a hash and kept only if its digest (and the
size its descriptor gives) match. Names: a ref.name that is a reference (NAME:TAG, or a NAME with
a "/") becomes Docker's familiar tag (io.containerd.image.name, which containerd and Docker add,
is taken first); a bare ref.name ("latest") names no repository, and the image is loaded untagged.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tarfile

from pyctr.images import oci
from pyctr.runtime.errors import PyctrError

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_JSON = 4 << 20  # manifests, indexes and configs are small; refuse to read a huge one


class Archive:
    """A tar opened for reading its members by name (seekable: a file, or stdin copied aside)."""

    def __init__(self, tar: tarfile.TarFile, label: str):
        self.tar = tar
        self.label = label
        self.written: list[str] = []  # digests of the blobs copied into the blob store
        self._members = {}
        for member in tar.getmembers():
            name = os.path.normpath(member.name.lstrip("/")).removeprefix("./")
            self._members[name] = member

    def top_names(self) -> set[str]:
        return {name.split("/", 1)[0] for name in self._members}

    def member(self, name: str) -> tarfile.TarInfo | None:
        member = self._members.get(name)
        return member if member is not None and member.isfile() else None

    def open(self, name: str):
        member = self.member(name)
        if member is None:
            raise PyctrError(f"{self.label}: {name} is missing")
        return self.tar.extractfile(member)

    def read_json(self, name: str):
        member = self.member(name)
        if member is None:
            raise PyctrError(f"{self.label}: {name} is missing")
        if member.size > MAX_JSON:
            raise PyctrError(f"{self.label}: {name} is too large for JSON ({member.size} bytes)")
        try:
            return json.loads(self.open(name).read())
        except (ValueError, UnicodeDecodeError):
            raise PyctrError(f"{self.label}: {name} is not JSON") from None


@contextlib.contextmanager
def opened(source: str):
    """The archive FILE, or "-": stdin, copied aside first (tarfile needs to seek)."""
    from pyctr.runtime import settings

    spool = None
    try:
        if source == "-":
            import sys

            if sys.stdin.isatty():
                raise PyctrError("requested load from stdin, but stdin is a terminal: use -i FILE or < FILE")
            folder = settings.current().images_dir
            settings.make_private(folder)
            spool = folder / f".load-{os.getpid()}.tar"
            with open(spool, "wb") as out:
                shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
            path, label = spool, "stdin"
        else:
            path, label = source, source
            if not os.path.isfile(path):
                raise PyctrError(f"open {source}: no such file")
        from pyctr.images import unpack

        try:
            tar = tarfile.open(path, "r:*", tarinfo=unpack.BoundedTarInfo)
        except tarfile.ReadError:  # its text lists every method tried, one line each
            raise PyctrError(f"{label}: not a readable tar archive") from None
        except (tarfile.TarError, OSError) as e:
            raise PyctrError(f"{label}: not a readable tar archive ({e})") from None
        with tar:
            yield Archive(tar, label)
    finally:
        if spool is not None:
            spool.unlink(missing_ok=True)


def read(archive: Archive) -> list[oci.ImageContent]:
    """The images of an OCI layout, each with its blobs in the blob store."""
    layout = archive.read_json("oci-layout")
    if not isinstance(layout, dict) or not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise PyctrError(f"{archive.label}: oci-layout does not say imageLayoutVersion 1.x")
    index = archive.read_json("index.json")
    images: dict[str, oci.ImageContent] = {}  # by manifest digest: several names, one image
    for descriptor in _descriptors(index, archive.label, "index.json"):
        manifest_digest, manifest = _image_manifest(archive, descriptor)
        content = images.get(manifest_digest)
        if content is None:
            content = images[manifest_digest] = _content(archive, manifest_digest, manifest)
        name = _repo_tag(descriptor)
        if name and name not in content.repo_tags:
            content.repo_tags.append(name)
    if not images:
        raise PyctrError(f"{archive.label}: index.json lists no image")
    return list(images.values())


def _descriptors(index, label: str, where: str) -> list[dict]:
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
        raise PyctrError(f"{label}: {where} has no list of manifests")
    return manifests


def _image_manifest(archive: Archive, descriptor: dict) -> tuple[str, dict]:
    """(digest, manifest) of the image a descriptor names; for an index, this machine's image."""
    for _ in range(4):  # an index may name an index; not deeper than this
        digest = descriptor.get("digest", "")
        data = _copy_blob(archive, descriptor, small=True)
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PyctrError(f"{archive.label}: manifest {digest} is not JSON") from None
        media_type = descriptor.get("mediaType") or document.get("mediaType")
        if media_type in oci.MANIFEST_TYPES or (media_type is None and "config" in document):
            return digest, document
        if media_type not in oci.INDEX_TYPES:
            raise PyctrError(f"{archive.label}: {digest} is a {media_type}, not an image manifest or index")
        descriptor = _this_platform(_descriptors(document, archive.label, digest), archive.label, digest)
    raise PyctrError(f"{archive.label}: indexes nested too deep")


def _this_platform(descriptors: list[dict], label: str, digest: str) -> dict:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
    for d in descriptors:
        platform = d.get("platform") or {}
        if platform.get("os", "linux") == "linux" and platform.get("architecture") == arch:
            return d
    raise PyctrError(f"{label}: index {digest} has no image for linux/{arch}")


def _content(archive: Archive, manifest_digest: str, manifest: dict) -> oci.ImageContent:
    config_descriptor = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layers, list):
        raise PyctrError(f"{archive.label}: manifest {manifest_digest} has no config or layers")
    config = _copy_blob(archive, config_descriptor, small=True)
    found = []
    for descriptor in layers:
        if not isinstance(descriptor, dict):
            raise PyctrError(f"{archive.label}: manifest {manifest_digest} lists a layer that is not an object")
        layer = oci.Layer(str(descriptor.get("digest", "")), str(descriptor.get("mediaType", "")),
                          int(descriptor.get("size") or 0))
        _ = layer.compression  # PyctrError for a layer type pyctr cannot unpack, before copying it
        _copy_blob(archive, descriptor)
        found.append(layer)
    return oci.ImageContent(config=config, layers=found, manifest_digest=manifest_digest,
                            source=f"oci-archive:{archive.label}")


def _repo_tag(descriptor: dict) -> str | None:
    from pyctr.images import store

    annotations = descriptor.get("annotations") or {}
    name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
    if not isinstance(name, str) or not name or (":" not in name and "/" not in name):
        return None
    return store.familiar_ref(name)


def _copy_blob(archive: Archive, descriptor: dict, small: bool = False) -> bytes | None:
    """Copy the blob a descriptor names into the blob store, verified (digest, and size when
    given); a blob already there is not copied. Returns its bytes when `small` (JSON blobs)."""
    digest = str(descriptor.get("digest", ""))
    hex_digest = oci.check_digest(digest)
    name = f"blobs/sha256/{hex_digest}"
    target = oci.blob_path(digest)
    if target.is_file():
        return target.read_bytes() if small else None
    member = archive.member(name)
    if member is None:
        raise PyctrError(f"{archive.label}: blob {digest} is missing")
    size = descriptor.get("size")
    if isinstance(size, int) and member.size != size:
        raise PyctrError(f"{archive.label}: blob {digest} has {member.size} bytes, its descriptor says {size}")
    if small and member.size > MAX_JSON:
        raise PyctrError(f"{archive.label}: {digest} is too large for JSON ({member.size} bytes)")
    from pyctr.runtime import settings

    settings.make_private(target.parent)
    part = target.with_name(f".{hex_digest}.{os.getpid()}.part")
    sha256 = hashlib.sha256()
    try:
        with archive.open(name) as source, open(part, "wb") as out:
            while chunk := source.read(1 << 20):
                sha256.update(chunk)
                out.write(chunk)
        if sha256.hexdigest() != hex_digest:
            raise PyctrError(f"{archive.label}: blob {digest} does not match its digest "
                             f"(its content is sha256:{sha256.hexdigest()})")
        os.rename(part, target)
        archive.written.append(digest)
    finally:
        part.unlink(missing_ok=True)
    return target.read_bytes() if small else None
