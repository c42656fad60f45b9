"""CLI command `save`: images to a docker-archive tar (`load` is in images/commands.py).

The parser imports this module for every image command, so nothing is imported at the top
but sys: each handler imports what it uses when it runs.
"""

import sys

_HANDLERS = "pyctr.images.archive_commands"


def register(sub, command) -> None:
    """Add save. `command(name, "module:function", help)` returns a subparser."""
    p = command("save", f"{_HANDLERS}:cmd_save",
                "save images to a tar archive (docker-archive; stdout by default)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("images", nargs="+", metavar="IMAGE")


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
        if store.has_tag(ref):
            wanted = store.local_ref(ref)  # docker.io/library/nginx:alpine is nginx:alpine
            tagged = [(r, wanted) for r in records if wanted in r["RepoTags"]]
        else:
            name = store.familiar_name(ref)
            tagged = [(r, t) for r in records for t in r["RepoTags"] if store.split_tag(t)[0] == name]
        if tagged:
            for record, tag in tagged:
                choose(record, tag)
            continue
        record = store.find_image(ref)  # an ID, or a prefix of one
        if record is None:
            raise NotFoundError(f"No such image: {ref}")
        choose(record, None)
    return list(chosen.values())


def image_parts(record: dict) -> tuple[bytes, list]:
    """(config, layers) of a local image (find_image's record), its layers' blobs in the blob store.

    A layered image has its config blob (its ID) and its layers' blobs in the store; an image of
    one rootfs folder (Alpine, imports) is made into one layer.
    """
    from pyctr.images import archive, oci
    from pyctr.runtime.errors import PyctrError

    if "Rootfs" in record:
        return archive.content_for_rootfs_image(record)
    config_blob = oci.blob_path(record["Id"])
    try:
        config = config_blob.read_bytes()
    except FileNotFoundError:
        raise PyctrError(f"the config of image {record['Id'][7:19]} is missing from the blob store "
                         f"({config_blob}): pull or load the image again") from None
    layers = [oci.Layer(layer["Digest"], layer["MediaType"], layer["Size"]) for layer in record["Layers"]]
    return config, layers
