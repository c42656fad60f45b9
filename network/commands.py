"""CLI commands for networks: `pyctr network create|ls|inspect|rm|route`."""


def register(sub, command) -> None:
    """Add the network subcommands. `command(name, "module:function", help)` returns a subparser."""
