"""Container lifecycle: create, start (the order of `run`), stop, kill, remove.

A container is made by the one core both front ends share (runtime/engine.py), from the OCI
bundle that create writes (runtime/bundle.py). The order of a start, and why:
  1. the CLI writes /etc/hostname, /etc/hosts and /etc/resolv.conf, and forks the monitor (a
     detached container's is a keeper, forked by the host monitor; a runner of the host
     monitor's is the monitor itself, as it does not share the CLI's fate);
  2. the monitor, a child subreaper, calls engine.create: the cgroup with its limits, the
     namespaces, PID 1 in the cgroup, the root filesystem, the process made ready; PID 1 then
     waits on exec.fifo, orphaned to the monitor, which says "pid N";
  3. the CLI hands that PID to the network driver, then engine.start opens the fifo: PID 1
     execs the command, or says why it could not (126, 127);
  4. the monitor reaps PID 1, records the exit, and engine.delete releases the cgroup.
A failure undoes what was done, in reverse.
"""

import os
import signal
import time

from pyctr.runtime import (bundle, cgroups, engine, errors, explain, etcfiles, hosttools, jsonstore, monitor, options,
                           runclient, security)
# Only the monitor that start() forks runs the container's init, but an import in a forked child
# costs ~5x one here (each page it touches is copied on write): ~2 ms of every start.
from pyctr.runtime import container_init  # noqa: F401
from pyctr.runtime import container as records
from pyctr.runtime.container import Container
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError

OWN_NETWORK_MODES = ("none", "host")


def uses_network_driver(c: Container) -> bool:
    return c.config["HostConfig"]["NetworkMode"] not in OWN_NETWORK_MODES


# --- create ------------------------------------------------------------------------------
def create(args) -> Container:
    from pyctr.images import store

    memory = options.parse_memory(args.memory)
    nano_cpus = options.parse_cpus(args.cpus)
    user_env = options.parse_env(args.env, args.env_file)
    labels = options.parse_labels(getattr(args, "label", []), getattr(args, "label_file", []))
    binds = options.parse_volumes(args.volume)
    if args.hostname:
        options.check_hostname(args.hostname)
    workdir = options.check_workdir(args.workdir)
    ports = options.parse_publish(args.publish)
    cap_add = security.validate_caps(args.cap_add)
    cap_drop = security.validate_caps(args.cap_drop)
    security_opts = options.parse_security_opts(args.security_opt)
    if security_opts:
        from pyctr.runtime import seccomp

        seccomp.check_security_opts(security_opts, security.effective_caps(cap_add, cap_drop, args.privileged),
                                    args.privileged)
    if args.pids_limit is not None and args.pids_limit == 0:
        raise PyctrError("invalid --pids-limit 0: use -1 for unlimited")
    if args.network in OWN_NETWORK_MODES and (ports or args.ip):
        raise PyctrError(f"-p and --ip need a network; not supported with --network {args.network}")
    userns_config = options.parse_userns(args.userns, args.userns_remap, args.privileged, args.network)

    image = store.ensure_image(args.image, platform=args.platform)
    defaults = image.get("Config") or {}  # the image's run defaults
    entrypoint, cmd = run_command(getattr(args, "entrypoint", None), args.command, defaults)
    command = (entrypoint or []) + (cmd or [])
    if not command:
        raise PyctrError(f"no command specified: image {args.image} has no Entrypoint or Cmd, "
                         "and none was given")
    cid = records.new_id()
    name = records.reserve_name(args.name, cid)
    hostname = args.hostname or (cid[:12] if args.network != "host" else os.uname().nodename)
    config = {
        "Hostname": hostname,
        "User": args.user or defaults.get("User") or "",
        "Tty": args.tty,
        "OpenStdin": args.interactive,
        "Env": _default_env(defaults.get("Env") or [], user_env, hostname, args.tty),
        "Cmd": cmd,
        "Entrypoint": entrypoint,
        "Image": args.image,
        "WorkingDir": workdir or defaults.get("WorkingDir") or "",
    }
    if defaults.get("ExposedPorts"):
        config["ExposedPorts"] = defaults["ExposedPorts"]
    labels = {**(defaults.get("Labels") or {}), **labels}  # the image's, then ours over them, as Docker
    if labels:
        config["Labels"] = labels
    c = Container({
        "Id": cid,
        "Name": name,
        "Created": records.now_rfc3339(),
        "Path": command[0],
        "Args": command[1:],
        "Image": args.image,
        "ImageID": image["Id"],
        **({"Rootfs": image["Rootfs"]} if "Rootfs" in image else {}),
        "LowerDirs": list(reversed(image["LayerDirs"])),  # top first, as overlayfs's lowerdir
        "Config": config,
        "HostConfig": {
            "Binds": [f"{b['Source']}:{b['Destination']}{'' if b['RW'] else ':ro'}" for b in binds],
            "NetworkMode": args.network,
            "IPAddress": args.ip,
            "PortBindings": ports,
            "AutoRemove": args.rm,
            "Privileged": args.privileged,
            "ReadonlyRootfs": args.read_only,
            "CapAdd": cap_add,
            "CapDrop": cap_drop,
            "SecurityOpt": security_opts,
            "Memory": memory,
            "NanoCpus": nano_cpus,
            "CpuShares": args.cpu_shares or 0,
            "PidsLimit": args.pids_limit,
            **userns_config,
            "IDMappings": None,
        },
        "NetworkSettings": records.empty_network_settings(),
        "Mounts": [{"Type": "bind", "Source": b["Source"], "Destination": b["Destination"],
                    "RW": b["RW"]} for b in binds],
    }, {"Status": "created"})
    try:
        if uses_network_driver(c):
            from pyctr.network import api

            api.validate(c.config)
        c.make_dirs(image.get("RootDir"))
        c.config["HostConfig"]["IDMappings"] = choose_id_mappings(c)
        c.save_config()
        bundle.write(c)
        c.save_state(persist=True)
    except BaseException:
        import shutil

        release_id_mappings(c)
        shutil.rmtree(c.dir, ignore_errors=True)
        records.release_name(name, cid)
        raise
    return c


