"""The container's init: what PID 1 does between fork and exec (runc's standard_init).

It runs in the forked child, so it must never return into the CLI's code: every path ends
in execve() or os._exit(). Failures travel back to the parent over a close-on-exec pipe as
"CODE message", so the parent can exit 126 or 127 the way Docker does.
"""

import errno
import fcntl
import os
import signal
import struct

from pyctr.runtime import explain, rootfs, security, syscalls
from pyctr.runtime.errors import PyctrError


class InitSpec:
    """Everything PID 1 (or an exec'd process) needs, prepared by the parent before fork."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: str, user: str | None,
                 hostname: str, rootfs: "rootfs.RootfsSpec | None", caps: list[str], privileged: bool,
                 own_netns: bool, tty: bool, stdio: tuple[int, int, int] | None,
                 console: int | None = None, seccomp=None):
        self.argv, self.env, self.workdir, self.user = argv, env, workdir, user
        self.hostname = hostname
        self.rootfs = rootfs
        self.caps = caps
        self.privileged = privileged
        self.own_netns = own_netns
        self.tty = tty
        self.stdio = stdio  # fds for 0, 1, 2; None keeps the inherited ones
        self.console = console  # with -t: the socket to send our pty's master over
        self.seccomp = seccomp  # a seccomp.Program the parent compiled; None: unconfined


def unshare_namespaces(spec: InitSpec) -> None:
    flags = syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
    if spec.own_netns:
        flags |= syscalls.CLONE_NEWNET
    syscalls.unshare(flags)


def report_failure_and_exit(error_fd: int, error: BaseException) -> None:
    """The end of a forked child that could not exec: tell the parent why, then exit."""
    if isinstance(error, PyctrError):
        code, message = error.exit_code, str(error)
    elif isinstance(error, OSError):
        code, message = 1, f"container init: {error}"
    else:
        code, message = 1, f"container init: {type(error).__name__}: {error}"
    try:
        os.write(error_fd, f"{code} {message}".encode())
    finally:
        os._exit(code)


def failure_from_report(report: bytes) -> PyctrError:
    """The other end of report_failure_and_exit: "CODE message" as the error pyctr exits with."""
    code, _, message = report.decode(errors="replace").partition(" ")
    return PyctrError(message, int(code) if code.isdigit() else 125)


def run(spec: InitSpec, ready_fd: int, go_fd: int, error_fd: int) -> None:
    """Never returns."""
    try:
        # What pyctr's caller left open (fd 3 on /etc, a lock's directory) must not reach the
        # container, not even through /proc/self/fd while we set it up (runc's CVE-2024-21626).
        syscalls.close_fds_except({ready_fd, go_fd, error_fd, spec.console, *(spec.stdio or ())} - {None})
        unshare_namespaces(spec)
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
        # The root filesystem needs neither the cgroup nor the network, so it is built while the
        # parent sets those up; under --explain, one after the other, so the trace reads in order.
        if explain.enabled:
            _wait_for_go(go_fd)
        explain.side(explain.CONTAINER)
        _build_root(spec)
        if not explain.enabled:
            _wait_for_go(go_fd)
        # A cgroup namespace now that the parent has put us in our cgroup: it becomes our "/".
        if os.path.exists("/proc/self/ns/cgroup"):
            explain.step("unshare", "--cgroup")
            syscalls.unshare(syscalls.CLONE_NEWCGROUP)
        become_process(spec)
        exec_command(spec)
    except BaseException as e:  # never fall back into the CLI's stack
        report_failure_and_exit(error_fd, e)


def _wait_for_go(go_fd: int) -> None:
    if os.read(go_fd, 1) != b"G":
        os._exit(1)  # the parent gave up (or died) before the start completed
    os.close(go_fd)


def _build_root(spec: InitSpec) -> None:
    # After pivot_root the host's Python library is out of reach: import what comes later now.
    import prctl  # noqa: F401  (security.py)
    import socket  # noqa: F401  (set_link_up)

    rootfs.prepare(spec.rootfs)
    forget_host_import_path()
    explain.step("hostname", spec.hostname)
    syscalls.sethostname(spec.hostname)
    if spec.own_netns:
        explain.step("ip", "link", "set", "lo", "up")
        set_link_up("lo")


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


def become_process(spec: InitSpec) -> None:
    """The part of init that `exec` shares: session, keyring, user, privileges, working
    directory and stdio. Every container process goes through it, as runc's inits do."""
    # A session of our own, without the caller's controlling terminal: else the container could
    # type into the admin's shell with TIOCSTI. With -t, the pty becomes our terminal below.
    explain.comment("setsid  (a session of its own, without the caller's terminal)")
    os.setsid()
    join_own_keyring()
    uid, gid, groups, home = security.resolve_user(spec.user)
    spec.env.setdefault("HOME", home)
    if spec.console is not None:
        from pyctr.runtime import terminal

        slave = terminal.open_console(spec.console, uid, gid)
        spec.stdio = (slave, slave, slave)
    workdir = spec.workdir or "/"
    if not os.path.isdir(workdir):
        os.makedirs(workdir, exist_ok=True)  # as Docker does, and as root, before the user switch
    if not spec.privileged:
        security.drop_bounding_set(spec.caps)
    if spec.user:
        explain.step("setpriv", f"--reuid={uid}", f"--regid={gid}",
                     "--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups")
    # Without no_new_privs (exec --privileged into a filtered container), loading a filter needs
    # CAP_SYS_ADMIN, which a switch to another user takes away: load it first then, as runc does.
    filter_before_user = spec.seccomp is not None and spec.privileged and uid != 0
    if filter_before_user:
        spec.seccomp.load()
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    if not spec.privileged:
        security.restrict_process_caps(spec.caps if uid == 0 else [])
        security.set_no_new_privs()

    os.chdir(workdir)
    verify_cwd_inside_root(workdir)

    # Said before stdio moves: a detached container's stderr is about to become its log.
    if spec.seccomp is not None:
        spec.seccomp.explain()
    explain.step("exec", *spec.argv)
    if spec.stdio:
        for target, fd in enumerate(spec.stdio):
            if fd != target:
                os.dup2(fd, target)
    if spec.tty:
        # The pty as our controlling terminal, so that ctrl-c reaches us.
        fcntl.ioctl(0, _TIOCSCTTY, 0)
    # Nothing but stdio passes the exec: not the pty's other fd, not a pipe of ours.
    syscalls.mark_cloexec_from(3)
    # Python ignores these, and an ignored signal stays ignored across exec: `yes | head` in
    # the container would end with EPIPE errors instead of a quiet SIGPIPE.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    if spec.seccomp is not None and not filter_before_user:
        spec.seccomp.load()  # last: what comes before may need syscalls the filter denies


