"""CLI commands for images: pull, images, rmi, import. Heavy modules are imported inside handlers."""


def register(sub, command) -> None:
    """Add the image subcommands. `command(name, "module:function", help)` returns a subparser."""
    p = command("pull", "pyctr.images.store:cmd_pull", "pull an image (alpine[:TAG])")
    p.add_argument("--mirror", help="Alpine mirror URL (env PYCTR_ALPINE_MIRROR)")
    p.add_argument("image", metavar="IMAGE")
