"""The image store: one read-only rootfs per image, a JSON record beside it, tags as aliases.

    $PYCTR_ROOT/images/
      alpine/3.20.3/image.json     the record: Id, RepoTags, Version, Source, Sha256, Size, Created...
      alpine/3.20.3/rootfs/        the unpacked image: the read-only lower layer of containers
      mytools/v1/...               an imported image lives under the tag it was imported as
      _cache/alpine-minirootfs-3.20.3-x86_64.tar.gz    verified downloads, kept for a quick re-pull

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

import os
import re
import sys
from pathlib import Path

from pyctr.runtime import explain, jsonstore, settings
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError

PULLABLE = ("alpine",)  # the names `pull` knows how to fetch; any other name comes from `import`
RECORD = "image.json"
CACHE = "_cache"  # cannot clash with an image name: those start with a letter or digit

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
    """(name, tag) of an image pyctr can pull or already has; PyctrError (exit 125) otherwise."""
    name, tag = parse_ref(ref)
    if name not in PULLABLE and not any(_has_name(record, name) for _, record in _records()):
        raise NotFoundError(f"unknown image {name!r}: pyctr pulls {', '.join(PULLABLE)}; "
                            "other images come from `pyctr import FILE NAME[:TAG]`")
    return name, tag


# -- looking images up (local only, no network) ------------------------------------------------


def find_image(ref: str) -> dict | None:
    """The record of a local image by NAME[:TAG] or by (a prefix of) its ID, with "Rootfs"; or None."""
    located = _locate(ref)
    return _public(*located[:2]) if located else None


def ensure_image(ref: str, pull: bool = True) -> dict:
    """The record of image `ref`, with "Rootfs": the absolute path of its read-only rootfs.

    A local lookup when the image is here; otherwise a pull (progress on stderr), as `docker run` does.
    """
    image = find_image(ref)
    if image is not None:
        return image
    name, tag = normalize_ref(ref)
    if not pull or name not in PULLABLE:
        raise NotFoundError(f"No such image: {name}:{tag}")
    print(f"Unable to find image '{name}:{tag}' locally", file=sys.stderr)
    return pull_image(f"{name}:{tag}")


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


def pull_image(ref: str, mirror: str | None = None, quiet: bool = False) -> dict:
    """Resolve `ref` on the Alpine mirror, download, verify and unpack it unless it is here, tag it."""
    from pyctr.images import alpine

    say = _say(quiet)
    name, tag = normalize_ref(ref)
    if name not in PULLABLE:
        raise PyctrError(f"cannot pull {name}: pyctr pulls only {', '.join(PULLABLE)} "
                         f"({name} was imported)")
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


def remove_image(ref: str, force: bool = False) -> list[str]:
    """Remove tag `ref`, and the image with its rootfs when that was its last tag (or `ref` is an ID).

    Refuses (ConflictError) to delete an image a container was made from, unless `force`.
    Returns Docker's lines: "Untagged: alpine:latest", "Deleted: sha256:...".
    """
    with _store_lock():
        located = _locate(ref)
        if located is None:
            shown = ref if ":" in ref or re.fullmatch(_ID_PREFIX, ref) else f"{ref}:latest"
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
        _delete(folder)
        return [f"Untagged: {t}" for t in record["RepoTags"]] + [f"Deleted: {record['Id']}"]


# -- inside the store -------------------------------------------------------------------------


def _images_dir() -> Path:
    return settings.current().images_dir


def _store_lock():
    return jsonstore.locked(settings.current().locks_dir / "images.lock")


def _records() -> list[tuple[Path, dict]]:
    """(folder, record) of every image: images/NAME/LABEL/image.json, skipping work in progress."""
    found = []
    for record_path in _record_paths():
        folder = record_path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith(("_", ".")):
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
    """(folder, record, "name:tag") for a tag, (folder, record, None) for an ID, or None."""
    records = _records()
    # The common case first, with no parsing: the ref is one of the tags.
    repo_tag = ref if ":" in ref else f"{ref}:latest"
    for folder, record in records:
        if repo_tag in record["RepoTags"]:
            return folder, record, repo_tag
    try:
        parse_ref(ref)
    except PyctrError:
        if not re.fullmatch(_ID_PREFIX, ref):
            raise
    prefix = re.fullmatch(_ID_PREFIX, ref)
    if prefix:
        hits = [(f, r) for f, r in records if r["Id"].removeprefix("sha256:").startswith(prefix.group(1))]
        if len(hits) > 1:
            raise PyctrError(f"{ref!r} matches {len(hits)} images; give more of the ID")
        if hits:
            return hits[0][0], hits[0][1], None
    return None


def _public(folder: Path, record: dict, name: str | None = None, tag: str | None = None) -> dict:
    """The record as callers see it: with the rootfs path, and Name/Tag of the ref they asked for."""
    image = dict(record)
    if name and tag:
        image["Name"], image["Tag"] = name, tag
    image["Rootfs"] = str((folder / "rootfs").absolute())
    return image


def _save(folder: Path, record: dict) -> None:
    # Name and Tag follow the first tag, so that they always name one of the image's tags.
    if record["RepoTags"]:
        record["Name"], _, record["Tag"] = record["RepoTags"][0].rpartition(":")
    record.pop("Rootfs", None)
    jsonstore.write_json(folder / RECORD, record)


def _add_tag(folder: Path, record: dict, repo_tag: str, say) -> tuple[Path, dict]:
    """Point `repo_tag` at this image, taking it off the image it named before (if any)."""
    for other_folder, other in _records():
        if other["Id"] == record["Id"] or repo_tag not in other["RepoTags"]:
            continue
        other["RepoTags"].remove(repo_tag)
        _save(other_folder, other)
        if not other["RepoTags"] and not containers_using(other["Id"]):
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
