"""The image store: images as JSON records, their files as read-only folders, tags as aliases.

Two kinds of image. The Alpine minirootfs (and `pyctr import` tarballs) are one rootfs each:

    $PYCTR_ROOT/images/
      alpine/3.20.3/image.json     the record: Id, RepoTags, Version, Source, Sha256, Size, Created...
      alpine/3.20.3/rootfs/        the unpacked image: the read-only lower layer of containers
      mytools/v1/...               an imported image lives under the tag it was imported as
      _cache/alpine-minirootfs-3.20.3-x86_64.tar.gz    verified downloads, kept for a quick re-pull

Images from a registry or a `pyctr load` (an oci.ImageContent, given to install_content) are
layered, their blobs and layers shared by every image that has them:

      _images/HEX/image.json       the record (HEX: the image ID, the sha256 of its config): Docker's
                                   Id, RepoTags, RepoDigests, Created, Config, RootFS, Size...
                                   and Blobs (the digests of its config, manifest and layer blobs)
      _blobs/sha256/HEX            every blob once, by digest (oci.py)
      _layers/HEX/diff/            every layer once, unpacked, by diff_id (layers.py)

A container's overlay stacks the image's layer folders (the record's "LayerDirs", base first)
with no copy. `rmi` and `image prune` remove a record, then the blobs and layers no other
image holds.

A tag (alpine:latest, alpine:3.20, alpine:3.20.3) is an entry in one record's RepoTags. Tags that
resolve to the same release share one record and one rootfs; an image is identified by its Id,
"sha256:" + the sha256 of the tarball it was unpacked from.

Finding an image reads these few small files and nothing else, so `pyctr run alpine` touches no
network once the image is here. Changes (pull, import, rmi) hold one file lock,
$PYCTR_STATE/locks/images.lock: two pulls of one image at once end with one good image, because
the second finds the first one's record and only adds its tag.

The runtime imports this module on every `run`, and container start-up time is a headline figure:
finding an image that is here imports nothing more than this. The download, unpacking and
hashing modules (and through them requests, yaml, tqdm) are imported by the functions that use them.
"""

import contextlib
import os
import re
import sys
from pathlib import Path

from pyctr.runtime import explain, jsonstore, settings
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError
from pyctr.runtime.options import DEFAULT_PATH

RECORD = "image.json"
CACHE = "_cache"  # cannot clash with an image name: those start with a letter or digit
LAYERED = "_images"  # the records of layered images

# Patterns as strings: re compiles (and caches) them on first use, not at import.
_NAME = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"  # Docker's grammar for one path component
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_ID_PREFIX = r"(?:sha256:)?([0-9a-f]{4,64})"


# -- references -------------------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, str]:
    """NAME[:TAG] -> (name, tag), tag "latest" by default. Checks the syntax only."""
    name, colon, tag = ref.partition(":")
    if not colon:
        tag = "latest"
    if not re.fullmatch(_NAME, name) or len(name) > 128:
        raise PyctrError(f"invalid image name {name!r} in {ref!r}: "
                         "use lower-case letters, digits, and . _ - between them")
    if not re.fullmatch(_TAG, tag):
        raise PyctrError(f"malformed tag {tag!r} in {ref!r}")
    if name == "alpine":
        from pyctr.images import alpine

        if not alpine.is_tag(tag):
            raise PyctrError(f"malformed tag {tag!r} for alpine: use {alpine.TAG_FORMS}")
    return name, tag


def normalize_ref(ref: str) -> tuple[str, str]:
    """(name, tag) of an Alpine mirror name (alpine[:TAG]); PyctrError (exit 125) for a bad tag."""
    return parse_ref(ref)


# -- looking images up (local only, no network) ------------------------------------------------


def find_image(ref: str) -> dict | None:
    """The record of a local image by NAME[:TAG] (Docker's familiar or full name), NAME@DIGEST
    or (a prefix of) its ID, with "LayerDirs" (see _public); or None."""
    located = _locate(ref)
    return _public(*located[:2]) if located else None


