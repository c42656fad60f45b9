"""/etc/hostname, /etc/hosts and /etc/resolv.conf, written by pyctr and bind-mounted in."""

from pathlib import Path

HOST_RESOLV_CONF = "/etc/resolv.conf"
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")  # Docker's choice when the host has only loopback ones


def write_hostname(directory: Path, hostname: str) -> Path:
    path = directory / "hostname"
    path.write_text(hostname + "\n")
    return path


def write_hosts(directory: Path, hostname: str, name: str, address: str | None) -> Path:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix",
             "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    if address:
        aliases = " ".join(dict.fromkeys([hostname, name]))
        lines.append(f"{address}\t{aliases}")
    path = directory / "hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def resolv_conf_text(host_text: str) -> str:
    """The host's resolv.conf without loopback nameservers, which mean nothing in another netns."""
    kept, nameservers = [], 0
    for line in host_text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            if words[1].startswith("127.") or words[1] == "::1":
                continue
            nameservers += 1
        kept.append(line)
    if not nameservers:
        kept += [f"nameserver {ns}" for ns in FALLBACK_NAMESERVERS]
    return "\n".join(kept).strip() + "\n"


def write_resolv_conf(directory: Path, host_network: bool) -> Path:
    try:
        host_text = Path(HOST_RESOLV_CONF).read_text()
    except OSError:
        host_text = ""
    path = directory / "resolv.conf"
    path.write_text(host_text if host_network else resolv_conf_text(host_text))
    return path
