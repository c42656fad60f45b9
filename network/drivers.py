"""The two drivers with nothing to build: `none` (the container keeps only lo) and `host` (the
container stays in the node's netns). The runtime handles both itself, without calling connect();
they exist so that the registry and `network ls` know them."""

from pyctr.network.driver import Endpoint, NetworkDriver


class _NothingToDo(NetworkDriver):
    uses_ipam = False

    def create(self, net) -> None:
        pass

    def is_ready(self, net) -> bool:
        return True

    def remove(self, net) -> None:
        pass

    def attach(self, net, container_id, pid, address, ports) -> Endpoint:
        return Endpoint(interface="")

    def detach(self, net, container_id, ports) -> None:
        pass


class NoneDriver(_NothingToDo):
    """Only a loopback interface."""


class HostDriver(_NothingToDo):
    """The node's own network stack."""
