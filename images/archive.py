"""Docker's image archive, "docker-archive": what `docker save` writes and `docker load` reads.

    manifest.json   [{"Config": "HEX.json", "RepoTags": ["alpine:latest"], "Layers": ["ID/layer.tar"]}]
    repositories    {"alpine": {"latest": "ID"}}: the tags as Docker before 1.10 kept them
    HEX.json        an image's config; HEX, its sha256, is the image ID
    ID/layer.tar    a layer: an uncompressed tar (Docker names the folder by a v1 layer ID, pyctr
                    by the layer's diff_id)

Docker 25 and later write an OCI layout with the same manifest.json beside it, whose paths are
blobs/sha256/HEX. Layers in either may be plain, gzip or zstd tars: read from their first bytes.

Reading never extracts the archive. Its tar headers are indexed first, and a member whose name is
absolute or climbs with "..", or a link that leads out of the archive, refuses the whole archive
(links inside it are followed by name: Docker itself writes a layer used twice as a symlink).
manifest.json and the configs are read in memory, bounded; each layer manifest.json names is copied
into the blob store, hashed as it streams, and checked against its config's rootfs.diff_ids. The
blobs wait under temporary names beside the store until the whole archive is verified, so a
refused archive adds nothing to the store.
"""

import copy
import hashlib
import json
import os
import re
import stat
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import NamedTuple

from pyctr.images import compression, oci
from pyctr.runtime import explain
from pyctr.runtime.errors import NotFoundError, PyctrError

MANIFEST = "manifest.json"
REPOSITORIES = "repositories"
MAX_JSON = 16 << 20  # bytes of manifest.json or of a config: they are read in memory
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_CHUNK = 1 << 20
_LINK_HOPS = 8
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
# Docker's media types by compression ("" is a plain tar): the archive is Docker's format.
_DOCKER_LAYER = {c: t for t, c in oci.LAYER_COMPRESSION.items() if ".docker." in t}
# Alpine's architecture names (images/alpine.py) -> the OCI config's architecture and variant.
_OCI_PLATFORM = {
    "x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "armv7": ("arm", "v7"),
    "armhf": ("arm", "v6"), "x86": ("386", None), "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None), "riscv64": ("riscv64", None), "loongarch64": ("loong64", None),
}


class ImageToSave(NamedTuple):
    """One image for write_docker_archive; its layers' blobs are in the blob store."""

    repo_tags: list[str]  # Docker's familiar form: "alpine:latest", "localhost:5000/team/app:1"
    config: bytes  # the config blob: its sha256 is the image ID
    layers: list[oci.Layer]


# -- which archive -----------------------------------------------------------------------------


def archive_kind(path: "str | os.PathLike") -> str:
    """"docker-archive" (manifest.json at the top) or "oci-layout" (index.json and oci-layout)."""
    top = set()
    with _open_tar(path) as tar:
        for member in _members(tar, path):
            name = member.name.strip("/").removeprefix("./")
            if "/" not in name:
                top.add(name)
    if MANIFEST in top:
        return "docker-archive"
    if {"index.json", "oci-layout"} <= top:
        return "oci-layout"
    if REPOSITORIES in top:
        raise PyctrError(f"{path} is an image archive of Docker before 1.10 (a repositories file "
                         "but no manifest.json), which pyctr does not read")
    raise PyctrError(f"{path} is neither a docker-archive (manifest.json) "
                     "nor an OCI layout (index.json and oci-layout)")


# -- reading -----------------------------------------------------------------------------------


def read_docker_archive(path: "str | os.PathLike", report=None) -> list[oci.ImageContent]:
    """The images of the docker-archive file `path`: see read_docker_tar."""
    path = Path(path)
    with _open_tar(path) as tar:
        return read_docker_tar(tar, path, report)