def ensure_image(ref: str, pull: bool = True, platform: str | None = None) -> dict:
    """The record of image `ref`, with "LayerDirs": the absolute paths of its read-only layers.

    A local lookup when the image is here; otherwise a pull (progress on stderr), as `docker run` does:
    alpine[:TAG] from the Alpine mirror, any other reference from its registry.
    """
    image = find_image(ref)
    if image is not None:
        return image
    shown = local_ref(ref)
    if not pull:
        raise NotFoundError(f"No such image: {shown}")
    print(f"Unable to find image '{shown}' locally", file=sys.stderr)
    return pull_image(ref, platform=platform)


def list_images() -> list[dict]:
    """Every local image's record, newest first."""
    images = [_public(folder, record) for folder, record in _records()]
    return sorted(images, key=lambda r: r.get("Created") or "", reverse=True)


def containers_using(image_id: str) -> list[str]:
    """Names of the containers whose config.json says they were made from image `image_id`."""
    users = []
    for config_path in sorted(settings.current().containers_dir.glob("*/config.json")):
        config = jsonstore.read_json(config_path, {})
        if isinstance(config, dict) and config.get("ImageID") == image_id:
            users.append(str(config.get("Name") or config.get("Id") or config_path.parent.name))
    return users


# -- changing the store -----------------------------------------------------------------------


def pull_image(ref: str, mirror: str | None = None, quiet: bool = False, platform: str | None = None) -> dict:
    """Pull `ref`: alpine[:TAG] from the Alpine mirror, any other reference from its registry."""
    from pyctr.images import reference

    if not reference.is_alpine_mirror_name(ref):
        if mirror:
            raise PyctrError("--mirror is the Alpine mirror's; a registry's images come through "
                             "PYCTR_REGISTRY_MIRROR (docker.io) or their own registry")
        return _pull_from_registry(reference.parse(ref), platform, quiet)
    if platform:
        raise PyctrError(f"--platform is for registry images: the Alpine mirror's {ref} is this "
                         "machine's architecture (docker.io/library/alpine has others)")
    return _pull_from_alpine_mirror(ref, mirror, quiet)


def _pull_from_registry(ref, platform: str | None, quiet: bool) -> dict:
    """docker pull: fetch the manifest, config and layers (each verified), unpack, tag."""
    from pyctr.images import progress, registry

    say = _say(quiet)
    say(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name}")
    report = registry.silent if quiet else progress.PullProgress(sys.stderr)
    content = registry.fetch(ref, platform, report=report)
    was_here = _by_id(content.image_id) is not None
    image = install_content(content, report)
    say(f"Digest: {content.manifest_digest}")
    status = "Image is up to date" if was_here else "Downloaded newer image"
    say(f"Status: {status} for {ref.repo_tag or ref.repo_digest(ref.digest)}")
    return image


def _pull_from_alpine_mirror(ref: str, mirror: str | None, quiet: bool) -> dict:
    """Resolve `ref` on the Alpine mirror, download, verify and unpack it unless it is here, tag it."""
    from pyctr.images import alpine

    say = _say(quiet)
    name, tag = normalize_ref(ref)
    transfer = alpine.Transfer.from_env()
    mirror = alpine.mirror_url(mirror)
    arch = alpine.host_arch()
    say(f"{tag}: resolving on {mirror} ({arch})")
    release = alpine.resolve(tag, mirror, arch, transfer)
    image_id = "sha256:" + release.sha256
    say(f"{tag}: Alpine {release.version}, {release.filename}")

    with _store_lock():
        found = _by_id(image_id)
        if found:
            status = "Image is up to date"
        else:
            tarball = _verified_tarball(release, transfer, quiet, say)
            found = _install(tarball, name, release.version, {
                "Version": release.version,
                "Architecture": arch,
                "Source": release.url,
                "Sha256": release.sha256,
                "Sha512": release.sha512,
                "Released": release.released,
            }, say)
            status = "Downloaded newer image"
        folder, record = _add_tag(*found, f"{name}:{tag}", say)
    say(f"Status: {status} for {name}:{tag}")
    return _public(folder, record, name, tag)


