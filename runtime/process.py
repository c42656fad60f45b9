"""The last steps of every container process, its own and each exec'd one (runc's finalizeNamespace):
session, keyring, terminal, limits, user, capabilities, working directory, and the exec itself.

It runs in a forked child inside the container's namespaces (past pivot_root for a new container),
so it must never return into the caller's stack: callers end in exec() or os._exit().
"""

import errno
import fcntl
import os
import struct
from _signal import SIG_DFL, SIGPIPE, SIGXFSZ, signal  # signal's enums would import enum: ~3 ms of each init

from pyctr.runtime import explain, security, syscalls
from pyctr.runtime.errors import PyctrError

_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414


class Prepared:
    """A process made ready: what exec() needs once the start is given."""

    def __init__(self, path: str, argv: list[str], env: dict[str, str], stdio: tuple[int, int, int] | None,
                 tty: bool, preserve_fds: int, seccomp_later, seccomp=None):
        self.path, self.argv, self.env = path, argv, env
        self.stdio = stdio  # fds for 0, 1, 2; None keeps the inherited ones
        self.tty = tty
        self.preserve_fds = preserve_fds
        self.seccomp_later = seccomp_later  # the filter still to load, as the very last step
        self.seccomp = seccomp  # the filter, loaded or still to load: for --explain


def prepare(process, *, seccomp=None, console_fd: int | None = None, stdio=None, preserve_fds: int = 0,
            new_keyring: bool = True, docker_user: str | None = None, workdir_may_be_made: bool = True) -> Prepared:
    """Everything up to exec, in runc's order; `process` is a spec.Process (the container's or an exec's).
    `docker_user` (USER[:GROUP], from pyctr's front end) is resolved in the container's /etc/passwd."""
    # A session of our own, without the caller's controlling terminal: else the container could
    # type into the admin's shell with TIOCSTI. With a terminal, the pty becomes ours below.
    explain.comment("setsid  (a session of its own, without the caller's terminal)")
    os.setsid()
    if new_keyring:
        join_own_keyring()
    env = process.env_dict
    uid, gid, groups = process.user.uid, process.user.gid, list(process.user.additional_gids)
    home = None
    if docker_user:
        uid, gid, groups, home = security.resolve_user(docker_user)
    elif "HOME" not in env:
        home = security.home_of(uid)
    if home and "HOME" not in env:
        env["HOME"] = home
    if process.terminal and console_fd is not None:
        from pyctr.runtime import terminal

        slave = terminal.open_console(console_fd, uid, gid)
        if process.console_size:
            height, width = process.console_size
            fcntl.ioctl(slave, _TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        stdio = (slave, slave, slave)
    for limit in process.rlimits:
        import resource

        explain.step("prlimit", f"--{limit.type.removeprefix('RLIMIT_').lower()}={limit.soft}:{limit.hard}")
        try:
            resource.setrlimit(limit.resource, (limit.soft, limit.hard))
        except (ValueError, OSError) as e:
            raise PyctrError(f"process.rlimits: cannot set {limit.type} to {limit.soft}:{limit.hard}: {e}", 1)
    if process.oom_score_adj is not None:
        explain.step("choom", "-n", process.oom_score_adj, "-p", "self")
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))
    os.umask(process.user.umask if process.user.umask is not None else 0o022)
    path = find_executable(process.args[0], env.get("PATH", ""))

    # The working directory now, while every syscall is still allowed: a profile may deny
    # getcwd, which the check needs (runc fails there).
    enter_working_directory(process.cwd, workdir_may_be_made)
    caps = process.capabilities or {name: [] for name in ("bounding", "effective", "inheritable",
                                                          "permitted", "ambient")}
    # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the switch below takes
    # away: then load it first, as runc does. With it, load it last, after everything it may deny.
    seccomp_later = seccomp
    if seccomp is not None and not process.no_new_privileges:
        seccomp.load()
        seccomp_later = None
    set_identity_and_capabilities(uid, gid, groups, caps)
    if process.no_new_privileges:
        security.set_no_new_privs()
    return Prepared(path, process.args, env, stdio, process.terminal, preserve_fds, seccomp_later, seccomp)


def set_identity_and_capabilities(uid: int, gid: int, groups: list[int], caps: dict[str, list[str]]) -> None:
    """Bounding set first (it needs CAP_SETPCAP), then the user with the capabilities kept across
    the switch, then the exact sets the spec asks for; a non-root program loses what it may not
    keep at exec, as the kernel rules."""
    import prctl

    security.drop_bounding_set([security.normalize_cap(c) for c in caps["bounding"]])
    if uid or gid or groups:
        explain.step("setpriv", f"--reuid={uid}", f"--regid={gid}",
                     "--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups")
    prctl.set_keepcaps(True)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl.set_keepcaps(False)
    # The inheritable set also bounds the ambient one, which exec keeps for a non-root program.
    syscalls.capset(security.cap_mask(caps["effective"]), security.cap_mask(caps["permitted"]),
                    security.cap_mask(caps["inheritable"]))
    for name in caps["ambient"]:
        try:
            syscalls.raise_ambient_capability(security.CAP_NUMBERS[security.normalize_cap(name)])
        except PermissionError:
            # Only a capability both permitted and inheritable can be ambient; `runc spec` lists
            # some that are not. runc warns and goes on; so do we, rather than fail the start.
            from pyctr.runtime import log

            log.warning(f"process.capabilities.ambient: {name} is not also permitted and inheritable: not raised")


