"""Alpine's download mirror: which release a tag names, and a verified download of its minirootfs.

A tag resolves through the mirror's own index, as a person would do it by hand:

    latest  ->  {mirror}/latest-stable/releases/{arch}/latest-releases.yaml, then the tarball
                from the branch that index names ({mirror}/v3.20/...), which stays put
    3.20    ->  {mirror}/v3.20/releases/{arch}/latest-releases.yaml
    edge    ->  {mirror}/edge/releases/{arch}/latest-releases.yaml
    3.20.3  ->  {mirror}/v3.20/releases/{arch}/alpine-minirootfs-3.20.3-{arch}.tar.gz(.sha256, .sha512)

requests, urllib3, yaml and tqdm are imported inside the functions that need them: the CLI must
start fast for every command that does not download anything.
"""

import hashlib
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pyctr.images.transfer import CutShort, Transfer, http_get, open_session, reason, stream_errors
from pyctr.runtime import explain
from pyctr.runtime.errors import NotFoundError, PyctrError

DEFAULT_MIRROR = "https://dl-cdn.alpinelinux.org/alpine"
TAG_FORMS = "latest, edge, a branch such as 3.20, or a release such as 3.20.3"

_BRANCH_TAG = re.compile(r"(\d+)\.(\d+)")
_RELEASE_TAG = re.compile(r"(\d+\.\d+)\.\d+")
_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}

# `uname -m` -> the folder name Alpine's mirror uses for that architecture.
_ALPINE_ARCH = {
    "x86_64": "x86_64", "amd64": "x86_64",
    "aarch64": "aarch64", "arm64": "aarch64",
    "armv7l": "armv7", "armv8l": "armv7",
    "armv6l": "armhf",
    "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "loongarch64": "loongarch64",
}


@dataclass(frozen=True)
class Release:
    """One minirootfs tarball on the mirror, with the digests it is published with."""

    version: str  # 3.20.3 (edge has dates: 20240923)
    branch: str  # v3.20 or edge
    arch: str
    url: str
    sha256: str
    sha512: str | None  # when the mirror publishes one
    size: int | None  # bytes of the tarball, when the index says
    released: str | None  # RFC 3339, when the index says

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def is_tag(tag: str) -> bool:
    return tag in ("latest", "edge") or bool(_BRANCH_TAG.fullmatch(tag) or _RELEASE_TAG.fullmatch(tag))


def host_arch() -> str:
    machine = os.uname().machine
    return _ALPINE_ARCH.get(machine, machine)


def mirror_url(override: str | None = None) -> str:
    url = override or os.environ.get("PYCTR_ALPINE_MIRROR") or DEFAULT_MIRROR
    if not url.startswith(("http://", "https://")):
        raise PyctrError(f"the Alpine mirror must be an http:// or https:// URL, not {url!r}")
    return url.rstrip("/")


def resolve(tag: str, mirror: str, arch: str, transfer: Transfer) -> Release:
    """The release `tag` names on `mirror` today. Asks the mirror; downloads no tarball."""
    with open_session(transfer) as session:
        if _RELEASE_TAG.fullmatch(tag):
            return _exact_release(session, transfer, tag, mirror, arch)
        return _release_from_index(session, transfer, tag, mirror, arch)


