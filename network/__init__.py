"""pyctr's network drivers: none, host, bridge (NAT) and routed (Calico-style)."""