# --- user namespaces ---------------------------------------------------------------------
ETC_ROOT_ENV = "PYCTR_ETC_ROOT"  # tests: a folder whose etc/ stands for the host's /etc


def userns_etc() -> str:
    """The etc/ where --userns-remap and --userns=auto read subuid and subgid (and where
    --userns-remap=default adds user dockremap): the host's, or $PYCTR_ETC_ROOT/etc."""
    return os.path.join(os.environ.get(ETC_ROOT_ENV) or "/", "etc")


def choose_id_mappings(c: Container) -> dict | None:
    """The container's maps as podman's inspect shows them (HostConfig.IDMappings: UidMap and
    GidMap, "CONTAINER:HOST:SIZE" each), or None without a user namespace. An auto range is
    allocated here, for the container's id, until remove_files gives it back."""
    hc = c.config["HostConfig"]
    mode = hc.get("UsernsMode", "")
    if mode != "private" and not mode.startswith("auto"):
        return None
    from pyctr.runtime import userns  # only then: it costs every start ~20 ms of imports

    etc = userns_etc()
    if mode == "private":
        uids, gids = userns.userns_remap(hc["UsernsRemap"], root=os.path.dirname(etc))
    elif mode.startswith("auto"):
        size = options.auto_size(mode)
        uids, gids = userns.auto_range(c.id, *([size] if size else []), subuid_path=os.path.join(etc, "subuid"),
                                       subgid_path=os.path.join(etc, "subgid"))
    return {"UidMap": [f"{m.container_id}:{m.host_id}:{m.size}" for m in uids],
            "GidMap": [f"{m.container_id}:{m.host_id}:{m.size}" for m in gids]}


def release_id_mappings(c: Container) -> None:
    """Give back an auto range (nothing for other modes): at rm, or when create fails."""
    if c.config["HostConfig"].get("UsernsMode", "").startswith("auto"):
        from pyctr.runtime import userns

        userns.release_auto_range(c.id)


def run_command(entrypoint_flag: str | None, args: list[str], defaults: dict) -> tuple[list | None, list | None]:
    """(Entrypoint, Cmd) by Docker's rules: the command is Entrypoint + Cmd, where Cmd is the
    arguments given, else the image's Cmd. --entrypoint X replaces the image's Entrypoint and
    drops its Cmd; --entrypoint "" clears it (and drops the Cmd too)."""
    if entrypoint_flag is None:
        return defaults.get("Entrypoint") or None, list(args) or defaults.get("Cmd") or None
    return ([entrypoint_flag] if entrypoint_flag else None), list(args) or None


