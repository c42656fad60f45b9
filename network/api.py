"""What the runtime asks of the network side. The runtime imports this module only for
containers on a real network (not `none` or `host`), so pyroute2 stays off other paths.

The container dict is the record of pyctr.runtime.container (Docker-shaped keys):
  container["Id"], container["Name"], container["Config"]["Hostname"],
  container["HostConfig"]["NetworkMode"]     network name, e.g. "bridge" or "calico"
  container["HostConfig"]["IPAddress"]       the --ip asked for, or None
  container["HostConfig"]["PortBindings"]    Docker's shape: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
  container["NetworkSettings"]               what connect() returned last time (or {})
"""


def validate(container: dict) -> None:
    """At create time: refuse a bad --network, --ip or -p with a PyctrError (exit 125)."""
    raise NotImplementedError


def connect(container: dict, pid: int) -> dict:
    """Attach the container whose PID 1 has host PID `pid` (its netns exists, its program has
    not started). Returns Docker's NetworkSettings: IPAddress, IPPrefixLen, Gateway, MacAddress,
    Ports, Networks{NAME: {...}}."""
    raise NotImplementedError


def disconnect(container: dict) -> None:
    """The container stopped (or its monitor was SIGKILLed): remove host-side leftovers such as
    port rules and host routes. Idempotent."""
    raise NotImplementedError


def release(container: dict) -> None:
    """The container is removed: free its address. Idempotent."""
    raise NotImplementedError
