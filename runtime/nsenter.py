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
    if tty:
        from pyctr.runtime import terminal

        receiver, spec.console = terminal.console_pair()
    elif args.detach or not args.interactive:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        spec.stdio = (null, null if args.detach else 1, null if args.detach else 2)
    error_r, error_w = os.pipe()

    explain.step("nsenter", "--target", pid, *[_NSENTER_FLAGS[n] for n in fds], "--root", "--wd",
                 "--", *args.command)
    child = os.fork()
    if child == 0:
        _joining_child(spec, fds, root_fd, procs_files, error_w, receiver)
    for fd in (*fds.values(), root_fd, error_w, *([spec.console] if tty else [])):
        os.close(fd)
    if spec.stdio:
        for fd in set(spec.stdio):
            if fd > 2:
                os.close(fd)

    failure = os.read(error_r, 4096)
    os.close(error_r)
    if failure:
        monitor.wait_for(child)
        raise init.failure_from_report(failure)
    if args.detach:
        return 0
    master = None
    if receiver is not None:
        from pyctr.runtime import terminal

        master = terminal.receive_console(receiver)
    return _wait_attached(child, master, args.interactive)


def _joining_child(spec, fds, root_fd, procs_files, error_w, receiver) -> None:
    """Join the cgroup and namespaces, fork into the PID namespace, exec. Never returns."""
    try:
        if receiver is not None:
            os.close(receiver)
            import socket  # noqa: F401  (terminal.open_console, after we chroot away from it)
            import prctl  # noqa: F401
        me = os.getpid()
        for procs in procs_files:
            explain.write(procs, me)
            with open(procs, "w") as f:
                f.write(str(me))
        _join(fds)
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        grandchild = os.fork()
        if grandchild == 0:
            init.become_process(spec)
            init.exec_command(spec)
        os.close(error_w)
        if spec.console is not None:
            os.close(spec.console)
        for fd in set(spec.stdio or ()):
            if fd > 2:
                os.close(fd)
        monitor.ignore_terminal_signals()
        os._exit(monitor.exit_code_of(monitor.wait_for(grandchild)))
    except BaseException as e:
        init.report_failure_and_exit(error_w, e)


def _wait_attached(child: int, master: int | None, interactive: bool) -> int:
    if master is not None:
        from pyctr.runtime import terminal

        terminal.proxy(master, forward_stdin=interactive)
    return monitor.exit_code_of(monitor.wait_for(child))


def debug(c: Container, command: list[str], with_pid: bool) -> int:
    """The walk-through's `nsenter --target PID --net`: the container's network, the host's tools."""
    names = ("net", "pid") if with_pid else ("net",)
    fds = _open_namespaces(c.pid, names)
    explain.step("nsenter", "--target", c.pid, *[_NSENTER_FLAGS[n] for n in names], "--", *command)
    child = os.fork()
    if child == 0:
        try:
            _join(fds)
            if with_pid:
                grandchild = os.fork()
                if grandchild:
                    monitor.ignore_terminal_signals()
                    os._exit(monitor.exit_code_of(monitor.wait_for(grandchild)))
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