def _default_env(image_env: list[str], user_env: list[str], hostname: str, tty: bool) -> list[str]:
    """Docker's: PATH, HOSTNAME (and TERM with -t), then the image's Env, then -e and
    --env-file, a later value of a name replacing an earlier one in place."""
    env = {"PATH": options.DEFAULT_PATH, "HOSTNAME": hostname}
    if tty:
        env["TERM"] = "xterm"
    for pair in [*image_env, *user_env]:
        key, _, value = pair.partition("=")
        env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


# --- start -------------------------------------------------------------------------------
class StartedContainer:
    """What the caller of start() needs to attach to, or wait for, the new container."""

    def __init__(self, c: Container, monitor, pid: int, pty_master: int | None):
        self.container = c
        self.monitor = monitor
        self.pid = pid
        self.pty_master = pty_master

    def wait_for_exit(self) -> int:
        """The container's exit code, once its monitor has recorded it."""
        return self.monitor.wait_for_exit()


class AlreadyRunning(ConflictError):
    """The container runs already: `start` then does nothing, as Docker's does."""


def start(c: Container, attach: bool, interactive: bool = False) -> StartedContainer:
    """Start a created or exited container. Raises PyctrError (with 126/127) if exec fails.

    Starts of one container take turns on a lock of its own (not the state lock, which the
    start takes for its updates); one that finds the container running raises AlreadyRunning.
    """
    lock = jsonstore.locked(c.dir / "start.lock")
    with lock:
        fresh = records.load(c.id).refresh()  # as the start before ours left it
        c.state = fresh.state
        if c.running:
            raise AlreadyRunning(f"container {c.name} is already running")
        # Created now, so that `logs -f` right after a detached start finds it, as with Docker.
        c.log_path.touch()
        return _start_unlocked(c, attach, interactive, lock.fd)


def _start_unlocked(c: Container, attach: bool, interactive: bool, lock_fd: int) -> StartedContainer:
    hc = c.config["HostConfig"]
    cfg = c.config["Config"]
    own_netns = hc["NetworkMode"] != "host"
    tty = cfg["Tty"]
    detached = not attach
    oci_root = bundle.state_root()
    if os.path.isdir(os.path.join(oci_root, c.id)):  # left by a monitor that was killed
        engine.delete(oci_root, c.id, force=True)

    # Copies, also of the host's files with --network host, as Docker makes: never the host's own.
    if own_netns:
        etcfiles.write_hosts(c.dir, cfg["Hostname"], c.name, None)
    else:
        etcfiles.copy_host_hosts(c.dir)
    etcfiles.write_hostname(c.dir, cfg["Hostname"])
    etcfiles.write_resolv_conf(c.dir, not own_netns)
    stdio, parent_ends, monitor_ends = _stdio(c, tty, interactive, detached)
    if detached:
        container_monitor = _MonitorProcess.keeper(c, stdio, monitor_ends)
    elif runclient.in_runner:
        container_monitor = _RunnerAsMonitor(c, oci_root, stdio, monitor_ends)
    else:
        container_monitor = _MonitorProcess.fork(c, oci_root, stdio, monitor_ends, [lock_fd, *parent_ends])
    undo = [container_monitor.finish_without_start]
    try:
        pid = container_monitor.created_pid()
        undo.append(lambda: _kill_quietly(pid))
        if uses_network_driver(c):
            from pyctr.network import api

            undo.append(lambda: api.disconnect(c.config))
            c.config["NetworkSettings"] = api.connect(c.config, pid)
            c.save_config()
            etcfiles.write_hosts(c.dir, cfg["Hostname"], c.name, c.config["NetworkSettings"].get("IPAddress"))
        c.update_state(persist=True, Status="running", Running=True, Pid=pid,
                       PidStartTime=records.process_start_time(pid), MonitorPid=container_monitor.pid,
                       MonitorStartTime=records.process_start_time(container_monitor.pid),
                       BootId=records.boot_id(), StartedAt=records.now_rfc3339(),
                       FinishedAt="0001-01-01T00:00:00Z", ExitCode=0, OOMKilled=False, Error="",
                       RemovalInProgress=False, Keeper=detached)
        container_monitor.check_start_still_wanted()
    except BaseException as error:
        for step in reversed(undo):
            try:
                step()
            except Exception:
                pass
        if _still_exists(c):  # the monitor of a --rm container may have removed it already
            failed = {"ExitCode": error.exit_code, "Error": str(error)} if isinstance(error, PyctrError) else {}
            c.update_state(persist=True, Status="created" if not c.state.get("StartedAt") else "exited",
                           Running=False, Pid=0, **failed)
        raise
    try:
        engine.start(oci_root, c.id)  # the init execs the command, or says why it could not
    except BaseException as error:
        container_monitor.let_go(oci_root, c.id)
        container_monitor.finish_without_start()  # it has recorded the exit
        if _still_exists(c) and isinstance(error, PyctrError):
            c.update_state(persist=True, Error=str(error))
        raise
    container_monitor.let_go(oci_root, c.id)
    master = None
    if tty and parent_ends:
        from pyctr.runtime import terminal

        master = terminal.receive_console(parent_ends[0])
    if detached:
        for fd in parent_ends:
            _close_quietly(fd)
    return StartedContainer(c, container_monitor, pid, master)


