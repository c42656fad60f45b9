"""CLI commands for image archives: save (a docker-archive) and load (a docker-archive or an OCI layout).

The parser imports this module for every image command, so nothing is imported at the top
but sys: each handler imports what it uses when it runs.
"""

import sys

_HANDLERS = "pyctr.images.archive_commands"


def register(sub, command) -> None:
    """Add save and load. `command(name, "module:function", help)` returns a subparser."""
    p = command("save", f"{_HANDLERS}:cmd_save",
                "save images to a tar archive (docker-archive; stdout by default)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = command("load", f"{_HANDLERS}:cmd_load",
                "load images from a tar archive (docker-archive or OCI layout; stdin by default)")
    p.add_argument("-i", "--input", metavar="FILE", help="read FILE instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def cmd_save(args) -> int:
    from pyctr.images import archive
    from pyctr.runtime.errors import PyctrError

    out = args.output or "-"
    if out == "-" and sys.stdout.isatty():  # before any work, as Docker does
        raise PyctrError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    images = [archive.ImageToSave(tags, *image_parts(record))
              for tags, record in images_to_save(args.images)]
    archive.write_docker_archive(out, images)
    return 0


def cmd_load(args) -> int:
    import contextlib

    from pyctr.images import store
    from pyctr.runtime.errors import PyctrError

    report = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with contextlib.ExitStack() as stack:
        path = args.input or stack.enter_context(_stdin_as_file())
        contents = read_image_archive(path, report)
        install = getattr(store, "install_content", None)  # the layered store of issue 11
        if install is None:
            raise PyctrError("this pyctr cannot install layered images yet (store.install_content)")
        for content in contents:
            install(content)
            for tag in content.repo_tags:
                print(f"Loaded image: {tag}")
            if not content.repo_tags:
                print(f"Loaded image ID: {content.image_id}")
    return 0


# -- load: which format ------------------------------------------------------------------------


def read_image_archive(path, report=None) -> list:
    """The images of an image archive, as oci.ImageContent with every blob in the blob store:
    a docker-archive (manifest.json at the top) is read here, an OCI layout (index.json and
    oci-layout) by images/oci_layout.py."""
    import importlib.util

    from pyctr.images import archive
    from pyctr.runtime.errors import PyctrError

    if archive.archive_kind(path) == "docker-archive":
        return archive.read_docker_archive(path, report)
    if importlib.util.find_spec("pyctr.images.oci_layout") is None:
        raise PyctrError(f"{path} is an OCI layout, which this pyctr cannot load yet")
    from pyctr.images import oci_layout

    return oci_layout.read_oci_layout(path)


def _stdin_as_file():
    """stdin copied to a temporary file beside the blob store: reading an archive by name needs
    to seek. Refuses a terminal, as Docker does."""
    import contextlib
    import os
    import shutil
    import tempfile

    from pyctr.images import oci
    from pyctr.runtime.errors import PyctrError

    if sys.stdin.isatty():
        raise PyctrError("requested load from stdin, but stdin is empty")

    @contextlib.contextmanager
    def spooled():
        folder = oci.blobs_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".stdin-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
            yield name
        finally:
            os.unlink(name)

    return spooled()


# -- save: which images, with which tags -------------------------------------------------------


def images_to_save(refs: list[str]) -> list[tuple[list[str], dict]]:
    """[(repo_tags, record)] for `save`'s arguments, one entry per image, with Docker's rules:
    NAME:TAG saves that tag, NAME alone every tag of that repository, an ID no tag."""
    from pyctr.images import store
    from pyctr.runtime.errors import NotFoundError

    records = store.list_images()
    chosen: dict[str, tuple[list[str], dict]] = {}  # image ID -> (tags, record), in order

    def choose(record: dict, tag: str | None) -> None:
        tags, _ = chosen.setdefault(record["Id"], ([], record))
        if tag and tag not in tags:
            tags.append(tag)

    for ref in refs:
        tagged = [(r, ref) for r in records if ref in r["RepoTags"]]
        if not tagged and not _has_tag(ref):
            tagged = [(r, t) for r in records for t in r["RepoTags"] if t.rpartition(":")[0] == ref]
        if tagged:
            for record, tag in tagged:
                choose(record, tag)
            continue
        record = store.find_image(ref)  # an ID, or a prefix of one
        if record is None:
            raise NotFoundError(f"No such image: {ref}")
        choose(record, None)
    return list(chosen.values())


def _has_tag(ref: str) -> bool:
    """localhost:5000/app has no tag; localhost:5000/app:1 and app:1 do."""
    return ":" in ref.rpartition("/")[2]


def image_parts(record: dict) -> tuple[bytes, list]:
    """(config, layers) of a local image, its layers' blobs in the blob store.

    A layered image (issue 11) comes from the store: store.image_content(record) gives its
    oci.ImageContent, or None for an image of one rootfs folder, which is made into one layer.
    """
    from pyctr.images import archive, store

    content = store.image_content(record) if hasattr(store, "image_content") else None
    if content is not None:
        return content.config, content.layers
    return archive.content_for_rootfs_image(record)
