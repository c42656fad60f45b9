"""Joining a running container (runc's setns_init): `exec`, and the `debug` nsenter trick.

Order matters: open every namespace file first, because once we have joined the mount
namespace, /proc/PID/... resolves inside the container. The PID namespace takes effect only
for children, so we fork after setns, and the child execs.
"""

import os
import signal

from pyctr.runtime import cgroups, explain, init, monitor, options, seccomp, security, syscalls
from pyctr.runtime.container import Container
from pyctr.runtime.errors import PyctrError

# setns order: the mount namespace last, after everything that needs the host's /proc.
EXEC_NAMESPACES = ("ipc", "uts", "net", "pid", "cgroup", "mnt")
_NSENTER_FLAGS = {"ipc": "--ipc", "uts": "--uts", "net": "--net", "pid": "--pid",
                  "cgroup": "--cgroup", "mnt": "--mount"}


def _open_namespaces(pid: int, names: tuple[str, ...]) -> dict[str, int]:
    fds = {}
    for name in names:
        try:
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if name in ("cgroup",):
                continue  # an older kernel without cgroup namespaces
            raise PyctrError(f"container process {pid} is gone")
    return fds


def _join(fds: dict[str, int]) -> None:
    for name in fds:
        syscalls.setns(fds[name], 0)
        os.close(fds[name])


def exec_in(c: Container, args) -> int:
    pid = c.pid
    hc = c.config["HostConfig"]
    cfg = c.config["Config"]
    fds = _open_namespaces(pid, EXEC_NAMESPACES)
    root_fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    procs_files = cgroups.for_container(c.id).procs_file()
    env = dict(pair.partition("=")[::2] for pair in cfg["Env"])
    env.update(pair.partition("=")[::2] for pair in options.parse_env(args.env, []))
    privileged = args.privileged or hc["Privileged"]
    tty = args.tty
    spec = init.InitSpec(
        argv=args.command, env=env, workdir=args.workdir or cfg["WorkingDir"],
        user=args.user or cfg["User"] or None, hostname=cfg["Hostname"], rootfs=None,
        caps=security.effective_caps(hc["CapAdd"], hc["CapDrop"], privileged),
        privileged=privileged, own_netns=False, tty=tty, stdio=None,
        # The container's own filter, as runc exec applies it (exec --privileged keeps it).
        seccomp=seccomp.for_container(hc, security.effective_caps(hc["CapAdd"], hc["CapDrop"],
                                                                  hc["Privileged"])))
    receiver = None
    ours: dict[str, int] = {}  # our ends of the process's stdio: we relay them, as Docker does
    if tty:
        from pyctr.runtime import terminal

        receiver, spec.console = terminal.console_pair()
    else:
        spec.stdio, ours = _exec_stdio(args.detach, args.interactive)
    error_r, error_w = os.pipe()
    security.remember_host_cap_last_cap()  # from the host's /proc: the child reads the container's

    explain.step("nsenter", "--target", pid, *[_NSENTER_FLAGS[n] for n in fds], "--root", "--wd",
                 "--", *args.command)
    child = os.fork()
    if child == 0:
        _joining_child(spec, fds, root_fd, procs_files, error_w)
    for fd in (*fds.values(), root_fd, error_w, *([spec.console] if tty else [])):
        os.close(fd)
    for fd in set(spec.stdio or ()):
        os.close(fd)

    failure = os.read(error_r, 4096)
    os.close(error_r)
    if failure:
        for fd in ours.values():
            os.close(fd)
        monitor.wait_for(child)
        raise init.failure_from_report(failure)
    if args.detach:
        return 0
    from pyctr.runtime import terminal

    if receiver is not None:
        master = terminal.receive_console(receiver)
        if master is not None:
            terminal.proxy(master, forward_stdin=args.interactive)
    else:
        exited = monitor.pidfd(child)  # None before Linux 5.3: copy until the pipes close
        terminal.relay({ours["stdout"]: 1, ours["stderr"]: 2}, stdin_to=ours.get("stdin"),
                       until_exit_of=exited)
        if exited is not None:
            os.close(exited)
    return monitor.exit_code_of(monitor.wait_for(child))