class _MonitorProcess:
    """The container's monitor in a process of its own: a fork of the CLI (which may die, while
    the container runs on), or a keeper forked by the host monitor. It creates the container,
    says "pid N" on a pipe, and lets PID 1 go only on "G" from us."""

    def __init__(self, pid: int, ready_r: int, go_w: int):
        self.pid = pid
        self.ready_r = ready_r
        self.go_w = go_w

    @classmethod
    def fork(cls, c, oci_root, stdio, monitor_ends, parent_only) -> "_MonitorProcess":
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()  # "G" once the start has let PID 1 go; EOF: it never will, kill it
        pid = os.fork()
        if pid == 0:
            _monitor(c, oci_root, ready_w, go_r, stdio, monitor_ends, [ready_r, go_w, *parent_only])
        return cls._forked(pid, ready_r, ready_w, go_r, go_w, [*stdio, *monitor_ends])

    @classmethod
    def keeper(cls, c, stdio, monitor_ends) -> "_MonitorProcess":
        """A keeper, forked by the host monitor (runtime/hostmonitor.py)."""
        from pyctr.runtime import hostmonitor

        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        try:
            pid = hostmonitor.fork_keeper(c, stdio, monitor_ends, ready_w, go_r)
        except BaseException:
            for fd in (ready_r, ready_w, go_r, go_w, *stdio, *monitor_ends):
                _close_quietly(fd)
            raise
        return cls._forked(pid, ready_r, ready_w, go_r, go_w, [*stdio, *monitor_ends])

    @classmethod
    def _forked(cls, pid, ready_r, ready_w, go_r, go_w, its_fds) -> "_MonitorProcess":
        for fd in (ready_w, go_r, *its_fds):
            _close_quietly(fd)
        return cls(pid, ready_r, go_w)

    def created_pid(self) -> int:
        return _created_pid(self.ready_r)

    def check_start_still_wanted(self) -> None:
        pass  # the one who wants it is this process

    def let_go(self, oci_root: str, container_id: str) -> None:
        """"G" when PID 1 went on. Else nothing: the monitor then kills PID 1, which would wait on
        the fifo forever."""
        try:
            if _went_on(oci_root, container_id):
                os.write(self.go_w, b"G")
        finally:
            self._close_go()

    def finish_without_start(self) -> None:
        """Once the start failed: the monitor (without "G", it kills PID 1) records the exit."""
        self._close_go()
        _abandon(self.pid)

    def wait_for_exit(self) -> int:
        return monitor.exit_code_of(monitor.wait_for(self.pid))

    def _close_go(self) -> None:
        if self.go_w is not None:
            os.close(self.go_w)
            self.go_w = None


