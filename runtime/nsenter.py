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
    """`pyctr exec`: a process as the record and the flags say, through the same steps as
    `pyctr-oci exec`; with the container's seccomp filter even with --privileged, as Docker does."""
    from pyctr.runtime import bundle, spec as specs

    hc = c.config["HostConfig"]
    cfg = c.config["Config"]
    container = bundle.load(c)
    privileged = args.privileged or hc["Privileged"]
    env = list(cfg["Env"]) + options.parse_env(args.env, [])
    process = specs.Process({
        "terminal": args.tty, "user": {"uid": 0, "gid": 0}, "args": list(args.command), "env": env,
        "cwd": args.workdir or cfg["WorkingDir"] or "/",
        "capabilities": bundle.process_capabilities(bundle.container_caps(c, privileged)),
        "noNewPrivileges": not privileged,
    })
    program = None
    if container.linux.seccomp:
        program = seccomp.to_program(container.linux.seccomp, "linux.seccomp", seccomp.pyctr_cache())
    receiver = console_fd = None
    stdio, ours = None, {}  # our ends of the process's stdio: we relay them, as Docker does
    if args.tty:
        from pyctr.runtime import terminal

        receiver, console_fd = terminal.console_pair()
    else:
        stdio, ours = _exec_stdio(args.detach, args.interactive)
    try:
        child, _ = join_and_spawn(c.pid, process, procs_files=cgroups.for_container(c.id).procs_file(),
                                  seccomp_program=program, console_fd=console_fd, stdio=stdio,
                                  docker_user=bundle.docker_user(c, args.user), wait=not args.detach)
    except BaseException:
        for fd in ours.values():
            os.close(fd)
        raise
    finally:
        for fd in {*(stdio or ()), *([console_fd] if console_fd is not None else [])}:
            os.close(fd)
    if args.detach:
        monitor.wait_for(child)  # it exits at once; the process goes on, orphaned
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