def download(release: Release, folder: Path, transfer: Transfer, progress: bool) -> Path:
    """Download `release` into `folder`, verified, and return its path there.

    The bytes go to a hidden temporary file that is renamed into place only once its digests
    match, so a failed, cut-short or tampered download leaves nothing behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / release.filename
    part = folder / f".{release.filename}.{os.getpid()}.part"
    explain.step("curl", "-fLo", part, release.url)
    try:
        with open_session(transfer) as session:
            digests = _download_with_retries(session, transfer, release, part, progress)
        check_digests(release, digests, part)
        explain.step("mv", part, final)
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    return final


def file_digests(path: Path) -> dict[str, str]:
    hashes = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512()}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()} | {"size": path.stat().st_size}


def check_digests(release: Release, actual: dict, path: Path) -> None:
    """Compare what was downloaded with what the mirror publishes; the error shows both."""
    for algo in ("sha256", "sha512"):
        expected = getattr(release, algo)
        if expected is None:
            continue
        explain.shell(f"echo {shlex.quote(f'{expected}  {path}')} | {algo}sum -c")
        if actual[algo] != expected:
            size_note = ""
            if release.size is not None and actual["size"] != release.size:
                size_note = f"; {actual['size']} bytes received, the index says {release.size}"
            raise PyctrError(f"checksum mismatch for {release.url}: expected {algo} {expected}, "
                             f"got {actual[algo]}{size_note}")


# -- resolution -------------------------------------------------------------------------------


def _release_from_index(session, transfer: Transfer, tag: str, mirror: str, arch: str) -> Release:
    folder = {"latest": "latest-stable", "edge": "edge"}.get(tag) or f"v{tag}"
    index = f"{mirror}/{folder}/releases/{arch}/latest-releases.yaml"
    text = _get_text(session, transfer, index, f"Alpine branch {tag} for {arch}",
                     missing_ok=(folder == "latest-stable"))
    if text is None:
        # latest-stable is a symlink on the real mirror; a copied mirror may keep it as a
        # small file holding the branch name ("v3.20"), which a web server serves as is.
        pointer = _get_text(session, transfer, f"{mirror}/latest-stable", "", missing_ok=True)
        if pointer is None or not re.fullmatch(r"v\d+\.\d+", pointer.strip()):
            raise NotFoundError(f"no latest-stable release on the mirror: {index} returned 404 Not Found")
        folder = pointer.strip()
        index = f"{mirror}/{folder}/releases/{arch}/latest-releases.yaml"
        text = _get_text(session, transfer, index, f"Alpine branch {folder} for {arch}")
    entry = _minirootfs_entry(text, index, arch)

    filename = str(entry.get("file", ""))
    if not re.fullmatch(r"[A-Za-z0-9._+-]+\.tar\.gz", filename):
        raise PyctrError(f"{index} names no usable minirootfs file (file: {filename!r})")
    digests = {}
    for algo in ("sha256", "sha512"):
        value = str(entry.get(algo) or "").lower() or None
        if value is not None and not _HEX[algo].fullmatch(value):
            raise PyctrError(f"{index} lists a malformed {algo} for {filename}")
        digests[algo] = value
    if digests["sha256"] is None:
        raise PyctrError(f"{index} lists no sha256 for {filename}; refusing an unverifiable download")
    size = entry.get("size")
    branch = _canonical_branch(entry, folder, index)
    return Release(
        version=str(entry.get("version") or tag),
        branch=branch,
        arch=arch,
        url=f"{mirror}/{branch}/releases/{arch}/{filename}",
        sha256=digests["sha256"],
        sha512=digests["sha512"],
        size=size if isinstance(size, int) else None,
        released=_release_time(entry),
    )


def _canonical_branch(entry: dict, folder: str, index: str) -> str:
    """The folder of the branch the release belongs to (v3.20), for its download URL.

    latest-stable moves to each new branch, so a URL through it names another tarball tomorrow:
    the record keeps the branch's own URL (from the index's `branch` field), whether
    latest-stable is a symlink or a pointer file on this mirror.
    """
    if folder != "latest-stable" or entry.get("branch") is None:
        return folder
    branch = str(entry["branch"])
    if not re.fullmatch(r"v\d+\.\d+|edge", branch):
        raise PyctrError(f"{index} names a malformed branch {branch!r}")
    return branch


def _exact_release(session, transfer: Transfer, version: str, mirror: str, arch: str) -> Release:
    branch = "v" + _RELEASE_TAG.fullmatch(version).group(1)
    url = f"{mirror}/{branch}/releases/{arch}/alpine-minirootfs-{version}-{arch}.tar.gz"
    sha256 = _published_digest(session, transfer, url, "sha256", f"Alpine release {version} for {arch}")
    sha512 = _published_digest(session, transfer, url, "sha512", "", missing_ok=True)
    return Release(version=version, branch=branch, arch=arch, url=url, sha256=sha256,
                   sha512=sha512, size=None, released=None)


def _published_digest(session, transfer, url: str, algo: str, what: str, missing_ok=False) -> str | None:
    """The digest in URL.sha256 (or .sha512): `HEX  FILENAME`, as sha256sum writes it."""
    text = _get_text(session, transfer, f"{url}.{algo}", what, missing_ok=missing_ok)
    if text is None:
        return None
    words = text.split()
    if not words or not _HEX[algo].fullmatch(words[0].lower()):
        raise PyctrError(f"{url}.{algo} does not hold a {algo} digest")
    return words[0].lower()


def _minirootfs_entry(text: str, index: str, arch: str) -> dict:
    import yaml

    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "syntax error"
        raise PyctrError(f"cannot read {index}: not valid YAML ({problem})") from None
    for entry in entries if isinstance(entries, list) else []:
        if (isinstance(entry, dict) and entry.get("flavor") == "alpine-minirootfs"
                and str(entry.get("arch", arch)) == arch):
            return entry
    raise PyctrError(f"{index} lists no alpine-minirootfs release for {arch}")


def _release_time(entry: dict) -> str | None:
    date, clock = entry.get("date"), entry.get("time")
    if date is None:
        return None
    if isinstance(clock, int):  # YAML 1.1 reads 12:05:36 as a base-60 number
        clock = f"{clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}"
    return f"{date}T{clock or '00:00:00'}Z"


# -- HTTP -------------------------------------------------------------------------------------


def _check_status(response, transfer: Transfer, url: str, what: str) -> None:
    if response.status_code == 404:
        raise NotFoundError(f"unknown {what}: {url} returned 404 Not Found" if what
                            else f"{url} returned 404 Not Found")
    if response.status_code >= 400:
        tries = f" ({transfer.tries} tries)" if response.status_code >= 500 else ""
        raise PyctrError(f"{url} returned {response.status_code} {response.reason}{tries}")


def _get_text(session, transfer, url: str, what: str, missing_ok: bool = False) -> str | None:
    explain.step("curl", "-fsSL", url)
    with http_get(session, transfer, url) as response:
        if response.status_code == 404 and missing_ok:
            return None
        _check_status(response, transfer, url, what)
        return response.text


def _download_with_retries(session, transfer: Transfer, release: Release, part: Path, progress: bool) -> dict:
    # urllib3 retries a request until its headers arrive; a body cut short is retried here.
    for attempt in range(transfer.tries):
        try:
            return _download_once(session, transfer, release, part, progress)
        except CutShort as e:
            if attempt + 1 == transfer.tries:
                raise PyctrError(f"download of {release.url} failed: {e} ({transfer.tries} tries)") from None
            time.sleep(transfer.backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def _download_once(session, transfer: Transfer, release: Release, part: Path, progress: bool) -> dict:
    hashes = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512()}
    received = 0
    with http_get(session, transfer, release.url, stream=True) as response:
        _check_status(response, transfer, release.url, f"Alpine release {release.version}")
        expected = int(response.headers.get("Content-Length") or 0) or release.size
        bar = _progress_bar(expected, release.filename) if progress else None
        try:
            with open(part, "wb") as out:
                # The raw stream: hash the bytes exactly as the mirror sent them, never decoded.
                for chunk in response.raw.stream(1 << 16, decode_content=False):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except stream_errors() as e:
            of = f" of {expected}" if expected else ""
            raise CutShort(f"the connection broke after {received}{of} bytes ({reason(e)})") from None
        finally:
            if bar is not None:
                bar.close()
    return {name: h.hexdigest() for name, h in hashes.items()} | {"size": received}


def _progress_bar(total: int | None, name: str):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, dynamic_ncols=True)