class _RunnerAsMonitor:
    """A foreground run in a runner of the host monitor (runtime/runclient.py) is its own
    container's monitor: a process apart from the CLI already, so a fork of it for the monitor
    would only cost the fork and its copy-on-write faults again (~4 ms of the start). From the
    container's creation on, the runner no longer dies with its CLI: if the CLI is gone before
    the start, PID 1 never runs its command (as with a monitor that gets no "G"); after it, the
    container runs on, and its exit is recorded."""

    def __init__(self, c, oci_root, stdio, monitor_ends):
        import prctl

        runclient.outlive_the_cli()
        hosttools.leave_callers_directory()  # it may be a bind mount the container writes to
        prctl.set_child_subreaper(True)  # PID 1, orphaned by the engine, comes to us
        self.pid = os.getpid()
        self.container, self.oci_root, self.stdio, self.monitor_ends = c, oci_root, stdio, monitor_ends
        self.pid1 = None
        self.went_on = False

    def created_pid(self) -> int:
        try:
            self.pid1 = _create(self.container, self.oci_root, self.stdio)
        except BaseException:
            for fd in self.monitor_ends:
                _close_quietly(fd)
            raise
        return self.pid1

    def check_start_still_wanted(self) -> None:
        if runclient.cli_is_gone():
            raise PyctrError("pyctr run ended before the container started")

    def let_go(self, oci_root: str, container_id: str) -> None:
        self.went_on = _went_on(oci_root, container_id)

    def finish_without_start(self) -> None:
        """Once the start failed: kill PID 1 unless it went on (an exec that failed ends it with
        126 or 127), reap it and record the exit, as a monitor process would."""
        if self.pid1 is not None:
            if not self.went_on:
                _kill_quietly(self.pid1)
            self.wait_for_exit()

    def wait_for_exit(self) -> int:
        return _watch(records.load(self.container.id), self.pid1, self.monitor_ends)


def _went_on(oci_root: str, container_id: str) -> bool:
    """Whether the start opened exec.fifo (and removed it): PID 1 went on to its command."""
    return not os.path.exists(os.path.join(oci_root, container_id, "exec.fifo"))


def _created_pid(ready_r: int) -> int:
    """The monitor's one line: "pid N" once the container is created, or "error CODE message"."""
    data = b""
    while not data.endswith(b"\n") and (chunk := os.read(ready_r, 4096)):
        data += chunk
    os.close(ready_r)
    line = data.decode(errors="replace").strip()
    if line.startswith("pid "):
        return int(line[4:])
    if line.startswith("error "):
        code, _, message = line[6:].partition(" ")
        raise PyctrError(message, int(code) if code.isdigit() else 125)
    raise PyctrError(f"the container failed to start ({line or 'its monitor died'})")


def _still_exists(c: Container) -> bool:
    return (c.dir / "config.json").exists()


def _stdio(c: Container, tty: bool, interactive: bool, detached: bool):
    """Returns (fds for the container's 0/1/2, the parent's ends, the monitor's ends).

    Attached: output goes through pipes to the monitor, which copies it to pyctr's stdout and
    stderr and to the log; stdin is pyctr's (with -i); with -t, a pty the CLI proxies.
    Detached: output goes through pipes (or a pty) to the monitor, which writes the log;
    with -i the monitor holds stdin open so that a shell keeps waiting, as with `docker run -dit`.
    """
    if tty:
        from pyctr.runtime import terminal

        # PID 1 opens the pty in its own devpts and sends the master over this socket.
        receiver, sender = terminal.console_pair()
        if detached:
            return (sender,), [], [receiver]
        return (sender,), [receiver], []
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if not detached:
        # Output goes through the monitor, which copies it to our terminal and to the log, so
        # that `pyctr logs` has it too, as with `docker run`. Stdin stays ours.
        stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return (stdin, out_w, err_w), [], [out_r, err_r]
    if interactive:
        in_r, in_w = os.pipe()
        return (in_r, out_w, err_w), [], [out_r, err_r, in_w]
    return (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), out_w, err_w), [], [out_r, err_r]


def _monitor(c, oci_root, ready_w, go_r, stdio, monitor_ends, parent_only) -> None:
    """A foreground container's monitor, a fork of the CLI: create the container with the engine,
    then reap its PID 1, which the engine's first stage leaves orphaned to us (a child subreaper),
    as conmon does around runc. Never returns."""
    code = 255
    try:
        # Else PID 1 would never see EOF if the CLI dies (and the start lock would outlive the start).
        for fd in parent_only:
            _close_quietly(fd)
        hosttools.leave_callers_directory()  # it may be a bind mount the container writes to
        import prctl

        prctl.set_child_subreaper(True)
        pid = _create_and_await_start(c, oci_root, ready_w, go_r, stdio)
        if pid is None:  # the CLI was told why
            code = 0
            return
        code = _watch(c, pid, monitor_ends)
    except BaseException as e:
        errors.last_words("monitor", e)
    finally:
        os._exit(code)


