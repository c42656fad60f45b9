"""/etc/hostname, /etc/hosts and /etc/resolv.conf, written by pyctr and bind-mounted in.

Always files of the container's own, in its folder: with --network host too, where they are
copies of the host's, so a write in the container never reaches the host's files (Docker does
the same). Mode 0644 whatever the umask: the container's users read them, only its root writes.
"""

import os
from pathlib import Path

from pyctr.runtime import explain

HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")  # Docker's choice when the host has only loopback ones


def write_hostname(directory: Path, hostname: str) -> Path:
    path = directory / "hostname"
    _write(path, hostname + "\n")
    return path


def write_hosts(directory: Path, hostname: str, name: str, address: str | None) -> Path:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix",
             "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    if address:
        aliases = " ".join(dict.fromkeys([hostname, name]))
        lines.append(f"{address}\t{aliases}")
    path = directory / "hosts"
    _write(path, "\n".join(lines) + "\n")
    return path


def copy_host_hosts(directory: Path) -> Path:
    """The host's /etc/hosts as it is now, for --network host."""
    try:
        text = Path(HOST_HOSTS).read_text()
    except OSError:
        text = ""
    path = directory / "hosts"
    _write(path, text)
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
    _write(path, host_text if host_network else resolv_conf_text(host_text))
    return path


def _write(path: Path, text: str) -> None:
    """In place (the same inode): a running container's bind mount of it sees the new text."""
    explain.write_file(path, text)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o644)
        f.write(text)
