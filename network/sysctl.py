"""Kernel parameters under /proc/sys, written as files (procps' `sysctl` is not on a minimal
Debian, and a write costs no process).

/proc/sys/net shows the netns of the process that opens it, so these writes change the node's
namespace pyctr runs in, never another one.
"""

from pathlib import Path

from pyctr.runtime import explain

PROC_SYS = Path("/proc/sys")


def _path(key: str) -> Path:
    # sysctl's dotted form; an interface name may itself hold no dots or slashes.
    return PROC_SYS / key.replace(".", "/")


def read(key: str) -> str:
    return _path(key).read_text().strip()


def write(key: str, value: str | int) -> None:
    """Set `key` (dotted, as `sysctl` spells it) unless it already has `value`. The trace shows
    the write as `echo VALUE > /proc/sys/…`, which works where procps' `sysctl` is missing."""
    value = str(value)
    path = _path(key)
    if path.read_text().strip() == value:
        explain.comment(f"{key} is {value} already")
        return
    explain.write(path, value)
    path.write_text(value + "\n")


def interface_key(section: str, ifname: str, name: str) -> str:
    """net.ipv4.<section>.<ifname>.<name>, e.g. net.ipv4.conf.veth1a2b.rp_filter."""
    return f"net.ipv4.{section}.{ifname}.{name}"