def keep(request: dict, ready_w: int, go_r: int, stdio: list[int], monitor_ends: list[int], report_w: int) -> None:
    """A detached container's keeper, forked by the host monitor (runtime/hostmonitor.py): it
    creates the container as a foreground monitor does, then becomes `sleep infinity`, which
    keeps the two things that must outlive the host monitor: PID 1's exit status (PID 1 is its
    child, and stays a zombie until someone reads it) and the container's output pipes. The
    host monitor takes copies of those, copies the output into the log and records the exit.
    Never returns."""
    import prctl

    os.setsid()  # a session of its own: it outlives the host monitor, and any signal to its group
    prctl.set_child_subreaper(True)  # PID 1, orphaned by the engine, comes to us
    _configure_from(request)
    c = records.load(request["container"])
    pid = _create_and_await_start(c, bundle.state_root(), ready_w, go_r, stdio)
    if pid is None:  # the CLI was told why
        os._exit(0)
    if request["tty"]:
        from pyctr.runtime import terminal

        master = terminal.receive_console(monitor_ends[0])
        outputs, stdin_end = ([master] if master is not None else []), None
    else:
        outputs, stdin_end = monitor_ends[:2], (monitor_ends[2] if len(monitor_ends) > 2 else None)
    from pyctr.runtime import hostmonitor

    hostmonitor.become_keeper(c.id, pid, outputs, stdin_end, report_w)


def _configure_from(request: dict) -> None:
    """The CLI's settings, in a fork of the host monitor."""
    from pyctr.runtime import settings

    settings.configure(request["root"], request["state"])
    explain.enable(request["explain"])


def _create(c: Container, oci_root: str, stdio) -> int:
    """engine.create from the container's bundle; PID 1's PID, or PyctrError with the reason.
    The container's ends of its stdio are closed either way (PID 1 holds its copies)."""
    from pyctr.runtime import seccomp

    try:
        spec = bundle.load(c)
        tty = spec.process.terminal
        return engine.create(spec, oci_root, c.id, console_fd=stdio[0] if tty else None,
                             stdio=None if tty else stdio, limits=bundle.limits(c),
                             seccomp_cache=seccomp.pyctr_cache()).pid
    except PyctrError:
        raise
    except BaseException as e:
        raise PyctrError(f"{type(e).__name__}: {e}") from e
    finally:
        for fd in stdio:
            _close_quietly(fd)


def _create_and_await_start(c, oci_root, ready_w, go_r, stdio) -> int | None:
    """In a monitor process: _create, then the handshake with the CLI: "pid N" (or "error CODE
    message") on ready_w, and "G" on go_r once the start let PID 1 go. Returns PID 1's PID, or
    None when the CLI was told of an error."""
    try:
        pid = _create(c, oci_root, stdio)
    except PyctrError as failure:
        os.write(ready_w, f"error {failure.exit_code} {failure}".replace("\n", " ").encode() + b"\n")
        return None
    monitor.ignore_terminal_signals()  # only now: PID 1 must not inherit it
    try:
        os.write(ready_w, f"pid {pid}\n".encode())
        go = os.read(go_r, 1)
    except OSError:
        go = b""
    for fd in (ready_w, go_r):
        _close_quietly(fd)
    if go != b"G":  # the CLI gave up, or died, before the start: PID 1 never runs the command
        _kill_quietly(pid)
    return pid


def _watch(c: Container, pid: int, monitor_ends: list[int]) -> int:
    """The monitor's part once PID 1 runs (or was killed): copy its output into the log (and to
    our stdout and stderr, a foreground run's), reap it, record the exit; the exit code."""
    if not c.config["Config"]["Tty"]:  # with a pty, the CLI proxies it
        from pyctr.runtime import reaper

        reaper.capture(c.log_file, {monitor_ends[0]: "stdout", monitor_ends[1]: "stderr"},
                       tee={monitor_ends[0]: 1, monitor_ends[1]: 2})
    status = monitor.wait_for(pid)
    return monitor.finish(records.load(c.id), status)


def _close_quietly(fd: int) -> None:
    try:
        if fd > 2:
            os.close(fd)
    except OSError:
        pass


