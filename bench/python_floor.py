"""The Python floor: the least a container start costs when it is done from Python.

    python bench/python_floor.py ROOTFS [COMMAND ...]     (COMMAND defaults to /bin/true)

Per run it does the kernel work of `pyctr run --rm` and nothing else: fork; in the child, new
PID, mount, UTS, IPC and network namespaces; fork again (PID 1 of the new namespace); make /
rprivate; an overlay of ROOTFS with upper and work folders in a fresh temporary folder; /proc in
it; pivot_root(".", ".") and a lazy unmount of the old root; exec COMMAND. The parent waits and
removes the temporary folder, also on failure. Every mount lives in the child's own mount
namespace, so it goes away with the child. Standard library and ctypes only, every call
errno-checked; exits with COMMAND's status.

It imports nothing that the work does not need (ctypes, for mount and pivot_root): `platform`,
`tempfile` and `shutil` would add ~10 ms of imports here, which a floor must not count.
"""

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
# glibc has no pivot_root wrapper: the raw syscall, by number.
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}[os.uname().machine]

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    def b(s):
        return s.encode() if s is not None else None
    check(libc.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data)),
          f"mount {fstype or ''} on {target}")


def container_init(rootfs: str, tmp: str, command: list[str]) -> None:
    """PID 1 of the new namespaces: the container's root, then exec."""
    merged = os.path.join(tmp, "merged")
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing below propagates to the host
    mount("overlay", merged, "overlay", 0,
          f"lowerdir={rootfs},upperdir={tmp}/upper,workdir={tmp}/work")
    mount("proc", os.path.join(merged, "proc"), "proc", 0, None)
    os.chdir(merged)
    check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount2 old root")
    os.chdir("/")
    try:
        os.execv(command[0], command)
    except OSError as e:
        raise OSError(e.errno, f"exec {command[0]}: {e.strerror}") from None


def child(rootfs: str, tmp: str, command: list[str]) -> int:
    """The first child: new namespaces, then PID 1 in them, whose status it passes on."""
    check(libc.unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET),
          "unshare")
    pid = os.fork()
    if pid == 0:
        _run_child(container_init, rootfs, tmp, command)
    return wait(pid)


def wait(pid: int) -> int:
    """The child's exit status; killed by a signal, 128 + its number, as a shell reports it."""
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code if code >= 0 else 128 - code


def _run_child(step, *args) -> None:
    """Run step in a forked process and leave with its status, never back into the caller."""
    code = 127
    try:
        code = step(*args) or 0
    except BaseException as e:  # a forked child must never unwind into its parent's code
        print(f"python floor: {e}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python_floor.py ROOTFS [COMMAND ...]", file=sys.stderr)
        return 2
    rootfs, command = os.path.abspath(argv[0]), argv[1:] or ["/bin/true"]
    # mkdir fails rather than follow anything already at the name.
    tmp = f"/tmp/pyctr-python-floor-{os.getpid()}-{os.urandom(4).hex()}"
    os.mkdir(tmp, 0o700)
    try:
        for sub in ("upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, sub))
        pid = os.fork()
        if pid == 0:
            _run_child(child, rootfs, tmp, command)
        return wait(pid)
    finally:
        remove_tree(tmp)


def remove_tree(top: str) -> None:
    """rm -rf, bottom up, never following a link (what COMMAND left in upper/ included)."""
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.unlink(os.path.join(folder, name))
        for name in dirs:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                os.rmdir(path)
    os.rmdir(top)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
