"""Test images, built offline from the Alpine minirootfs with umoci and skopeo into OCI layouts.

    layout = OciLayout(folder)            `umoci init`
    layout.base("t")                      one layer: the Alpine 3.20.3 minirootfs (umoci unpack,
                                          untar, repack), Cmd /bin/sh
    layout.add_layer("t", "t2", members)  a layer tar written here (tarfile: whiteouts and hostile
                                          entries as they are), added verbatim (umoci raw add-layer)
    layout.configure("t", "t2", ...)      the run defaults (umoci config)
    layout.rewrite_config("t", "t2", fn)  the config changed by hand (a lying diff_id)
    layout.tar(path)                      the layout as a tar, as `pyctr load -i` reads it
    zstd_copy(layout, "t", dest, "t")     the image recompressed with zstd (skopeo copy)

Tags of a layout (umoci's) are the annotation org.opencontainers.image.ref.name, which
`pyctr load` reads as the image's name when it is a reference ("pyctr-test/base:1").
"""

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

ALPINE_TARBALL = "alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz"


# As root, skopeo keeps a blob-info cache in the fixed /var/lib/containers/cache: each call runs
# in a private mount namespace with a tmpfs on /var/lib, so the cache never reaches the machine.
SKOPEO = ("unshare", "--mount", "--propagation", "private",
          "sh", "-c", 'mount -t tmpfs pyctr-skopeo /var/lib && exec skopeo "$@"', "skopeo")


def run(*argv) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def layer_member(name: str, kind=tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
                 mode: int = 0o644, uid: int = 0, gid: int = 0,
                 xattrs: dict[str, bytes] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, linkname, mode, uid, gid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    # As GNU tar --xattrs writes them; tarfile keeps binary values as surrogate escapes.
    info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in (xattrs or {}).items()}
    return info, data


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


class OciLayout:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not (self.folder / "index.json").exists():
            run("umoci", "init", "--layout", self.folder)

    def ref(self, tag: str) -> str:
        return f"{self.folder}:{tag}"

    def empty(self, tag: str) -> None:
        """An image with no layer yet (for a layer on its own)."""
        run("umoci", "new", "--image", self.ref(tag))

    def base(self, tag: str, alpine_tarball: Path, work: Path) -> None:
        run("umoci", "new", "--image", self.ref(tag))
        bundle = work / f"bundle-{tag.replace('/', '_').replace(':', '_')}"
        run("umoci", "unpack", "--image", self.ref(tag), bundle)
        run("tar", "-C", bundle / "rootfs", "-xzf", alpine_tarball)
        run("umoci", "repack", "--image", self.ref(tag), bundle)
        run("rm", "-rf", bundle)
        run("umoci", "config", "--image", self.ref(tag), "--config.cmd", "/bin/sh", "--tag", tag)

    def add_layer(self, tag: str, new_tag: str, members: list, work: Path) -> None:
        tar = write_tar(work / f"layer-{hashlib.sha256(new_tag.encode()).hexdigest()[:12]}.tar", members)
        run("umoci", "raw", "add-layer", "--image", self.ref(tag), "--tag", new_tag, tar)

    def configure(self, tag: str, new_tag: str, *options: str) -> None:
        run("umoci", "config", "--image", self.ref(tag), "--tag", new_tag, *options)

    def tag(self, tag: str, new_tag: str) -> None:
        run("umoci", "tag", "--image", self.ref(tag), new_tag)

    # -- by hand: what the tools will not make -------------------------------------------------

    def _descriptor(self, tag: str) -> dict:
        index = json.loads((self.folder / "index.json").read_text())
        return next(d for d in index["manifests"]
                    if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)

    def blob(self, digest: str) -> Path:
        return self.folder / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def manifest(self, tag: str) -> dict:
        return json.loads(self.blob(self._descriptor(tag)["digest"]).read_bytes())

    def config(self, tag: str) -> dict:
        return json.loads(self.blob(self.manifest(tag)["config"]["digest"]).read_bytes())

    def _put(self, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blob(digest).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def rewrite_config(self, tag: str, new_tag: str, change) -> None:
        """A new image `new_tag`: `tag`'s manifest with change(config) as its config."""
        config = self.config(tag)
        change(config)
        manifest = self.manifest(tag)
        descriptor = self._descriptor(tag)
        manifest["config"].update(self._put(json.dumps(config).encode()))
        descriptor = dict(descriptor, **self._put(json.dumps(manifest).encode()))
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": new_tag}
        index = json.loads((self.folder / "index.json").read_text())
        index["manifests"] = [d for d in index["manifests"]  # the tag moves to the new image
                              if d.get("annotations", {}).get("org.opencontainers.image.ref.name") != new_tag]
        index["manifests"].append(descriptor)
        (self.folder / "index.json").write_text(json.dumps(index))

    def tar(self, path: Path, only: list[str] | None = None) -> Path:
        """The layout as a tar; with `only`, a layout of just those tags (all blobs kept)."""
        index_path = self.folder / "index.json"
        original = index_path.read_text()
        try:
            if only is not None:
                index = json.loads(original)
                index["manifests"] = [d for d in index["manifests"]
                                      if d.get("annotations", {}).get("org.opencontainers.image.ref.name") in only]
                index_path.write_text(json.dumps(index))
            run("tar", "-C", self.folder, "-cf", path, ".")
        finally:
            index_path.write_text(original)
        return path


def zstd_copy(source: OciLayout, tag: str, dest: Path, dest_tag: str) -> OciLayout:
    """`tag` of `source` copied with every layer recompressed as zstd, into the layout `dest`."""
    run(*SKOPEO, "copy", "--quiet", "--dest-compress-format", "zstd",
        f"oci:{source.folder}:{tag}", f"oci:{dest}:zstd")
    copy = OciLayout(dest)
    copy.tag("zstd", dest_tag)
    return copy
