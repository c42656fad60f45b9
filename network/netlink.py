"""pyroute2, loaded only on the network path, and netlink sockets in a container's netns.

Two measured costs shape this module (pyroute2 0.9.7, this VM):
- `import pyroute2` runs a package __init__ that imports every family pyroute2 knows
  (conntrack, ipset, wireguard, NDB, ...): about 120 ms. pyctr needs IPRoute only, which on its
  own imports in about 80 ms. So the package is registered without running its __init__, and
  that __init__ runs later only if some other code asks for a name it defines.
- `IPRoute(netns=...)` forks a helper process: about 10 ms. A netlink socket belongs to the netns
  of the thread that creates it, so opening the socket after setns() into the container's netns,
  then setns() back, gives the same socket in about 0.2 ms.
"""

import contextlib
import importlib.util
import os
import sys
import types
from typing import Iterator

_CLONE_NEWNET = 0x40000000


def _register_pyroute2_lazily() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the import below raises the usual ImportError
    package = types.ModuleType("pyroute2")
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "pyroute2"

    def run_real_init(name: str):
        # Submodules are found by the import system once this says "no such attribute".
        if _is_submodule(package.__path__[0], name):
            raise AttributeError(name)
        # Someone wants a top-level name (``from pyroute2 import NDB``): run the package's own
        # __init__ now, into this module, and answer from it.
        if "_pyctr_real_init_done" not in package.__dict__:
            package.__dict__["_pyctr_real_init_done"] = True
            with open(spec.origin, "rb") as f:
                exec(compile(f.read(), spec.origin, "exec"), package.__dict__)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

    package.__getattr__ = run_real_init
    sys.modules["pyroute2"] = package


def _is_submodule(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name + ".py")) or os.path.isdir(
        os.path.join(directory, name))


def iproute_class():
    _register_pyroute2_lazily()
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def netlink_error():
    _register_pyroute2_lazily()
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


def host() -> "IPRoute":  # noqa: F821
    """A netlink socket in pyctr's own netns (the node's)."""
    return iproute_class()()


def in_container(pid: int):
    """A netlink socket in the netns of process `pid`, opened by a setns() round trip."""
    IPRoute = iproute_class()
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with _entered(target, own):
                return IPRoute()
        finally:
            os.close(target)
    finally:
        os.close(own)


@contextlib.contextmanager
def _entered(target_fd: int, own_fd: int) -> Iterator[None]:
    from pyctr.runtime.syscalls import setns

    setns(target_fd, _CLONE_NEWNET)
    try:
        yield
    finally:
        setns(own_fd, _CLONE_NEWNET)


@contextlib.contextmanager
def sockets(pid: int):
    """(host socket, container socket), both closed at the end of the block."""
    node = host()
    try:
        container = in_container(pid)
        try:
            yield node, container
        finally:
            container.close()
    finally:
        node.close()


def link_index(ipr, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_exists(name: str) -> bool:
    """Cheap and pyroute2-free: an ioctl in the current netns."""
    import socket

    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False
