"""CLI commands for images: pull, images, rmi, import.

The parser imports this module for every command, so nothing heavy is imported at the top:
each handler imports the store when it runs.
"""

import sys

_HANDLERS = "pyctr.images.commands"


def register(sub, command) -> None:
    """Add the image subcommands. `command(name, "module:function", help)` returns a subparser."""
    p = command("pull", f"{_HANDLERS}:cmd_pull",
                "pull an image: alpine[:TAG], TAG is latest, edge, 3.20 or 3.20.3")
    p.add_argument("--mirror", metavar="URL", help="Alpine mirror URL (env PYCTR_ALPINE_MIRROR)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress; print only the image ID")
    p.add_argument("image", metavar="IMAGE")

    p = command("images", f"{_HANDLERS}:cmd_images", "list images")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--no-trunc", action="store_true", help="full image IDs")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("reference", nargs="?", metavar="NAME[:TAG]", help="only this repository or tag")

    p = command("rmi", f"{_HANDLERS}:cmd_rmi", "remove images (or just one of their tags)")
    p.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = command("import", f"{_HANDLERS}:cmd_import",
                "make an image from a rootfs tarball (.tar, .tar.gz, .tar.xz), offline")
    p.add_argument("file", metavar="FILE")
    p.add_argument("image", metavar="NAME[:TAG]")

    from pyctr.images import archive_commands

    archive_commands.register(sub, command)


def cmd_pull(args) -> int:
    from pyctr.images import store

    image = store.pull_image(args.image, mirror=args.mirror, quiet=args.quiet)
    if args.quiet:
        print(image["Id"])
    else:
        print(f"Pulled {image['Name']}:{image['Tag']} ({image['Version']}, {image['Id']})")
    return 0


def cmd_images(args) -> int:
    from pyctr.images import store

    images = store.list_images()
    if args.reference:
        name, colon, tag = args.reference.partition(":")
        images = [i for i in images
                  if any(t.rpartition(":")[0] == name and (not colon or t == args.reference)
                         for t in i["RepoTags"])]
    if args.format == "json":
        import json

        print(json.dumps(images, indent=2))
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
            rows.append((name, tag, image.get("Version") or "", _image_id(image, args.no_trunc),
                         humanize.ago(image.get("Created") or ""), humanize.size(image.get("Size") or 0)))
    print(humanize.table(rows, ["REPOSITORY", "TAG", "VERSION", "IMAGE ID", "CREATED", "SIZE"]))
    return 0


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
