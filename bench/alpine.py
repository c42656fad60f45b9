"""The Alpine minirootfs every contender starts: one tarball, fetched through one mirror.

The project's copy of the Alpine mirror (../shared/alpine-mirror, or --mirror-dir) is served on
127.0.0.1 on a free port for the length of the set-up (pyctr pulls from it, and the peers' tarball
comes from it). Another mirror, the real one included, only when named (--mirror URL): a bench that
finds no local copy stops rather than reach out to the internet unasked, as the tests do.
"""

import argparse
import contextlib
import functools
import hashlib
import http.server
import re
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import yaml

REAL_MIRROR = "https://dl-cdn.alpinelinux.org/alpine"
ARCH = "x86_64"


def default_mirror_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "shared" / "alpine-mirror"


def add_mirror_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mirror-dir", type=Path, default=default_mirror_dir(),
                        help="local Alpine mirror to serve (default ../shared/alpine-mirror)")
    parser.add_argument("--mirror", metavar="URL",
                        help=f"an Alpine mirror to fetch from instead, e.g. the real one, {REAL_MIRROR}")


def check_mirror_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything is set up, a run that has no local mirror and names none."""
    if args.mirror is None and not (args.mirror_dir / "alpine").is_dir():
        parser.error(f"no Alpine mirror in {args.mirror_dir} (it has no alpine/ folder): give a local copy "
                     f"with --mirror-dir, or a mirror to fetch from with --mirror URL (e.g. {REAL_MIRROR})")


@contextlib.contextmanager
def mirror(mirror_dir: Path, url: str | None = None) -> Iterator[str]:
    """The mirror's base URL (…/alpine): `url` when given, else a loopback server of mirror_dir
    while the block runs."""
    if url is not None:
        yield url.rstrip("/")
        return
    if not (mirror_dir / "alpine").is_dir():
        raise FileNotFoundError(f"no Alpine mirror in {mirror_dir}")
    handler = functools.partial(_QuietHandler, directory=str(mirror_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alpine"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def fetch_minirootfs(base_url: str, dest_dir: Path) -> Path:
    """Download latest-stable's minirootfs tarball into dest_dir and check its sha256."""
    releases = f"{base_url}/{_latest_stable(base_url)}/releases/{ARCH}"
    with urllib.request.urlopen(f"{releases}/latest-releases.yaml", timeout=60) as r:
        entries = yaml.safe_load(r.read())
    entry = next(e for e in entries if e.get("flavor") == "alpine-minirootfs")
    dest = dest_dir / entry["file"]
    digest = hashlib.sha256()
    with urllib.request.urlopen(f"{releases}/{entry['file']}", timeout=300) as r, open(dest, "wb") as f:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != entry["sha256"]:
        raise RuntimeError(f"{entry['file']}: sha256 mismatch")
    return dest


def _latest_stable(base_url: str) -> str:
    """"latest-stable" is a symlink to the branch on the mirror; a copy that lost the link keeps
    a small file holding the branch name ("v3.20") instead. Take either."""
    try:
        with urllib.request.urlopen(f"{base_url}/latest-stable", timeout=60) as r:
            body = r.read(64).decode(errors="replace").strip()
    except urllib.error.HTTPError:
        return "latest-stable"
    return body if re.fullmatch(r"v\d+\.\d+", body) else "latest-stable"


def unpack(tarball: Path, rootfs: Path) -> Path:
    """Unpack with tar(1) as root, so owners, modes and links come out as in the image."""
    rootfs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(rootfs)], check=True)
    return rootfs