def _exec_stdio(detach: bool, interactive: bool) -> tuple[tuple[int, int, int], dict[str, int]]:
    """The exec'd process's 0, 1, 2, and our ends of them. Pipes, never our own stdio: through
    /proc/self/fd/1 a process could reopen the caller's file (truncate a log) or terminal."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if detach:
        return (null, null, null), {}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if not interactive:
        return (null, out_w, err_w), {"stdout": out_r, "stderr": err_r}
    os.close(null)
    in_r, in_w = os.pipe()
    return (in_r, out_w, err_w), {"stdout": out_r, "stderr": err_r, "stdin": in_w}



def _joining_child(spec, fds, root_fd, procs_files, error_w) -> None:
    """Join the cgroup and namespaces, fork into the PID namespace, exec. Never returns."""
    try:
        import prctl

        # Until it execs, the process that joins is the host's Python, with the caller's memory
        # and environment: no container process may read /proc/PID/{environ,mem,fd} or open
        # /proc/PID/exe (the host's interpreter). execve() makes the command dumpable again.
        prctl.set_dumpable(False)
        os.environ.clear()  # the command gets the container's env and -e, never the caller's
        keep = {*fds.values(), root_fd, error_w, spec.console, *(spec.stdio or ())} - {None}
        syscalls.close_fds_except(keep)  # the caller's other fds, and our parent's ends of the pipes
        if spec.console is not None:
            import socket  # noqa: F401  (terminal.open_console, after we chroot away from it)
        me = os.getpid()
        for procs in procs_files:
            explain.write(procs, me)
            with open(procs, "w") as f:
                f.write(str(me))
        _join(fds)
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        init.forget_host_import_path()
        grandchild = os.fork()
        if grandchild == 0:
            init.become_process(spec)
            init.exec_command(spec)
        # We only wait now: let go of everything else, the caller's stdio included, so that
        # `$(pyctr exec -d ...)` returns at once and the caller's terminal is not held.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        syscalls.close_fds_except(set())
        monitor.ignore_terminal_signals()
        os._exit(monitor.exit_code_of(monitor.wait_for(grandchild)))
    except BaseException as e:
        init.report_failure_and_exit(error_w, e)


def debug(c: Container, command: list[str], with_pid: bool) -> int:
    """The walk-through's `nsenter --target PID --net`: the container's network, the host's tools.
    With --pid, the host's /proc would still show the host's processes (and `ps` would find no
    /proc/self), so the command gets a mount namespace of its own with a /proc of the joined PID
    namespace, as `unshare --mount-proc` makes one."""
    names = ("net", "pid") if with_pid else ("net",)
    fds = _open_namespaces(c.pid, names)
    own_proc = ("unshare", "--mount", "--mount-proc", "--") if with_pid else ()
    explain.step("nsenter", "--target", c.pid, *[_NSENTER_FLAGS[n] for n in names], "--",
                 *own_proc, *command)
    child = os.fork()
    if child == 0:
        try:
            _join(fds)
            if with_pid:
                grandchild = os.fork()
                if grandchild:
                    monitor.ignore_terminal_signals()
                    os._exit(monitor.exit_code_of(monitor.wait_for(grandchild)))
                _mount_own_proc()  # in the joined PID namespace: only a member mounts its proc
            try:
                os.execvp(command[0], command)
            except FileNotFoundError:
                os.write(2, f"Error: {command[0]}: command not found on the host\n".encode())
                os._exit(127)
            except OSError as e:
                os.write(2, f"Error: {command[0]}: {e.strerror}\n".encode())
                os._exit(126)
        except BaseException as e:
            os.write(2, f"Error: {e}\n".encode())
            os._exit(125)
    for fd in fds.values():
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return monitor.exit_code_of(monitor.wait_for(child))


def _mount_own_proc() -> None:
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)  # nothing reaches the host
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