def exec_prepared(prepared: Prepared, report_fd: int | None = None) -> None:
    """Stdio in place, every other fd closed at exec, then execve. Never returns: an exec that
    fails is reported as "CODE message" on `report_fd` (if given), then the process exits."""
    try:
        if prepared.seccomp is not None:
            prepared.seccomp.explain()
        explain.step("exec", *prepared.argv)
        if prepared.stdio:
            for target, fd in enumerate(prepared.stdio):
                if fd != target:
                    os.dup2(fd, target)
        if prepared.tty:
            fcntl.ioctl(0, _TIOCSCTTY, 0)  # the pty as our controlling terminal, so ctrl-c reaches us
        keep = 3 + prepared.preserve_fds  # --preserve-fds: 3 .. 3+N-1 pass to the program
        for fd in range(3, keep):
            try:
                os.set_inheritable(fd, True)
            except OSError:
                pass
        syscalls.mark_cloexec_from(keep)
        # Python ignores these, and an ignored signal stays ignored across exec.
        for sig in (SIGPIPE, SIGXFSZ):
            signal(sig, SIG_DFL)
        if prepared.seccomp_later is not None:
            prepared.seccomp_later.load()  # last: what comes before may need syscalls it denies
        try:
            os.execve(prepared.path, prepared.argv, prepared.env)
        except PermissionError:
            raise PyctrError(f'exec: "{prepared.argv[0]}": permission denied', 126)
        except OSError as e:
            if e.errno == errno.ENOEXEC:
                raise PyctrError(f'exec: "{prepared.argv[0]}": exec format error', 126)
            raise PyctrError(f'exec: "{prepared.argv[0]}": {e.strerror}', 126 if e.errno != errno.ENOENT else 127)
    except BaseException as e:
        report_failure_and_exit(report_fd, e)


def find_executable(name: str, search_path: str) -> str:
    """The program as execvp would find it in the container's PATH: found now, at create, so that a
    missing one fails `create` (127) as with runc, not the start."""
    if "/" in name:
        if not os.path.exists(name):
            raise PyctrError(f'exec: "{name}": no such file or directory', 127)
        return name
    for folder in (search_path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    for folder in search_path.split(":"):
        if os.path.exists(os.path.join(folder or ".", name)):
            raise PyctrError(f'exec: "{name}": permission denied', 126)
    raise PyctrError(f'exec: "{name}": executable file not found in $PATH', 127)


def join_own_keyring() -> None:
    """A new, anonymous session keyring: keys in the caller's session stay out of reach."""
    explain.comment("keyctl new_session  (a session keyring of its own)")
    try:
        syscalls.join_session_keyring()
    except OSError as e:
        if e.errno != errno.ENOSYS:  # a kernel without keys has nothing to hide, as runc reasons
            raise


def enter_working_directory(workdir: str, may_be_made: bool) -> None:
    """chdir to the working directory, made first if it may be (as Docker and runc do, as root,
    before the user switch). One that cannot be (a file, a dangling link) is the caller's error."""
    try:
        if may_be_made and not os.path.isdir(workdir):
            os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
    except OSError as e:
        # makedirs says "File exists" of a file in the way: the reason is that it is no folder.
        reason = "Not a directory" if isinstance(e, FileExistsError) else e.strerror
        raise PyctrError(f"working directory {workdir}: {reason}", 125) from e
    verify_cwd_inside_root(workdir)


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


def describe_failure(error: BaseException) -> tuple[int, str]:
    """The exit code and one line for an error in a container's process before its exec."""
    if isinstance(error, PyctrError):
        return error.exit_code, str(error)
    if isinstance(error, OSError):
        return 1, f"container init: {error}"
    return 1, f"container init: {type(error).__name__}: {error}"


def report_failure_and_exit(error_fd: int | None, error: BaseException) -> None:
    """The end of a forked child that could not exec: tell the parent why, then exit."""
    code, message = describe_failure(error)
    try:
        if error_fd is not None:
            os.write(error_fd, f"{code} {message}".encode())
    finally:
        os._exit(code if 0 < code < 256 else 1)


def failure_from_report(report: bytes) -> PyctrError:
    """The other end of report_failure_and_exit: "CODE message" as the error pyctr exits with."""
    code, _, message = report.decode(errors="replace").partition(" ")
    return PyctrError(message, int(code) if code.isdigit() else 125)