def import_image(path: str, ref: str) -> dict:
    """Make image `ref` from a local rootfs tarball, with the same safety rules as a pull."""
    from pyctr.images import alpine

    name, tag = parse_ref(ref)
    archive = Path(path).absolute()
    if not archive.is_file():
        raise NotFoundError(f"no such file: {path}")
    explain.step("sha256sum", archive)
    digests = alpine.file_digests(archive)
    image_id = "sha256:" + digests["sha256"]
    with _store_lock():
        found = _by_id(image_id) or _install(archive, name, tag, {
            "Version": None,  # read from the rootfs's /etc/os-release once unpacked
            "Architecture": alpine.host_arch(),  # a tarball does not say; assume this machine's
            "Source": archive.as_uri(),
            "Sha256": digests["sha256"],
            "Sha512": digests["sha512"],
            "Released": None,
        }, _say(quiet=True))
        folder, record = _add_tag(*found, f"{name}:{tag}", _say(quiet=True))
    return _public(folder, record, name, tag)


def install_content(content, report=None) -> dict:
    """Install an oci.ImageContent (every blob already in the blob store): unpack the layers that
    are not here yet, checking each one's diff_id against the config, record the image and point
    its tags at it. Idempotent: an image that is here only gains the tags and digests. Returns
    the image's record, as find_image does. `report(layer, status)` hears "Pull complete" or
    "Already exists" for each layer (docker pull's last word on it).

    On a failure nothing of this image is kept: no record, and no layer that it alone unpacked.
    """
    import shutil

    from pyctr.images import layers, oci

    image_id = content.image_id
    config = _image_config(content)
    diff_ids = config["rootfs"]["diff_ids"]
    with _store_lock():
        found = _by_id(image_id)
        if found is None:
            parent = _images_dir() / LAYERED
            settings.make_private(parent)
            for stale in parent.glob(".*.tmp-*"):  # left by an install that was killed
                shutil.rmtree(stale, ignore_errors=True)
            _keep_config_blob(content)
            unpacked = []
            try:
                sizes, root_dir = [], None
                for layer, diff_id in zip(content.layers, diff_ids):
                    _ = layer.compression  # PyctrError for a media type pyctr cannot unpack
                    blob = oci.blob_path(layer.digest)
                    if not blob.is_file():
                        raise PyctrError(f"layer {layer.digest} of image {image_id[7:19]} is not in the "
                                         "blob store (removed meanwhile?): pull or load the image again")
                    existed = layers.read_record(diff_id) is not None
                    layer_record = layers.ensure_layer(blob, diff_id, f"layer {layer.digest}")
                    if not existed:
                        unpacked.append(diff_id)
                    if report:
                        report(layer.digest[7:19], "Already exists" if existed else "Pull complete")
                    sizes.append(layer_record["Size"])
                    root_dir = layer_record.get("RootDir") or root_dir  # the top-most one wins
                record = _layered_record(content, config, sizes, root_dir)
                folder = parent / image_id[7:]
                work = parent / f".{folder.name}.tmp-{os.getpid()}"
                settings.make_private(work)
                jsonstore.write_json(work / RECORD, record)
                explain.step("mv", work, folder)
                os.rename(work, folder)
            except BaseException:
                shutil.rmtree(parent / f".{image_id[7:]}.tmp-{os.getpid()}", ignore_errors=True)
                in_use = _layers_in_use()
                for diff_id in unpacked:
                    if diff_id not in in_use:
                        layers.remove_layer(diff_id)
                raise
            found = folder, record
        folder, record = found
        new_digests = [d for d in content.repo_digests if d not in record.setdefault("RepoDigests", [])]
        if new_digests:
            record["RepoDigests"] += new_digests
            _save(folder, record)
        for repo_tag in content.repo_tags:
            folder, record = _add_tag(folder, record, repo_tag, _say(quiet=True))
    name, tag = split_tag(content.repo_tags[0]) if content.repo_tags else (None, None)
    return _public(folder, record, name, tag)


