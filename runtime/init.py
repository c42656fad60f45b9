"""Small steps of a container's init that other parts share: bringing up loopback, and leaving
no host path to import from once the process is inside the container's root."""

import fcntl
import struct

from pyctr.runtime import explain


def forget_host_import_path() -> None:
    """Past pivot_root or chroot, a path on sys.path names a folder the container owns: a lazy
    import there would run the container's code with our privileges (the class of Docker's
    CVE-2019-14271, `docker cp` loading the container's libraries). Leave none to look in, so
    such an import fails instead."""
    import sys

    if explain.enabled:
        import shlex  # noqa: F401  (explain.step's quoting, for the lines still to come)

    sys.path.clear()
    sys.path_importer_cache.clear()


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def set_link_up(name: str) -> None:
    """`ip link set NAME up` with one ioctl: cheaper than loading netlink for loopback. Through
    the C module _socket: socket's enums would import enum, ~3 ms of every container's init."""
    from _socket import AF_INET, SOCK_DGRAM, socket

    s = socket(AF_INET, SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | _IFF_UP))
    finally:
        s.close()