def read_docker_tar(tar: tarfile.TarFile, label, report=None, written: list | None = None
                    ) -> list[oci.ImageContent]:
    """The images of a docker-archive opened for reading, their config and layer blobs verified
    and in the blob store. `label` names the archive in errors.

    `report(line)` hears of each layer read; the digests of the blobs this adds to the store are
    appended to `written`. PyctrError (exit 125) for an archive that is not sound, in one line;
    nothing is added to the blob store then.
    """
    explain.comment(f"read the docker-archive {label} (manifest.json, configs, layers) into the blob store")
    with _Staging() as staging:
        archive = _Archive(tar, label)
        manifest = archive.read_json(MANIFEST, "the archive's manifest")
        if not isinstance(manifest, list) or not manifest:
            raise PyctrError(f"{label}: {MANIFEST} lists no images")
        legacy_tags = _legacy_tags(archive)
        layers_read: dict[str, tuple[oci.Layer, str]] = {}  # member -> (layer, diff_id)
        contents = []
        for number, entry in enumerate(manifest, 1):
            contents.append(_read_image(archive, staging, entry, number, legacy_tags, layers_read, report))
        added = staging.commit()
    if written is not None:
        written += added
    return contents


def _read_image(archive: "_Archive", staging: "_Staging", entry, number: int, legacy_tags: dict,
                layers_read: dict, report) -> oci.ImageContent:
    where = f"{archive.path}: image {number} of {MANIFEST}"
    if not isinstance(entry, dict):
        raise PyctrError(f"{where} is not an object")
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    repo_tags = entry.get("RepoTags")
    if not isinstance(config_name, str):
        raise PyctrError(f"{where} has no Config")
    if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
        raise PyctrError(f"{where} has no list of Layers")
    if repo_tags is not None and not (isinstance(repo_tags, list)
                                      and all(isinstance(t, str) for t in repo_tags)):
        raise PyctrError(f"{where} has RepoTags that are not a list of names")

    config_member, config = archive.read_bytes(config_name, "a config")
    config_digest = staging.add_bytes(config)
    _check_blob_name(config_member, config_digest, archive.path)
    diff_ids = config_diff_ids(config, f"{where}: its config {config_name}")
    if len(diff_ids) != len(layer_names):
        raise PyctrError(f"{where}: its config lists {len(diff_ids)} layers (rootfs.diff_ids), "
                         f"{MANIFEST} names {len(layer_names)}")

    layers = []
    for position, (name, diff_id) in enumerate(zip(layer_names, diff_ids), 1):
        member = archive.resolve(name, "a layer")
        fresh = member.name not in layers_read
        if fresh:
            layers_read[member.name] = _read_layer(archive, staging, member)
        layer, actual = layers_read[member.name]
        if actual != diff_id:
            raise PyctrError(f"{where}: layer {position} ({name}) is not the layer its config names: "
                             f"diff_id {diff_id}, but the tar's sha256 is {actual}")
        if fresh and report:
            report(f"Read layer {diff_id[:19]} ({layer.size} bytes, verified)")
        layers.append(layer)

    if not repo_tags:
        repo_tags = legacy_tags.get(layer_names[-1].split("/")[0], []) if layer_names else []
    return oci.ImageContent(config=config, layers=layers,
                            repo_tags=[_familiar_tag(t, archive.path) for t in repo_tags],
                            source=f"docker-archive:{archive.path}")


def _read_layer(archive: "_Archive", staging: "_Staging", member: tarfile.TarInfo) -> tuple[oci.Layer, str]:
    """Copy one layer into the staging area: (its Layer, its diff_id)."""
    with archive.tar.extractfile(member) as stream:
        digest, temp, head = staging.add(stream)
    _check_blob_name(member, digest, archive.path)
    kind = compression.sniff(head)
    if kind not in _DOCKER_LAYER:
        raise PyctrError(f"{archive.path}: layer {member.name} is compressed with {kind}; "
                         "image layers are plain, gzip or zstd tars")
    diff_id = digest if not kind else compression.uncompressed_digest(temp, f"layer {member.name}", kind)[0]
    return oci.Layer(digest, _DOCKER_LAYER[kind], member.size), diff_id


def _legacy_tags(archive: "_Archive") -> dict[str, list[str]]:
    """{top layer ID: ["repo:tag", ...]} from the `repositories` file, for images without RepoTags."""
    if REPOSITORIES not in archive.members:
        return {}
    repositories = archive.read_json(REPOSITORIES, "the repositories file")
    tags: dict[str, list[str]] = {}
    for repo, by_tag in (repositories.items() if isinstance(repositories, dict) else ()):
        for tag, layer_id in (by_tag.items() if isinstance(by_tag, dict) else ()):
            if isinstance(layer_id, str):
                tags.setdefault(layer_id, []).append(f"{repo}:{tag}")
    return tags