def _kill_quietly(pid: int) -> None:
    explain.step("kill", "-9", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _abandon(monitor_pid: int) -> None:
    """Wait for the monitor once its PID 1 is gone, so that it has recorded the exit: our child
    (a foreground run's), or the host monitor's."""
    try:
        os.waitpid(monitor_pid, 0)
    except ChildProcessError:
        monitor.wait_briefly_for_exit(monitor_pid, 10)


# --- after the container exits ------------------------------------------------------------
def oom_killed(c: Container) -> bool:
    try:
        return cgroups.for_container(c.id).oom_killed()
    except OSError:
        return False


def release_network(c: Container) -> None:
    """A stopped container's network attachment (its lease stays, for a restart). Idempotent."""
    if uses_network_driver(c):
        from pyctr.network import api

        try:
            api.disconnect(c.config)
        except Exception as e:
            from pyctr.runtime import log

            log.warning(f"network clean-up of {c.short_id}: {e}")


def delete_oci_container(c: Container) -> None:
    """The engine's state of the container, and its cgroup (the engine removes it; this, one it has
    no state of: an older pyctr's, or left by a monitor that was killed). Idempotent."""
    engine.delete(bundle.state_root(), c.id, force=True)
    group = cgroups.for_container(c.id)
    if group.exists():
        group.remove()


def remove_files(c: Container, oci_deleted: bool = False) -> None:
    """Forget the container: network (with its lease), cgroup, layers, logs, state and name.
    Idempotent, and complete even when nothing was released at exit (a SIGKILLed monitor).
    `oci_deleted`: the caller (its monitor) has just deleted the OCI state and the cgroup."""
    if uses_network_driver(c):
        from pyctr.network import api

        api.release(c.config)  # also removes what disconnect() would
    if not oci_deleted:
        delete_oci_container(c)
    explain.step("rm", "-rf", c.dir)
    engine.remove_tree(c.dir)
    release_id_mappings(c)
    for path in (c.state_path, c.lock_path):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    records.release_name(c.name, c.id)


# --- signals, stop, remove -----------------------------------------------------------------
def send_signal(c: Container, sig: int) -> None:
    c.refresh()
    if not c.running:
        raise ConflictError(f"container {c.name} is not running")
    explain.step("kill", f"-{sig}", c.pid)
    os.kill(c.pid, sig)


def wait_until_exited(c: Container, timeout: float | None = None) -> bool:
    """True once the container is recorded as exited (its monitor has finished)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pid = c.pid if c.running else 0
    if pid:
        fd = monitor.pidfd(pid)
        if fd is not None:
            import select

            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            select.select([fd], [], [], remaining)
            os.close(fd)
    while True:
        fresh = records.load(c.id).refresh()  # waits for the monitor to record the exit code
        if not fresh.running:
            c.state = fresh.state
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop(c: Container, timeout: int) -> None:
    c.refresh()
    if not c.running:
        return
    send_signal(c, signal.SIGTERM)
    try:
        if not wait_until_exited(c, timeout):
            send_signal(c, signal.SIGKILL)
            wait_until_exited(c, 10)
    except NotFoundError:  # --rm: its monitor recorded the exit, then removed it: stopped, as Docker says
        pass


def remove(c: Container, force: bool) -> None:
    c.refresh()
    if c.running:
        if not force:
            raise ConflictError(f"cannot remove container {c.name}: container is running: stop the container "
                                "before removing or force remove")
        if uses_network_driver(c):
            # Here rather than in the monitor after the kill, so that this command (and its
            # --explain) does it: the port rules and the veth go while they still exist.
            from pyctr.network import api

            try:
                api.disconnect(c.config)
            except Exception as e:  # remove_files() tries again, after the kill
                from pyctr.runtime import log

                log.warning(f"network clean-up of {c.short_id}: {e}")
        # The cgroup goes in remove_files() below, with its rmdir printed by this command: the
        # monitor, told so, only records the exit.
        c.update_state(persist=True, RemovalInProgress=True)
        cgroups.for_container(c.id).kill()  # every process in its cgroup, as `runc kill --all`
        _kill_quietly(c.pid)
        wait_until_exited(c, 10)
    if c.monitor_alive() and not monitor.wait_briefly_for_exit(c.state["MonitorPid"], 10) and c.state.get("Keeper"):
        _kill_quietly(c.state["MonitorPid"])  # a keeper whose host monitor did not come back
    remove_files(c)
