"""pyctr's image store: Alpine pulls, verification, safe unpacking."""
