"""CLI commands for images: pull, images, rmi, import, load, image prune, image inspect.

The parser imports this module for every command, so nothing heavy is imported at the top:
each handler imports the store when it runs.
"""

import sys

_HANDLERS = "pyctr.images.commands"


def register(sub, command) -> None:
    """Add the image subcommands. `command(name, "module:function", help)` returns a subparser."""
    p = command("pull", f"{_HANDLERS}:cmd_pull",
                "pull an image: alpine[:TAG] (TAG latest, edge, 3.20 or 3.20.3) from the Alpine "
                "mirror, any other [REGISTRY/]NAME[:TAG|@DIGEST] from its registry")
    p.add_argument("--mirror", metavar="URL", help="Alpine mirror URL (env PYCTR_ALPINE_MIRROR)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the image of this platform from a multi-platform index (default: this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress; print only the image ID")
    p.add_argument("image", metavar="IMAGE")

    p = command("images", f"{_HANDLERS}:cmd_images", "list images")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--no-trunc", action="store_true", help="full image IDs")
    p.add_argument("--digests", action="store_true", help="show the repository digests")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("reference", nargs="?", metavar="NAME[:TAG]", help="only this repository or tag")

    p = command("rmi", f"{_HANDLERS}:cmd_rmi", "remove images (or just one of their tags)")
    p.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = command("import", f"{_HANDLERS}:cmd_import",
                "make an image from a rootfs tarball (.tar, .tar.gz, .tar.xz), offline")
    p.add_argument("file", metavar="FILE")
    p.add_argument("image", metavar="NAME[:TAG]")

    p = command("load", f"{_HANDLERS}:cmd_load", "load images from a tar archive (a docker-archive "
                "or an OCI image layout) given with -i or on stdin")
    p.add_argument("-i", "--input", metavar="FILE", help="read from FILE instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (pyctr shows none; as Docker's)")

    p = command("image", "", "manage images")
    isub = p.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    ip = isub.add_parser("prune", help="remove dangling images (no tag, no container)")
    ip.add_argument("-a", "--all", action="store_true", help="remove every image no container uses")
    ip.add_argument("-f", "--force", action="store_true", help="do not ask (pyctr never asks)")
    ip.set_defaults(handler=f"{_HANDLERS}:cmd_image_prune")
    ip = isub.add_parser("inspect", help="show images as JSON (Docker's keys)")
    ip.add_argument("-f", "--format", help="a {{.Path.To.Field}} template")
    ip.add_argument("images", nargs="+", metavar="IMAGE")
    ip.set_defaults(handler=f"{_HANDLERS}:cmd_image_inspect")
    ip = isub.add_parser("ls", help="list images")
    ip.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    ip.add_argument("--no-trunc", action="store_true", help="full image IDs")
    ip.add_argument("--digests", action="store_true", help="show the repository digests")
    ip.add_argument("--format", choices=["table", "json"], default="table")
    ip.add_argument("reference", nargs="?", metavar="NAME[:TAG]", help="only this repository or tag")
    ip.set_defaults(handler=f"{_HANDLERS}:cmd_images")
    ip = isub.add_parser("rm", help="remove images (or just one of their tags)")
    ip.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    ip.add_argument("images", nargs="+", metavar="IMAGE")
    ip.set_defaults(handler=f"{_HANDLERS}:cmd_rmi")

    from pyctr.images import auth_commands

    auth_commands.register(sub, command)

    from pyctr.images import archive_commands

    archive_commands.register(sub, command)


def cmd_pull(args) -> int:
    from pyctr.images import store

    image = store.pull_image(args.image, mirror=args.mirror, quiet=args.quiet, platform=args.platform)
    if args.quiet:
        print(image["Id"])
    elif image.get("Version"):  # the Alpine mirror's
        print(f"Pulled {image['Name']}:{image['Tag']} ({image['Version']}, {image['Id']})")
    else:  # a registry's: its full reference, as docker pull's last line
        from pyctr.images import reference

        print(reference.parse(args.image))
    return 0


