"""pyctr's runtime: the CLI, container records, spawning, cgroups and privileges."""