def join_own_keyring() -> None:
    """A new, anonymous session keyring: keys in the caller's session stay out of reach."""
    explain.comment("keyctl new_session  (a session keyring of its own)")
    try:
        syscalls.join_session_keyring()
    except OSError as e:
        if e.errno != errno.ENOSYS:  # a kernel without keys has nothing to hide, as runc reasons
            raise


def verify_cwd_inside_root(workdir: str) -> None:
    """After chdir, the working directory must be inside the container's root: a path through a
    leaked fd (/proc/self/fd/N) would lead out of it. getcwd(3) fails with ENOENT then (the
    kernel says "(unreachable)"), as runc checks since CVE-2024-21626."""
    try:
        inside = os.getcwd().startswith("/")
    except FileNotFoundError:
        inside = False
    if not inside:
        raise PyctrError(f"working directory {workdir} is outside the container's root: refused", 125)


def exec_command(spec: InitSpec) -> None:
    try:
        os.execvpe(spec.argv[0], spec.argv, spec.env)
    except FileNotFoundError:
        raise PyctrError(f'exec: "{spec.argv[0]}": executable file not found in $PATH', 127)
    except PermissionError:
        raise PyctrError(f'exec: "{spec.argv[0]}": permission denied', 126)
    except OSError as e:
        if e.errno == errno.ENOEXEC:
            raise PyctrError(f'exec: "{spec.argv[0]}": exec format error', 126)
        raise PyctrError(f'exec: "{spec.argv[0]}": {e.strerror}', 126)


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_TIOCSCTTY = 0x540E


def set_link_up(name: str) -> None:
    """`ip link set NAME up` with one ioctl: cheaper than loading netlink for loopback."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | _IFF_UP))
