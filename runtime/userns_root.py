"""The root of a container in a new user namespace: what only host root can reach, done from outside.

The container's root (host uid 100000, say) has no rights over host root's 0700 folders: pyctr's
store (the overlay's layers), the runtime's state folder (the staging folder, exec.fifo), a
bundle or a volume under such a folder. Its init cannot mount by those paths. So once the init
(stage 2) exists, and before the parent says "go", `build_root` forks a short-lived helper: host
root, in the container's mount namespace but not in its user namespace (there it would lose its
rights over the host's files). The helper

  - mounts the root at root.path: the overlay of the run.pyctr.rootfs.overlay annotation, each
    lower layer idmapped through the container's user namespace when its filesystem allows
    (else it must already be a chowned copy: the front end prepares it), upper and work owned
    by the container's root; or the bundle's rootfs bound onto itself;
  - mounts on the staging folder a tmpfs that only the container's root may enter, where
    rootfs._bind_into_root makes each bind read-only before moving it in;
  - opens the root, the staging tmpfs and each bind mount's source,

and hands the descriptors to the init on its channel: a line "userns-root {json}" with the
fds (SCM_RIGHTS). The init reaches each through /proc/self/fd/N, which needs no right on the
folders above it. runc passes its bind sources the same way (mountFds, since 1.1). The mounts
stay in the container's mount namespace: they end with it.

Mounts the helper makes are host root's: their flags (nodev on the overlay) are not locked
against the container's root, as flags of mounts copied into its namespace are.
"""

import json
import os
import socket

from pyctr.runtime import explain, userns
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.syscalls import (CLONE_NEWNS, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC,
                                    MS_SLAVE, mount, setns, umount2)

MESSAGE = "userns-root"  # the line's first word; the init reads the rest as JSON
MAX_FDS = 253  # SCM_MAX_FD: the most one message can carry


def build_root(spec, pid: int, channel: int, staging: str) -> None:
    """Run the helper for the init `pid` (in its new user and mount namespaces) and wait for it.
    `channel` is the parent's end of the init's socket. Raises PyctrError with the reason."""
    error_r, error_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(error_r)
            _helper(spec, pid, channel, staging)
            code = 0
        except BaseException as e:
            try:
                os.write(error_w, (str(e) or type(e).__name__).encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(error_w)
    try:
        failure = b""
        while chunk := os.read(error_r, 65536):
            failure += chunk
    finally:
        os.close(error_r)
    _, status = os.waitpid(helper, 0)
    if failure or status != 0:
        raise PyctrError(f"building the root in the user namespace: "
                         f"{failure.decode(errors='replace') or 'the helper died'}", 1)


def _helper(spec, pid: int, channel: int, staging: str) -> None:
    ns = f"/proc/{pid}/ns"
    nsenter = ["nsenter", f"--mount={ns}/mnt"]
    uid = userns.host_id(spec.linux.uid_mappings, 0)
    gid = userns.host_id(spec.linux.gid_mappings, 0)
    if uid is None or gid is None:
        raise PyctrError("linux.uidMappings/gidMappings: container id 0 is not mapped")
    userns_fd = os.open(f"{ns}/user", os.O_RDONLY | os.O_CLOEXEC)
    mount_ns = os.open(f"{ns}/mnt", os.O_RDONLY | os.O_CLOEXEC)
    setns(mount_ns, CLONE_NEWNS)
    os.close(mount_ns)
    # Shared mounts became slaves when the namespace was copied for the user namespace; say so
    # again, so nothing mounted here can ever reach the host.
    explain.step(*nsenter, "mount", "--make-rslave", "/")
    mount(None, "/", None, MS_REC | MS_SLAVE)

    from pyctr.runtime import spec as specs

    root = spec.root.path
    overlay = spec.annotations.get(specs.OVERLAY_ANNOTATION)
    if overlay:
        _mount_overlay(spec, overlay, root, userns_fd, uid, gid, pid)
    else:
        explain.step(*nsenter, "mount", "--rbind", root, root)
        mount(root, root, None, MS_BIND | MS_REC)
    os.close(userns_fd)

    explain.step("mkdir", "-p", "-m", "700", staging)
    os.makedirs(staging, mode=0o700, exist_ok=True)
    options = f"mode=700,uid={uid},gid={gid},size=64k"
    explain.step(*nsenter, "mount", "-t", "tmpfs", "-o", f"nosuid,nodev,noexec,{options}", "tmpfs", staging)
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)

    fds = [_open(root, directory=True), _open(staging, directory=True)]
    handles = {"root": 0, "staging": 1, "sources": {}}
    for i, m in enumerate(spec.mounts):
        if not m.bind:
            continue
        source = m.source if os.path.isabs(m.source) else os.path.join(spec.bundle, m.source)
        try:
            fds.append(_open(source))
        except OSError:
            continue  # the init says what is wrong with it, by its path
        handles["sources"][str(i)] = len(fds) - 1
    _send(channel, f"{MESSAGE} {json.dumps(handles)}", fds)


def _send(channel: int, line: str, fds: list[int]) -> None:
    """One line, its fds in pieces of at most MAX_FDS (the kernel's limit for one message):
    the pieces after the first carry a space each, which JSON ignores, and the last the newline."""
    pieces = [fds[i:i + MAX_FDS] for i in range(0, len(fds), MAX_FDS)] or [[]]
    texts = [line] + [" "] * (len(pieces) - 1)
    texts[-1] += "\n"
    with socket.socket(fileno=os.dup(channel)) as sock:
        for text, piece in zip(texts, pieces):
            socket.send_fds(sock, [text.encode()], piece)


def _open(path: str, directory: bool = False) -> int:
    return os.open(path, os.O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0))


def parse_options(options: str) -> dict[str, str]:
    """lowerdir=A:B,upperdir=U,workdir=W -> {"lowerdir": "A:B", ...}."""
    found = {}
    for item in options.split(","):
        key, _, value = item.partition("=")
        found[key] = value
    return found


def _mount_overlay(spec, overlay: str, root: str, userns_fd: int, uid: int, gid: int, pid: int) -> None:
    """The overlay at `root`, each lower layer idmapped when its filesystem allows: the
    idmapped bind is mounted over the layer's own path for the overlay to take it, then
    unmounted (the overlay keeps its own reference to each layer)."""
    nsenter = ["nsenter", f"--mount=/proc/{pid}/ns/mnt"]
    options = parse_options(overlay)
    for key in ("upperdir", "workdir"):
        if options.get(key):
            explain.step("chown", f"{uid}:{gid}", options[key])
            os.chown(options[key], uid, gid)
    idmapped = []
    try:
        for lower in filter(None, options.get("lowerdir", "").split(":")):
            if not userns.supports_idmapped_mounts(lower):
                explain.comment(f"{lower} cannot be idmapped: it is used as it is (a chowned copy)")
                continue
            explain.step(*nsenter, "mount", "--bind", "-o", f"X-mount.idmap=/proc/{pid}/ns/user",
                         lower, lower)
            tree = userns.idmapped_tree(lower, userns_fd)
            try:
                userns.attach_tree(tree, lower)
            finally:
                os.close(tree)
            idmapped.append(lower)
        nodev = 0 if spec.raw.get("annotations", {}).get("run.pyctr.privileged") else MS_NODEV
        explain.step(*nsenter, "mount", "-t", "overlay", "-o", ("nodev," if nodev else "") + overlay, "overlay", root)
        mount("overlay", root, "overlay", nodev, overlay)
    finally:
        for lower in reversed(idmapped):
            explain.step(*nsenter, "umount", "-l", lower)
            umount2(lower, MNT_DETACH)