def _check_blob_name(member: tarfile.TarInfo, digest: str, path: Path) -> None:
    """A member named blobs/sha256/HEX (an OCI-shaped archive) must hash to HEX."""
    named = _BLOB_NAME.fullmatch(member.name)
    if named and "sha256:" + named.group(1) != digest:
        raise PyctrError(f"{path}: {member.name} does not match its name: its sha256 is {digest}")


def _familiar_tag(tag: str, path: Path) -> str:
    """The RepoTag a tag in the archive gets (store.familiar_ref: docker.io/library/nginx:1 is
    nginx:1, alpine:3 is docker.io/library/alpine:3, the mirror's alpine names being its own)."""
    from pyctr.images import store

    if "@" in tag or not store.has_tag(tag):
        raise PyctrError(f"{path}: {MANIFEST} has a malformed tag {tag!r} (NAME:TAG)")
    try:
        return store.familiar_ref(tag)
    except PyctrError as e:
        raise PyctrError(f"{path}: {MANIFEST} has a malformed tag {tag!r}: {e}") from None


def config_diff_ids(config: bytes, what: str) -> list[str]:
    """rootfs.diff_ids of an image config; PyctrError when it is not a sound config."""
    try:
        parsed = json.loads(config)
    except (ValueError, UnicodeDecodeError):
        raise PyctrError(f"{what} is not valid JSON") from None
    rootfs = parsed.get("rootfs") if isinstance(parsed, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise PyctrError(f"{what} has no rootfs.diff_ids")
    for diff_id in diff_ids:
        oci.check_digest(diff_id)
    return diff_ids


class _Archive:
    """The members of a tar by name, checked; nothing is extracted, members are read by name."""

    def __init__(self, tar: tarfile.TarFile, path: Path):
        self.tar, self.path = tar, path
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in _members(tar, path):
            name = _archive_path(member.name)
            if name is None:
                why = ("is an absolute path" if member.name.startswith("/")
                       else "climbs out of the archive with '..'")
                raise PyctrError(f"refusing to load {path}: entry {member.name!r} {why}")
            member = copy.copy(member)  # the caller's TarInfo keeps its name
            member.name = name
            if member.issym() or member.islnk():
                self._link_target(member)  # refuses a link that leads out, even one never read
            self.members[member.name] = member  # a later member of one name wins, as in tar -x

    def resolve(self, name: str, what: str) -> tarfile.TarInfo:
        """The regular file `name` is, after links; PyctrError if it is missing or leaves."""
        wanted = _archive_path(name)
        if wanted is None:
            raise PyctrError(f"refusing to load {self.path}: {MANIFEST} names {what} {name!r}, "
                             "outside the archive")
        member = self.members.get(wanted)
        for _ in range(_LINK_HOPS):
            if member is None or not (member.issym() or member.islnk()):
                break
            member = self.members.get(self._link_target(member))
        if member is None:
            raise PyctrError(f"{self.path}: {MANIFEST} names {what} {name!r}, "
                             "which is not in the archive")
        if not member.isfile():
            raise PyctrError(f"{self.path}: {MANIFEST} names {what} {name!r}, which is not a file")
        return member

    def read_bytes(self, name: str, what: str) -> tuple[tarfile.TarInfo, bytes]:
        member = self.resolve(name, what)
        if member.size > MAX_JSON:
            raise PyctrError(f"{self.path}: {name} has {member.size} bytes, "
                             f"more than pyctr reads for {what} ({MAX_JSON})")
        with self.tar.extractfile(member) as f:
            return member, f.read()

    def read_json(self, name: str, what: str):
        _, data = self.read_bytes(name, what)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PyctrError(f"{self.path}: {name} is not valid JSON") from None

    def _link_target(self, member: tarfile.TarInfo) -> str:
        """The archive path a link points at: a symlink's target is read from the link's folder,
        a hardlink's from the top. Refuses targets that are absolute or climb above the top."""
        target = member.linkname
        refuse = PyctrError(f"refusing to load {self.path}: entry {member.name!r} "
                            f"is a link to {target!r}, outside the archive")
        if target.startswith("/"):
            raise refuse
        parts = member.name.split("/")[:-1] if member.issym() else []
        for part in target.split("/"):
            if part == "..":
                if not parts:
                    raise refuse
                parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return "/".join(parts)


def _archive_path(name: str) -> str | None:
    """`name` as a path from the top of the archive; None when it is absolute or has ".."."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else "/".join(parts)


def _open_tar(path) -> tarfile.TarFile:
    """The archive for reading by name (plain, or compressed as `docker save | gzip` makes it)."""
    from pyctr.images import unpack

    try:
        return tarfile.open(path, "r:*", tarinfo=unpack.BoundedTarInfo)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise PyctrError(f"{path} is a folder, not a tar archive") from None
    except (tarfile.TarError, EOFError, zlib.error):
        raise PyctrError(f"{path} is not a tar archive") from None


def _members(tar: tarfile.TarFile, path):
    """The tar's members, headers only; a damaged or cut-short tar is one line."""
    try:
        yield from tar
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise PyctrError(f"cannot read {path}: {e or 'the archive ends early (truncated?)'}") from None


# -- blobs -------------------------------------------------------------------------------------


class _HashingWriter:
    """A file that hashes what is written to it, and keeps its first bytes (for the compression)."""

    def __init__(self, out):
        self.out, self.sha256, self.head = out, hashlib.sha256(), b""

    def write(self, data: bytes) -> int:
        if len(self.head) < 512:
            self.head += data[: 512 - len(self.head)]
        self.sha256.update(data)
        return self.out.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class _Staging:
    """New blobs in temporary files beside the blob store (the same file system, for the rename),
    renamed into place by commit(); whatever is not committed is deleted on exit."""

    def __init__(self):
        self.temps: dict[str, Path] = {}  # digest -> temporary file

    def __enter__(self) -> "_Staging":
        return self

    def __exit__(self, *exc) -> None:
        for temp in self.temps.values():
            temp.unlink(missing_ok=True)
        self.temps.clear()

    def write(self, produce) -> tuple[str, Path, bytes]:
        """(digest, temporary path, first bytes) of what produce(writer) writes."""
        folder = oci.blobs_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".staged-{os.getpid()}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                sink = _HashingWriter(out)
                produce(sink)
        except BaseException:
            os.unlink(name)
            raise
        digest = sink.digest
        if digest in self.temps:  # the same bytes twice: keep one
            os.unlink(name)
        else:
            self.temps[digest] = Path(name)
        return digest, self.temps[digest], sink.head

    def add(self, stream) -> tuple[str, Path, bytes]:
        def copy(sink):
            while chunk := stream.read(_CHUNK):
                sink.write(chunk)

        return self.write(copy)

    def add_bytes(self, data: bytes) -> str:
        return self.write(lambda sink: sink.write(data))[0]

    def commit(self) -> list[str]:
        """Move the blobs into the store; the digests of those that were not there."""
        added = []
        for digest, temp in list(self.temps.items()):
            final = oci.blob_path(digest)
            if final.is_file():  # a blob that is there is good: keep it
                temp.unlink()
            else:
                explain.step("mv", temp, final)
                os.rename(temp, final)
                added.append(digest)
            del self.temps[digest]
        return added


# -- writing -----------------------------------------------------------------------------------


class _LayerToWrite(NamedTuple):
    name: str  # HEX/layer.tar, HEX the diff_id's
    blob: Path
    compression: str
    diff_id: str
    size: int  # bytes of the uncompressed tar


def write_docker_archive(out: str, images) -> None:
    """Write `images` (ImageToSave, or (repo_tags, config, layers)) as a docker-archive to the file
    `out` (a temporary file renamed into place), or to stdout when `out` is "-".

    Every layer is written as an uncompressed tar, decompressed as it streams, and its sha256
    must be its config's diff_id: checked before the first byte of the archive is written, and
    again while the layer is written. A layer that two images share is written once.
    """
    manifest, repositories, configs, layers = _plan(images)
    if out == "-":
        if sys.stdout.isatty():
            raise PyctrError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        sys.stdout.flush()
        _write(sys.stdout.buffer, manifest, repositories, configs, layers)
        sys.stdout.buffer.flush()
        return
    target = Path(out)
    folder = target.absolute().parent
    if not folder.is_dir():
        raise PyctrError(f"cannot write {out}: no such folder {folder}")
    if target.is_dir():
        raise PyctrError(f"cannot write {out}: it is a folder")
    explain.comment(f"write a docker-archive of {len(manifest)} image(s) to {out}")
    # 0600, as `docker save -o` makes it: an image may hold secrets.
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, manifest, repositories, configs, layers)
            f.flush()
            os.fsync(f.fileno())
        explain.step("mv", temp, target)
        os.rename(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _plan(images) -> tuple[list, dict, dict, dict]:
    """manifest.json, repositories, {name: config}, {diff_id: _LayerToWrite}; every check that
    can be made before writing is made here."""
    manifest, repositories, configs = [], {}, {}
    layers: dict[str, _LayerToWrite] = {}
    for repo_tags, config, image_layers in images:
        config_hex = hashlib.sha256(config).hexdigest()
        diff_ids = config_diff_ids(config, f"the config of image sha256:{config_hex[:12]}")
        if len(diff_ids) != len(image_layers):
            raise PyctrError(f"image sha256:{config_hex[:12]} has {len(image_layers)} layers, "
                             f"its config lists {len(diff_ids)}")
        configs[f"{config_hex}.json"] = config
        names = []
        for layer, diff_id in zip(image_layers, diff_ids):
            if diff_id not in layers:
                layers[diff_id] = _plan_layer(layer, diff_id)
            names.append(layers[diff_id].name)
        manifest.append({"Config": f"{config_hex}.json", "RepoTags": list(repo_tags) or None,
                         "Layers": names})
        for repo_tag in repo_tags if names else ():
            repo, _, tag = repo_tag.rpartition(":")
            repositories.setdefault(repo, {})[tag] = names[-1].split("/")[0]
    return manifest, repositories, configs, layers


def _plan_layer(layer: oci.Layer, diff_id: str) -> _LayerToWrite:
    blob = oci.blob_path(layer.digest)
    if not blob.is_file():
        raise PyctrError(f"layer {layer.digest} is missing from the blob store ({blob}); "
                         "pull the image again")
    if layer.compression:
        actual, size = compression.uncompressed_digest(blob, f"layer {layer.digest}", layer.compression)
    else:
        actual, size = layer.digest, blob.stat().st_size  # the store's name is its sha256
    if actual != diff_id:
        raise PyctrError(f"layer {layer.digest} is not the layer its config names: diff_id {diff_id}, "
                         f"but the tar's sha256 is {actual}")
    return _LayerToWrite(f"{oci.check_digest(diff_id)}/layer.tar", blob, layer.compression, diff_id, size)


def _write(out, manifest: list, repositories: dict, configs: dict, layers: dict) -> None:
    # manifest.json first: a reader that streams the archive learns what follows.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, _json(manifest))
        if repositories:
            _add_bytes(tar, REPOSITORIES, _json(repositories))
        for name, config in configs.items():
            _add_bytes(tar, name, config)
        for layer in layers.values():
            folder = tarfile.TarInfo(layer.name.split("/")[0])
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
            info = tarfile.TarInfo(layer.name)
            info.size, info.mode = layer.size, 0o644
            with compression.open_uncompressed(layer.blob, layer.compression) as raw:
                stream = compression.HashingReader(raw)
                tar.addfile(info, stream)
                if stream.read(1) or stream.digest != layer.diff_id:
                    raise PyctrError(f"layer {layer.diff_id} changed in the blob store while it was written")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- images of today's kind: one rootfs folder -------------------------------------------------


def content_for_rootfs_image(record: dict) -> tuple[bytes, list[oci.Layer]]:
    """(config, [layer]) for an image the store keeps as one rootfs folder (alpine, imports).

    The layer is the tarball the image was unpacked from, when the download cache has it and it
    verifies (or the blob store has it already); otherwise a tar of the rootfs folder, written the
    same way every time. Either way the layer goes into the blob store, and the config is built
    from the record alone, so that saving an image twice gives one image ID.
    """
    found = _layer_from_source_tarball(record)
    if found is None:
        found = _layer_from_rootfs(record)
    layer, diff_id, created_by = found
    architecture = record.get("Architecture")
    if not architecture:
        from pyctr.images import alpine

        architecture = alpine.host_arch()
    arch, variant = _OCI_PLATFORM.get(architecture, (architecture, None))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": [DEFAULT_PATH]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": created_by}],
    }
    if variant:
        config["variant"] = variant
    released = record.get("Released")  # from the mirror's index: the same for every save
    if isinstance(released, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", released):
        config["created"] = config["history"][0]["created"] = released
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode(), [layer]


def _source_name(record: dict) -> str:
    return str(record.get("Source") or "").rstrip("/").rsplit("/", 1)[-1] or str(record["Id"])


def _layer_from_source_tarball(record: dict) -> tuple[oci.Layer, str, str] | None:
    """The verified source tarball as the layer, or None when neither the blob store nor the
    download cache has it, it does not verify, or it is compressed as layers cannot be."""
    from pyctr.images import store
    from pyctr.runtime import settings

    sha256 = str(record.get("Sha256") or "")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    digest = "sha256:" + sha256
    blob = oci.blob_path(digest)
    if not blob.is_file():
        source = str(record.get("Source") or "")
        cached = settings.current().images_dir / store.CACHE / _source_name(record)
        if not source.startswith(("http://", "https://")) or not cached.is_file():
            return None
        with _Staging() as staging, open(cached, "rb") as f:
            copied, _, head = staging.add(f)
            if copied != digest or compression.sniff(head) not in _DOCKER_LAYER:
                return None  # damaged, or xz: the rootfs folder is the truth
            staging.commit()
    kind = compression.sniff_file(blob)
    if kind not in _DOCKER_LAYER:
        return None
    diff_id = digest if not kind else compression.uncompressed_digest(blob, f"layer {digest}", kind)[0]
    layer = oci.Layer(digest, _DOCKER_LAYER[kind], blob.stat().st_size)
    return layer, diff_id, f"pyctr: {_source_name(record)}"


def _layer_from_rootfs(record: dict) -> tuple[oci.Layer, str, str]:
    rootfs = Path(record["Rootfs"])
    if not rootfs.is_dir():
        raise PyctrError(f"image {record['Id']} has no rootfs at {rootfs}")
    explain.shell(f"tar -cf - --numeric-owner --xattrs --sort=name -C {rootfs} .  # into the blob store")
    with _Staging() as staging:
        digest, _, _ = staging.write(lambda sink: tar_tree(rootfs, sink))
        staging.commit()
    size = oci.blob_path(digest).stat().st_size
    return (oci.Layer(digest, _DOCKER_LAYER[""], size), digest,
            f"pyctr: the rootfs of {_source_name(record)}")


def tar_tree(top: Path, out) -> None:
    """Write the tree under `top` as a plain tar to the file `out`, the same bytes every time for
    the same tree: names sorted, numeric owners (no names), modes, mtimes in whole seconds,
    hardlinks, symlinks, fifos and xattrs (but not the host's SELinux label, nor overlayfs's
    own). Devices and sockets are left out: a rootfs needs none, the runtime makes /dev."""
    seen: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, path in _sorted_walk(str(top)):
            st = os.lstat(path)
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            info.uname = info.gname = ""
            info.mtime = int(st.st_mtime)
            content = None
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                first = seen.setdefault((st.st_dev, st.st_ino), name) if st.st_nlink > 1 else name
                if first != name:
                    info.type, info.linkname = tarfile.LNKTYPE, first
                else:
                    info.size, content = st.st_size, path
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
            else:
                continue
            info.pax_headers = _xattr_headers(path)
            if content is None:
                tar.addfile(info)
            else:
                with open(content, "rb") as f:
                    tar.addfile(info, f)


def _sorted_walk(top: str, relative: str = ""):
    """(name relative to top, path) of everything under top, sorted, a folder before its contents."""
    with os.scandir(os.path.join(top, relative) if relative else top) as entries:
        found = sorted(entries, key=lambda e: e.name)
    for entry in found:
        name = f"{relative}/{entry.name}" if relative else entry.name
        yield name, entry.path
        if entry.is_dir(follow_symlinks=False):
            yield from _sorted_walk(top, name)


def _xattr_headers(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    headers = {}
    for name in sorted(names):
        if name == "security.selinux" or name.startswith("trusted.overlay."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        # tarfile writes a value that is not UTF-8 as the raw bytes (hdrcharset=BINARY).
        headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return headers
