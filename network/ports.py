"""Published ports: Docker's PortBindings in the container record, as PortMapping objects."""

import ipaddress

from pyctr.network.driver import PortMapping
from pyctr.runtime.errors import ConflictError, PyctrError

PROTOCOLS = ("tcp", "udp")


def _port(text, what: str) -> int:
    try:
        port = int(str(text))
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise PyctrError(f"invalid {what} {text!r}: expected a number from 1 to 65535")
    return port


def from_bindings(bindings: dict | None) -> list[PortMapping]:
    """{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} -> [PortMapping(8080, 80, "tcp")]."""
    mappings = []
    for key, hosts in (bindings or {}).items():
        port_text, _, protocol = str(key).partition("/")
        protocol = (protocol or "tcp").lower()
        if protocol not in PROTOCOLS:
            raise PyctrError(f"invalid protocol {protocol!r} in port {key}: use tcp or udp")
        container_port = _port(port_text, "container port")
        for host in hosts or [{}]:
            host_port_text = (host or {}).get("HostPort") or ""
            if host_port_text == "":
                raise PyctrError(f"port {key} needs a host port (-p HOSTPORT:{container_port})")
            host_ip = (host or {}).get("HostIp") or ""
            if host_ip:
                try:
                    ipaddress.IPv4Address(host_ip)
                except ValueError:
                    raise PyctrError(f"invalid host IP {host_ip!r} in port {key}") from None
            mappings.append(PortMapping(_port(host_port_text, "host port"), container_port,
                                        protocol, host_ip))
    seen = set()
    for m in mappings:
        if (m.host_ip, m.host_port, m.protocol) in seen:
            raise PyctrError(f"host port {m.host_port}/{m.protocol} is published twice")
        seen.add((m.host_ip, m.host_port, m.protocol))
    return mappings


def to_docker(mappings: list[PortMapping]) -> dict:
    """NetworkSettings.Ports: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}."""
    ports: dict = {}
    for m in mappings:
        ports.setdefault(f"{m.container_port}/{m.protocol}", []).append(
            {"HostIp": m.host_ip or "0.0.0.0", "HostPort": str(m.host_port)})
    return ports


def check_free(mappings: list[PortMapping], published: list[tuple[str, str, int, str]]) -> None:
    """Refuse a host port that another container publishes already (`published`: the
    (owner, protocol, port, host IP) of the node's DNAT rules). An empty host IP means all."""
    for m in mappings:
        for owner, protocol, port, host_ip in published:
            if (protocol, port) == (m.protocol, m.host_port) and (
                    not host_ip or not m.host_ip or host_ip == m.host_ip):
                holder = owner.removeprefix("pyctr container ")[:12]
                raise ConflictError(f"host port {m.host_ip or '0.0.0.0'}:{m.host_port}/{m.protocol} "
                                    f"is already published by container {holder}")