# --- the spec-driven exec: pyctr-oci exec (and, through the same steps, pyctr exec) ------------
def join_and_spawn(target_pid: int, process, *, procs_files, seccomp_program=None, console_fd=None, stdio=None,
                   preserve_fds: int = 0, docker_user: str | None = None, wait: bool = True) -> tuple[int, int]:
    """A new process in the container of `target_pid`, as `process` (a spec.Process) says.
    Returns (the forked child, the process's host PID). With `wait`, the child waits for the
    process and exits with its status; without, it exits at once and the process is orphaned to
    the caller's subreaper (containerd's shim, conmon). Raises PyctrError when it cannot run."""
    names = ("user",) if _other_namespace(target_pid, "user") else ()
    fds = _open_namespaces(target_pid, names + EXEC_NAMESPACES)
    root_fd = os.open(f"/proc/{target_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    security.remember_host_cap_last_cap()  # from the host's /proc: the child reads the container's
    error_r, error_w = os.pipe()
    pid_r, pid_w = os.pipe()
    explain.step("nsenter", "--target", target_pid, *[_NSENTER_FLAGS.get(n, "--" + n) for n in fds], "--root",
                 "--wd", "--", *process.args)
    child = os.fork()
    if child == 0:
        os.close(error_r)
        os.close(pid_r)
        _spawning_child(process, fds, root_fd, procs_files, error_w, pid_w, seccomp_program, console_fd, stdio,
                        preserve_fds, docker_user, wait)
    for fd in (*fds.values(), root_fd, error_w, pid_w):
        os.close(fd)
    pid_text = _read_all(pid_r)
    failure = _read_all(error_r)
    if failure:
        monitor.wait_for(child)
        from pyctr.runtime import process as processes

        raise processes.failure_from_report(failure)
    return child, int(pid_text or 0)


def _other_namespace(pid: int, name: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino
    except OSError:
        return False


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    os.close(fd)
    return data


def _spawning_child(process, fds, root_fd, procs_files, error_w, pid_w, seccomp_program, console_fd, stdio,
                    preserve_fds, docker_user, wait) -> None:
    """Join the cgroup and namespaces, fork into the PID namespace, exec. Never returns."""
    from pyctr.runtime import process as processes

    try:
        import prctl

        # Until it execs, the joining process is the host's Python, with the caller's memory and
        # environment: no container process may read /proc/PID/{environ,mem} (runc CVE-2016-9962).
        prctl.set_dumpable(False)
        os.environ.clear()
        keep = {*fds.values(), root_fd, error_w, pid_w, console_fd, *(stdio or ()), *range(3, 3 + preserve_fds)}
        syscalls.close_fds_except(keep - {None})
        import resource  # noqa: F401  (process.prepare, past the chroot)
        import socket  # noqa: F401  (terminal.open_console)
        import struct  # noqa: F401
        from pyctr.runtime import terminal  # noqa: F401
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
            os.close(pid_w)
            prepared = processes.prepare(process, seccomp=seccomp_program, console_fd=console_fd, stdio=stdio,
                                         preserve_fds=preserve_fds, docker_user=docker_user)
            processes.exec_prepared(prepared, report_fd=error_w)
        os.write(pid_w, str(grandchild).encode())
        os.close(pid_w)
        if not wait:
            os._exit(0)
        # We only wait now: let go of everything else, the caller's stdio included.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        syscalls.close_fds_except(set())
        monitor.ignore_terminal_signals()
        os._exit(monitor.exit_code_of(monitor.wait_for(grandchild)))
    except BaseException as e:
        processes.report_failure_and_exit(error_w, e)


def oci_exec(root: str, container_id: str, args) -> int:
    """`pyctr-oci exec`: --process JSON, or ARGS with runc's flags."""
    import json

    from pyctr.runtime import engine, ocistate, spec as specs

    sd = ocistate.StateDir(root, container_id).load()
    if sd.status() not in ("running", "created"):
        raise PyctrError(f"cannot exec in a container that is {sd.status()}", 1)
    container = engine.saved_spec(sd)
    if args.process:
        try:
            with open(args.process) as f:
                process = specs.Process(json.load(f))
        except OSError as e:
            raise PyctrError(f"--process {args.process}: {e.strerror}", 1) from None
        except json.JSONDecodeError as e:
            raise PyctrError(f"--process {args.process}: not valid JSON: {e}", 1) from None
    else:
        process = _process_from_flags(container.process, args)
    program = None
    if container.linux.seccomp:
        from pyctr.runtime import seccomp as seccomps

        program = seccomps.to_program(container.linux.seccomp, "linux.seccomp", ocistate.seccomp_cache(root))
    console_fd = receiver = None
    if process.terminal:
        from pyctr.runtime import terminal

        if args.console_socket:
            console_fd = engine.connect_console(args.console_socket)
        else:
            receiver, console_fd = terminal.console_pair()
    procs_files = engine.cgroup_of(sd).procs_file()
    detach = args.detach
    child, pid = join_and_spawn(sd.pid, process, procs_files=procs_files, seccomp_program=program,
                                console_fd=console_fd, preserve_fds=args.preserve_fds, wait=not detach)
    if console_fd is not None:
        os.close(console_fd)
    if args.pid_file:
        try:
            engine.write_pid_file(args.pid_file, pid)
        except PyctrError:
            os.kill(pid, signal.SIGKILL)  # a process its caller cannot find must not stay
            monitor.wait_for(child)
            raise
    if detach:
        monitor.wait_for(child)
        return 0
    if receiver is not None:
        from pyctr.runtime import terminal

        master = terminal.receive_console(receiver)
        if master is not None:
            terminal.proxy(master, forward_stdin=True)
    forward = lambda sig, _frame: os.kill(pid, sig)  # noqa: E731
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    return monitor.exit_code_of(monitor.wait_for(child))


def _process_from_flags(base, args):
    """runc exec's flags over the container's own process: its env, cwd, user and capabilities."""
    from pyctr.runtime import spec as specs

    if not args.args:
        raise PyctrError("exec: a command (or --process) is needed")
    raw = dict(base.raw) if base is not None else {}
    raw["args"] = list(args.args[1:] if args.args[0] == "--" else args.args)
    raw["terminal"] = args.tty
    raw.pop("consoleSize", None)
    env = list(raw.get("env", []))
    env += args.env
    raw["env"] = env
    if args.cwd:
        raw["cwd"] = args.cwd
    if args.user:
        uid, _, gid = args.user.partition(":")
        if not uid.isdigit() or not (gid or "0").isdigit():
            raise PyctrError(f"--user {args.user!r}: use UID[:GID], as numbers", 1)
        raw["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if args.additional_gids:
        if not all(g.isdigit() for g in args.additional_gids):
            raise PyctrError(f"--additional-gids {','.join(args.additional_gids)}: group ids are numbers", 1)
        raw.setdefault("user", {})["additionalGids"] = [int(g) for g in args.additional_gids]
    if args.cap:
        caps = {k: list(v) for k, v in (raw.get("capabilities") or {}).items()}
        for cap in args.cap:
            for name in specs.CAPABILITY_SETS:  # as runc exec --cap adds it
                if cap not in caps.setdefault(name, []):
                    caps[name].append(cap)
        raw["capabilities"] = caps
    if args.no_new_privs:
        raw["noNewPrivileges"] = True
    return specs.Process(raw)