def remove_image(ref: str, force: bool = False) -> list[str]:
    """Remove tag `ref`, and the image when that was its last tag (or `ref` is an ID or a digest):
    an Alpine image's rootfs, a layered image's record and then every blob and layer that no
    other image holds.

    Refuses (ConflictError) to delete an image a container was made from, unless `force`.
    Returns Docker's lines: "Untagged: alpine:latest", "Deleted: sha256:...".
    """
    with _store_lock():
        located = _locate(ref)
        if located is None:
            shown = ref if has_tag(ref) or "@" in ref or re.fullmatch(_ID_PREFIX, ref) else f"{ref}:latest"
            raise NotFoundError(f"No such image: {shown}")
        folder, record, repo_tag = located
        if repo_tag and len(record["RepoTags"]) > 1:
            record["RepoTags"].remove(repo_tag)
            _save(folder, record)
            return [f"Untagged: {repo_tag}"]
        short = _short_id(record)
        if not repo_tag and len(record["RepoTags"]) > 1 and not force:
            raise ConflictError(f"unable to delete {short}: it is tagged "
                                f"{', '.join(record['RepoTags'])}; remove the tags, or use --force")
        users = containers_using(record["Id"])
        if users and not force:
            raise ConflictError(f"unable to remove {ref}: image {short} is used by container "
                                f"{', '.join(users)}; remove the container first, or use --force")
        if users:
            print(f"Warning: container {', '.join(users)} was made from image {short} "
                  "and cannot start again", file=sys.stderr)
        lines, _ = _delete_image(folder, record)
        return lines


def prune_images(all_unused: bool = False) -> tuple[list[str], int]:
    """`image prune`: remove the dangling images (no tag, no container), or with `all_unused`
    every image no container was made from. Returns Docker's lines ("untagged: ...",
    "deleted: sha256:...") and the bytes freed."""
    lines, freed = [], 0
    with _store_lock():
        for folder, record in _records():
            if record["RepoTags"] and not all_unused or containers_using(record["Id"]):
                continue
            deleted, size = _delete_image(folder, record)
            lines += [line[0].lower() + line[1:] for line in deleted]
            freed += size
        freed += _remove_abandoned_downloads()
    return lines, freed