def cmd_images(args) -> int:
    from pyctr.images import store

    images = store.list_images()
    if args.reference:
        name, tag = store.split_tag(args.reference)
        name, tag_given = store.familiar_name(name), store.has_tag(args.reference)
        images = [i for i in images
                  if any(store.split_tag(t)[0] == name and (not tag_given or store.split_tag(t)[1] == tag)
                         for t in i["RepoTags"])]
    if args.format == "json":
        import json

        print(json.dumps([_images_entry(image) for image in images], indent=2))
        return 0
    if args.quiet:
        for image in images:
            print(_image_id(image, args.no_trunc))
        return 0
    from pyctr.runtime import humanize

    rows = []
    for image in images:
        for repo_tag in image["RepoTags"] or ["<none>:<none>"]:
            name, _, tag = repo_tag.rpartition(":")
            row = [name, tag]
            if args.digests:
                row.append(_digest_of(image, name))
            rows.append(row + [_image_id(image, args.no_trunc), humanize.ago(image.get("Created") or ""),
                               humanize.size(image.get("Size") or 0)])
    header = ["REPOSITORY", "TAG", *(["DIGEST"] if args.digests else []), "IMAGE ID", "CREATED", "SIZE"]
    print(humanize.table(rows, header))
    return 0


def _images_entry(image: dict) -> dict:
    """Podman's `images --format json` keys (as `ps --format json` has Podman's), which Docker
    users script against too; RepoTags as Docker has them."""
    from pyctr.images import store
    from pyctr.runtime import humanize

    created = image.get("Created") or ""
    digests = image.get("RepoDigests", [])
    return {"Id": image["Id"].removeprefix("sha256:"), "ParentId": "", "RepoTags": image["RepoTags"],
            "RepoDigests": digests, "Size": image.get("Size") or 0, "SharedSize": 0,
            "VirtualSize": image.get("Size") or 0, "Labels": image.get("Config", {}).get("Labels"),
            "Containers": len(store.containers_using(image["Id"])), "Names": image["RepoTags"],
            "Digest": digests[0].partition("@")[2] if digests else "",
            "Created": int(humanize.parse_rfc3339(created)) if created else 0, "CreatedAt": created}


def _digest_of(image: dict, repository: str) -> str:
    """The digest the image has in `repository` (the part of a RepoDigest after @), as
    `docker images --digests` shows it; an untagged image shows its first one."""
    for repo_digest in image.get("RepoDigests", []):
        name, _, digest = repo_digest.partition("@")
        if name == repository or repository == "<none>":
            return digest
    return "<none>"


def cmd_image_prune(args) -> int:
    from pyctr.images import store
    from pyctr.runtime import humanize

    lines, freed = store.prune_images(all_unused=args.all)
    if lines:
        print("Deleted Images:")
        for line in lines:
            print(line)
        print()
    print(f"Total reclaimed space: {humanize.size(freed)}")
    return 0


def cmd_image_inspect(args) -> int:
    from pyctr.runtime import listing

    return listing.inspect_refs(args.images, args.format, containers=False)


def cmd_load(args) -> int:
    from pyctr.images import oci_layout, store

    with oci_layout.opened(args.input or "-") as archive:
        try:
            for content in read_archive(archive):
                store.install_content(content)
                for repo_tag in content.repo_tags:  # printed with -q too, as docker load does
                    print(f"Loaded image: {repo_tag}", flush=True)
                if not content.repo_tags:
                    print(f"Loaded image ID: {content.image_id}", flush=True)
        except BaseException:
            store.drop_unused_blobs(archive.written)  # what this load brought, unless an image has it
            raise
    return 0


def read_archive(archive) -> list:
    """The images of an image archive (oci_layout.Archive), as oci.ImageContent with every blob
    copied into the blob store (their digests in archive.written): by what the tar holds
    (manifest.json: a docker-archive, which Docker 25 also writes beside an OCI layout;
    index.json and oci-layout: an OCI image layout)."""
    from pyctr.images import oci_layout
    from pyctr.runtime.errors import PyctrError

    names = archive.top_names()
    if "manifest.json" in names:
        from pyctr.images import archive as docker_archive

        return docker_archive.read_docker_tar(archive.tar, archive.label, written=archive.written)
    if "oci-layout" in names and "index.json" in names:
        return oci_layout.read(archive)
    raise PyctrError(f"{archive.label}: not an image archive pyctr can load (a docker-archive has "
                     "manifest.json, an OCI image layout index.json and oci-layout at its top)")


def cmd_rmi(args) -> int:
    from pyctr.images import store
    from pyctr.runtime.errors import PyctrError

    exit_code = 0
    for ref in args.images:  # like Docker: go on with the others, fail at the end
        try:
            for line in store.remove_image(ref, force=args.force):
                print(line)
        except PyctrError as e:
            print(f"Error: {e}", file=sys.stderr)
            exit_code = exit_code or e.exit_code
    return exit_code


def cmd_import(args) -> int:
    from pyctr.images import store

    image = store.import_image(args.file, args.image)
    print(image["Id"])
    return 0


def _image_id(image: dict, full: bool) -> str:
    return image["Id"] if full else image["Id"].removeprefix("sha256:")[:12]