def _remove_abandoned_downloads() -> int:
    """Remove the partial files of downloads and loads whose process is gone (a pull that was
    SIGKILLed): `.NAME.PID.part` and `.staged-PID-*.tmp`. Those of a live process stay. Returns
    the bytes freed."""
    from pyctr.images import oci

    freed = 0
    for folder in (oci.blobs_dir(), _images_dir() / CACHE):
        for path in (*folder.glob(".*.part"), *folder.glob(".staged-*.tmp")):
            pid = path.name.rsplit(".", 2)[-2] if path.suffix == ".part" else path.name.split("-")[1]
            if pid.isdigit() and not _process_lives(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
    return freed


def _process_lives(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def drop_unused_blobs(digests: list[str]) -> None:
    """Remove these blobs unless an image holds them: what a failed load or pull brought."""
    from pyctr.images import oci

    with _store_lock():
        kept = {b for f, r in _records() if is_layered(f) for b in r.get("Blobs", [])}
        for digest in digests:
            if digest not in kept:
                oci.blob_path(digest).unlink(missing_ok=True)


def inspect_image(ref: str) -> dict | None:
    """`docker image inspect`'s keys for a local image, or None."""
    located = _locate(ref)
    if located is None:
        return None
    folder, record, _ = located
    if not is_layered(folder) and "RootFS" not in record:
        record = _add_rootfs_digest(folder, record)
    image = _public(folder, record)
    lower = list(reversed(image["LayerDirs"]))
    shown = {
        "Id": record["Id"],
        "RepoTags": record["RepoTags"],
        "RepoDigests": record.get("RepoDigests", []),
        "Parent": "",
        "Comment": record.get("Comment", ""),
        "Created": record.get("Created") or "0001-01-01T00:00:00Z",
        "Author": record.get("Author", ""),
        "Config": image["Config"],
        "Architecture": _GO_ARCH.get(record.get("Architecture", ""), record.get("Architecture", "")),
        "Os": record.get("Os") or "linux",
        "Size": record.get("Size", 0),
        "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": ":".join(lower)}},
        "RootFS": record.get("RootFS") or {"Type": "layers", "Layers": []},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
    if record.get("Variant"):
        shown["Variant"] = record["Variant"]
    return shown


# -- inside the store -------------------------------------------------------------------------


def _images_dir() -> Path:
    return settings.current().images_dir


def _store_lock():
    return jsonstore.locked(settings.current().locks_dir / "images.lock")


def _records() -> list[tuple[Path, dict]]:
    """(folder, record) of every image: images/NAME/LABEL/image.json and the layered images'
    images/_images/HEX/image.json, skipping work in progress."""
    found = []
    for record_path in _record_paths():
        folder = record_path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith(".") \
                or folder.parent.name.startswith("_") and folder.parent.name != LAYERED:
            continue
        record = jsonstore.read_json(record_path)
        if isinstance(record, dict) and isinstance(record.get("Id"), str):
            record.setdefault("RepoTags", [])
            found.append((folder, record))
    return found


def _record_paths() -> list[Path]:
    """What sorted(images.glob("*/*/image.json")) lists, by two os.scandir: pathlib's glob costs
    every `run` ~1 ms more."""
    paths = []
    for name in _visible_folders(_images_dir()):
        for label in _visible_folders(name):
            record_path = os.path.join(label, RECORD)
            if os.path.exists(record_path):
                paths.append(Path(record_path))
    return sorted(paths)


def _visible_folders(folder) -> list[str]:
    """The folders in `folder` that a glob's * matches: not hidden."""
    try:
        with os.scandir(folder) as entries:
            return [e.path for e in entries if not e.name.startswith(".") and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _has_name(record: dict, name: str) -> bool:
    return any(t.rpartition(":")[0] == name for t in record["RepoTags"])


def _by_id(image_id: str) -> tuple[Path, dict] | None:
    for folder, record in _records():
        if record["Id"] == image_id:
            return folder, record
    return None


def _locate(ref: str) -> tuple[Path, dict, str | None] | None:
    """(folder, record, "name:tag") for a tag, (folder, record, None) for an ID or a digest
    (NAME@sha256:...), or None."""
    records = _records()
    # The common case first, with no parsing: the ref is one of the tags.
    repo_tag = ref if has_tag(ref) else f"{ref}:latest"
    for folder, record in records:
        if repo_tag in record["RepoTags"]:
            return folder, record, repo_tag
    prefix = re.fullmatch(_ID_PREFIX, ref)
    if prefix:
        hits = [(f, r) for f, r in records if r["Id"].removeprefix("sha256:").startswith(prefix.group(1))]
        if len(hits) > 1:
            raise PyctrError(f"{ref!r} matches {len(hits)} images; give more of the ID")
        if hits:
            return hits[0][0], hits[0][1], None
    from pyctr.images import reference

    if reference.is_alpine_mirror_name(ref):
        parse_ref(ref)  # says what is wrong with a name such as "alpine:stable"
        return None
    parsed = reference.parse(ref)  # says what is wrong with any other reference
    if parsed.digest:
        wanted = parsed.repo_digest(parsed.digest)
        for folder, record in records:
            if wanted in record.get("RepoDigests", []):
                return folder, record, None
        return None
    if parsed.repo_tag != repo_tag:  # docker.io/library/nginx:alpine is nginx:alpine
        for folder, record in records:
            if parsed.repo_tag in record["RepoTags"]:
                return folder, record, parsed.repo_tag
    return None


def local_ref(ref: str) -> str:
    """The tag (or NAME@DIGEST) a user's reference names here, as Docker's messages show it:
    alpine -> alpine:latest (the Alpine mirror's), docker.io/library/nginx -> nginx:latest."""
    from pyctr.images import reference

    if reference.is_alpine_mirror_name(ref):
        return "{}:{}".format(*parse_ref(ref))
    parsed = reference.parse(ref)
    return parsed.repo_tag or parsed.repo_digest(parsed.digest)


def has_tag(ref: str) -> bool:
    """Whether NAME[:TAG] has its TAG: a colon after the last slash (not a registry's port)."""
    return ":" in ref.rpartition("/")[2]


def split_tag(repo_tag: str) -> tuple[str, str]:
    """"localhost:5000/app:1" -> ("localhost:5000/app", "1"); no tag is "latest"."""
    if not has_tag(repo_tag):
        return repo_tag, "latest"
    name, _, tag = repo_tag.rpartition(":")
    return name, tag


def familiar_name(name: str) -> str:
    """Docker's short form of a repository: docker.io/library/nginx -> nginx; other registries'
    names stay whole (reference.py has the rules)."""
    from pyctr.images import reference

    if reference.is_alpine_mirror_name(name):
        return name
    return reference.parse(name).familiar_name


def familiar_ref(ref: str) -> str:
    """A name from outside (a registry, an archive, a layout) as the RepoTag it gets: Docker's
    familiar form, "latest" when no tag is given; alpine:3 is docker.io/library/alpine:3, since
    the alpine names are the Alpine mirror's (local_ref reads a user's reference)."""
    from pyctr.images import reference

    parsed = reference.parse(ref)
    return parsed.repo_tag or parsed.repo_digest(parsed.digest)


def is_layered(folder: Path) -> bool:
    return folder.parent.name == LAYERED


def _public(folder: Path, record: dict, name: str | None = None, tag: str | None = None) -> dict:
    """The record as callers see it, with Name/Tag of the ref they asked for, and the folders a
    container's overlay stacks: "LayerDirs", base layer first (and "Rootfs", the one folder of an
    Alpine or imported image). An Alpine image's "Config" is the run defaults pyctr has always
    given it: /bin/sh, and the default PATH."""
    image = dict(record)
    if name and tag:
        image["Name"], image["Tag"] = name, tag
    if is_layered(folder):
        from pyctr.images import layers

        image["LayerDirs"] = [str(layers.diff_dir(d).absolute()) for d in record["RootFS"]["Layers"]]
    else:
        image["Rootfs"] = str((folder / "rootfs").absolute())
        image["LayerDirs"] = [image["Rootfs"]]
        image.setdefault("Config", {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["/bin/sh"]})
    return image


def _save(folder: Path, record: dict) -> None:
    # Name and Tag follow the first tag, so that they always name one of the image's tags.
    if record["RepoTags"]:
        record["Name"], record["Tag"] = split_tag(record["RepoTags"][0])
    for derived in ("Rootfs", "LayerDirs"):
        record.pop(derived, None)
    jsonstore.write_json(folder / RECORD, record)


def _add_tag(folder: Path, record: dict, repo_tag: str, say) -> tuple[Path, dict]:
    """Point `repo_tag` at this image, taking it off the image it named before (if any). An
    Alpine image left with no tag and no container is deleted; a layered one stays, dangling,
    as with Docker, for `image prune`."""
    for other_folder, other in _records():
        if other["Id"] == record["Id"] or repo_tag not in other["RepoTags"]:
            continue
        other["RepoTags"].remove(repo_tag)
        _save(other_folder, other)
        if not other["RepoTags"] and not is_layered(other_folder) and not containers_using(other["Id"]):
            # Nothing names the old image any more and no container uses it: it is garbage.
            say(f"{repo_tag} moved off {other.get('Version') or _short_id(other)}; "
                f"deleting that image ({_short_id(other)})")
            _delete(other_folder)
    if repo_tag not in record["RepoTags"]:
        record["RepoTags"].append(repo_tag)
        _save(folder, record)
    return folder, record


def _verified_tarball(release, transfer, quiet: bool, say) -> Path:
    """The release's tarball from the download cache, checked again, or freshly downloaded."""
    from pyctr.images import alpine

    cached = _images_dir() / CACHE / release.filename
    if cached.exists():
        try:
            alpine.check_digests(release, alpine.file_digests(cached), cached)
            say(f"Using {cached} (verified)")
            return cached
        except PyctrError:
            cached.unlink(missing_ok=True)  # stale or damaged: fetch it again
    say(f"Downloading {release.url}")
    tarball = alpine.download(release, cached.parent, transfer, progress=not quiet and sys.stderr.isatty())
    verified = "sha256 and sha512" if release.sha512 else "sha256"
    say(f"Verified {verified} of {tarball.name}")
    return tarball


def _install(archive: Path, name: str, label: str, facts: dict, say) -> tuple[Path, dict]:
    """Unpack `archive` as a new image under images/NAME/LABEL; its record has no tag yet.

    Unpacks and writes the record in a hidden folder first and renames it into place, so a
    failure leaves nothing that looks like an image. Call with the store lock held.
    """
    import shutil

    from pyctr.images import unpack

    parent = _images_dir() / name
    for stale in parent.glob(".*.tmp-*"):  # left by a pull that was killed; the lock says none runs
        shutil.rmtree(stale, ignore_errors=True)
    image_id = "sha256:" + facts["Sha256"]
    folder = parent / label
    if folder.exists():  # the same label holding other bytes: keep both
        folder = parent / f"{label}-{image_id[7:19]}"
    work = parent / f".{folder.name}.tmp-{os.getpid()}"
    try:
        for private in (parent, work):  # only root enters an image's folder: setuid files in its rootfs
            settings.make_private(private)
        unpack.unpack(archive, work / "rootfs")
        from pyctr.images import compression

        diff_id, _ = compression.uncompressed_digest(archive, str(archive))
        record = {
            "Id": image_id,
            "RepoTags": [],
            "Name": name,
            "Tag": label,
            "Version": facts["Version"] or _os_version(work / "rootfs"),
            "Architecture": facts["Architecture"],
            "Os": "linux",
            "Source": facts["Source"],
            "Sha256": facts["Sha256"],
            "Sha512": facts["Sha512"],
            "Size": unpack.tree_size(work / "rootfs"),  # bytes of the unpacked rootfs, as Docker's Size
            "ArchiveSize": archive.stat().st_size,  # bytes of the tarball
            "Created": _now(),  # when it was pulled or imported here
            "Released": facts["Released"],  # when Alpine published it, if the index says
            "RootFS": {"Type": "layers", "Layers": [diff_id]},
        }
        explain.comment(f"write the image record {work / RECORD}")
        jsonstore.write_json(work / RECORD, record)
        explain.step("mv", work, folder)
        os.rename(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        _remove_if_empty(parent)
        raise
    say(f"Unpacked {archive.name} into {folder / 'rootfs'}")
    return folder, record


def _image_config(content) -> dict:
    """The image's config, checked for what installing needs: rootfs.diff_ids, one per layer."""
    import json

    from pyctr.images import oci

    short = content.image_id[7:19]
    try:
        config = json.loads(content.config)
    except (ValueError, UnicodeDecodeError):
        raise PyctrError(f"image {short}: its config is not JSON") from None
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or rootfs.get("type") != "layers":
        raise PyctrError(f"image {short}: its config has no rootfs of type layers with diff_ids")
    if len(diff_ids) != len(content.layers):
        raise PyctrError(f"image {short}: the manifest lists {len(content.layers)} layers, "
                         f"the config {len(diff_ids)} diff_ids")
    for diff_id in diff_ids:
        oci.check_digest(diff_id)
    defaults = config.get("config") or {}
    if not isinstance(defaults, dict):
        raise PyctrError(f"image {short}: its config's run defaults (config) are not an object")
    for key in ("Entrypoint", "Cmd", "Env"):
        value = defaults.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise PyctrError(f"image {short}: config.{key} is not a list of strings")
    for key in ("WorkingDir", "User"):
        if not isinstance(defaults.get(key) or "", str):
            raise PyctrError(f"image {short}: config.{key} is not a string")
    return config


def _layered_record(content, config: dict, sizes: list[int], root_dir: dict | None) -> dict:
    from pyctr.images import oci

    blobs = [content.image_id]
    if content.manifest_digest and oci.has_blob(content.manifest_digest):
        blobs.append(content.manifest_digest)
    blobs += [layer.digest for layer in content.layers if layer.digest not in blobs]
    record = {
        "Id": content.image_id,
        "RepoTags": [],
        "RepoDigests": list(content.repo_digests),
        "Created": config.get("created") or "0001-01-01T00:00:00Z",
        "Author": config.get("author") or "",
        "Comment": config.get("comment") or "",
        "Architecture": config.get("architecture") or "",
        "Os": config.get("os") or "",
        "Config": config.get("config") or {},
        "RootFS": {"Type": "layers", "Layers": list(config["rootfs"]["diff_ids"])},
        "Size": sum(sizes),  # bytes of the unpacked layers, as Docker's Size
        "RootDir": root_dir or {"Uid": 0, "Gid": 0, "Mode": 0o755},  # of the top-most "./" entry
        "Layers": [{"Digest": layer.digest, "MediaType": layer.media_type, "Size": layer.size,
                    "DiffID": diff_id} for layer, diff_id in zip(content.layers, config["rootfs"]["diff_ids"])],
        "ManifestDigest": content.manifest_digest,
        "Blobs": blobs,  # what rmi frees, unless another image holds it
        "Source": content.source,
        "Installed": _now(),
    }
    if config.get("variant"):
        record["Variant"] = config["variant"]
    return record


def _keep_config_blob(content) -> None:
    """The config into the blob store, if its source did not put it there (its digest is the
    image ID, computed from these very bytes)."""
    from pyctr.images import oci

    if oci.has_blob(content.image_id):
        return
    path = oci.blob_path(content.image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_bytes(content.config)
    os.rename(part, path)


def _layers_in_use() -> set[str]:
    return {d for folder, record in _records() if is_layered(folder) for d in record["RootFS"]["Layers"]}


def _delete_image(folder: Path, record: dict) -> tuple[list[str], int]:
    """Delete an image (the lock held): its record, then what nothing else holds. Docker's lines
    and the bytes freed."""
    lines = [f"Untagged: {t}" for t in record["RepoTags"] + record.get("RepoDigests", [])]
    lines.append(f"Deleted: {record['Id']}")
    _delete(folder)
    if not is_layered(folder):
        return lines, record.get("Size") or 0
    from pyctr.images import layers, oci

    layers_kept = _layers_in_use()
    blobs_kept = {b for f, r in _records() if is_layered(f) for b in r.get("Blobs", [])}
    freed = 0
    for diff_id in record["RootFS"]["Layers"]:
        if diff_id in layers_kept:
            continue
        layers_kept.add(diff_id)  # an image may list one layer twice (empty layers)
        freed += (layers.read_record(diff_id) or {}).get("Size") or 0
        layers.remove_layer(diff_id)
    for digest in record.get("Blobs", []):
        if digest in blobs_kept:
            continue
        blobs_kept.add(digest)
        path = oci.blob_path(digest)
        try:
            freed += path.stat().st_size
            explain.step("rm", path)
            path.unlink()
        except FileNotFoundError:
            pass
    return lines, freed


def _add_rootfs_digest(folder: Path, record: dict) -> dict:
    """An Alpine or imported image recorded before pyctr kept its RootFS: its one layer's
    diff_id, from the tarball in the download cache (once; saved). Without the tarball (an
    import of an older pyctr), no layers are listed."""
    from pyctr.images import compression

    source = record.get("Source") or ""
    cached = _images_dir() / CACHE / source.rsplit("/", 1)[-1] if source.startswith("http") else None
    if cached is None or not cached.is_file():
        return record
    with _store_lock():
        located = _by_id(record["Id"])
        if located is None:
            return record
        folder, record = located
        diff_id, _ = compression.uncompressed_digest(cached, str(cached))
        record["RootFS"] = {"Type": "layers", "Layers": [diff_id]}
        _save(folder, record)
    return record


_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7": "arm", "armhf": "arm", "x86": "386"}


def _delete(folder: Path) -> None:
    """Remove an image folder: renamed away first, so a half-deleted image is never found."""
    import shutil

    doomed = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-deleting")
    explain.step("rm", "-rf", folder)
    os.rename(folder, doomed)
    shutil.rmtree(doomed)
    _remove_if_empty(folder.parent)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _os_version(rootfs: Path) -> str | None:
    """VERSION_ID of an imported rootfs (Alpine also has /etc/alpine-release)."""
    from pyctr.images import unpack

    release = unpack.read_file_inside(rootfs, "etc/alpine-release")
    if release and release.strip():
        return release.strip()
    for path in ("etc/os-release", "usr/lib/os-release"):
        text = unpack.read_file_inside(rootfs, path) or ""
        match = re.search(r"^VERSION_ID=\"?([^\"\n]*)\"?$", text, re.MULTILINE)
        if match:
            return match.group(1)
    return None


def _short_id(record: dict) -> str:
    return record["Id"].removeprefix("sha256:")[:12]


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _say(quiet: bool):
    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    return say
