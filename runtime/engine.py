"""Make a container from a spec, and drive it: the one core both front ends use.

    create(spec, root, id, ...)   the container waits on exec.fifo; nothing of pyctr stays running
    start(root, id)               prestart hooks, open the fifo, poststart hooks
    state / kill / delete / pause / resume / update / stats / processes
A new process in a running container is runtime/nsenter.py's (join_and_spawn, oci_exec).

`pyctr-oci` (runtime/oci_cli.py) calls these as runc's commands; `pyctr run` writes a bundle
(runtime/bundle.py) and calls them from its monitor, as conmon calls runc.
"""

import os
import time
from _signal import SIGKILL  # signal's enums would import enum and functools: ~2 ms of each start

# cgroups (ctypes with it) is imported by the commands that touch a cgroup: `state` and `start`,
# each a process of its own under podman, do not.
from pyctr.runtime import explain, jsonstore, ocistate
from pyctr.runtime.errors import ConflictError, PyctrError


class Created:
    """What the caller of create() may need: the init's PID."""

    def __init__(self, state_dir: ocistate.StateDir, pid: int):
        self.state_dir = state_dir
        self.pid = pid


def cgroup_of(sd: ocistate.StateDir):
    from pyctr.runtime import cgroups

    return cgroups.for_spec(sd.id, sd.record.get("cgroupsPath"))


# --- create --------------------------------------------------------------------------------
def create(spec, root: str, container_id: str, *, pid_file: str | None = None, console_socket: str | None = None,
           console_fd: int | None = None, stdio=None, preserve_fds: int = 0, no_pivot: bool = False,
           new_keyring: bool = True, limits=None, seccomp_cache=None) -> Created:
    """Create the container; raises PyctrError with the reason, having undone every step.
    `limits`: pyctr run's cgroups.Limits, the values of linux.resources, applied instead so that
    an error names the flag and only the controllers they need are made. `seccomp_cache`: a folder
    for compiled filters (pyctr run's store, pyctr-oci's root); None compiles each time."""
    from pyctr.runtime import cgroups, container_init, security

    if spec.process is not None and spec.process.terminal and console_socket is None and console_fd is None:
        raise PyctrError("process.terminal is true: a --console-socket is needed to pass the terminal on", 1)
    from pyctr.runtime.cgroups import warm

    warm.keep()  # PID 1's cgroup move comes in ~10 ms: its wait for the lock begins now
    sd = ocistate.StateDir(root, container_id)
    sd.make()
    undo = [lambda: _remove_state_dir(sd)]
    pid = 0
    child_r = parent_w = None
    messages = None
    try:
        sd.record = {"ociVersion": spec.oci_version or "1.1.0", "id": container_id, "bundle": spec.bundle,
                     "rootfs": spec.root.path, "annotations": spec.annotations, "creating": True,
                     "created": _now(), "owner": "root", "cgroupsPath": spec.linux.cgroups_path}
        sd.save()
        cgroup = cgroups.for_spec(container_id, spec.linux.cgroups_path)
        resources = limits if limits is not None else with_default_devices(spec)
        cgroup.refuse_what_cannot_apply(resources)

        def make_cgroup_and_keep_spec() -> None:
            """What PID 1 needs only once it exists, and later commands need: its cgroup, and the spec."""
            cgroup.create(resources)
            undo.append(cgroup.remove)
            if cgroup.path_spec != sd.record["cgroupsPath"]:
                sd.save(cgroupsPath=cgroup.path_spec)  # where later commands, from anywhere, find it
            ocistate.write_private_json(sd.config_path, spec.raw)

        explain.step("mkfifo", "-m", "622", sd.fifo_path)
        os.mkfifo(sd.fifo_path, 0o622)
        os.chmod(sd.fifo_path, 0o622)  # whatever the umask: a user namespace's root opens it too
        # Read on the host before the container exists: an image can put anything at its /proc.
        security.remember_host_cap_last_cap()
        program = _seccomp_program(spec, seccomp_cache)
        if console_socket is not None and spec.process is not None and spec.process.terminal:
            console_fd = connect_console(console_socket)
        child_r, to_parent = os.pipe()
        from_parent, parent_w = _channel_to_init()
        ctx = container_init.InitContext(spec, sd.fifo_path, os.path.join(sd.dir, "staging"), to_parent, from_parent,
                                         console_fd, stdio, preserve_fds, no_pivot, new_keyring, program)
        # PID 1 (with stage 1 before it, when the spec needs one) makes its namespaces while we
        # make the cgroup (on two CPUs, at the same time); under --explain, one after the other,
        # so that the steps print in order.
        if explain.enabled:
            make_cgroup_and_keep_spec()
        stage1 = None
        if container_init.needs_stage1(spec):
            stage1 = os.fork()
            if stage1 == 0:
                os.close(child_r)
                os.close(parent_w)
                container_init.stage1(ctx)
        else:
            pid = container_init.fork_pid_1(ctx)  # our child; the nearest subreaper's once we exit
        for fd in (to_parent, from_parent):
            os.close(fd)
        if console_socket is not None and console_fd is not None:
            os.close(console_fd)
        if not explain.enabled:
            make_cgroup_and_keep_spec()
        messages = _Messages(child_r)
        if stage1 is not None:
            line = messages.next()
            if line == "userns":
                from pyctr.runtime import userns

                userns.write_mappings(stage1, spec.linux.uid_mappings, spec.linux.gid_mappings)
                os.write(parent_w, b"mapped\n")
                line = messages.next()
            if not line.startswith("pid "):
                _waitpid(stage1)
                raise _failure(line)
            pid = int(line[4:])
        cgroup.add(pid)
        if stage1 is not None:
            _waitpid(stage1)  # it has exited meanwhile: PID 1, its orphan, is the nearest subreaper's now
        sd.save(pid=pid, pidStartTime=_start_time(pid))
        if spec.linux.new_namespace("user") and spec.linux.new_namespace("mount"):
            from pyctr.runtime import userns_root

            userns_root.build_root(spec, pid, parent_w, os.path.join(sd.dir, "staging"))
        if spec.hooks.create_runtime:
            _run_hooks("createRuntime", spec.hooks.create_runtime, sd.oci_state())
        try:
            os.write(parent_w, f"go {jsonstore.dumps(sd.oci_state())}\n".encode())
        except BrokenPipeError:
            pass  # the init failed building the root meanwhile: its last message says why
        line = messages.next()
        if line != "created":
            raise _failure(line)
        messages.close()
        child_r = None
        sd.record.pop("creating", None)
        sd.save()
        if pid_file:
            write_pid_file(pid_file, pid)
        return Created(sd, pid)
    except BaseException as error:
        # The init may have failed first (it builds its root meanwhile), and our step then failed
        # because it was gone: its reason is the one to give.
        reason = (_reason_left_by_init(messages) if messages is not None and child_r is not None
                  and isinstance(error, OSError) else None)
        for step in [lambda: pid and _kill_and_wait(pid), *reversed(undo)]:  # PID 1 first: it holds the cgroup
            try:
                step()
            except Exception:
                pass
        if reason is not None:
            raise reason from error
        raise
    finally:
        for fd in (child_r, parent_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _reason_left_by_init(messages: "_Messages") -> PyctrError | None:
    """An "error ..." line the init wrote before it exited, if there is one (never waits)."""
    import select

    data = messages.buffer
    while select.select([messages.fd], [], [], 0)[0]:
        chunk = os.read(messages.fd, 65536)
        if not chunk:
            break
        data += chunk
    errors = [line for line in data.decode(errors="replace").splitlines() if line.startswith("error ")]
    return _failure(errors[-1]) if errors else None


# What every container may use, after the spec's own rules, as runc allows them: mknod of any
# node (the device cgroup still guards its use), and the nodes every container's /dev has.
DEFAULT_DEVICE_RULES = [
    {"allow": True, "type": "c", "access": "m"}, {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (136, None), (5, 2), (10, 200))),
]


def with_default_devices(spec) -> dict:
    """linux.resources with the device rules runc adds: its defaults, then one per linux.devices
    entry (a device the spec makes must be usable)."""
    from pyctr.runtime import cgroups

    resources = cgroups.resources.drop_unset(spec.linux.resources)
    rules = list(resources.get("devices") or [])
    if not any(rule.get("allow") is False for rule in rules):
        return resources  # nothing denied: nothing to add
    rules += DEFAULT_DEVICE_RULES
    rules += [{"allow": True, "type": d.type if d.type != "u" else "c", "major": d.major, "minor": d.minor,
               "access": "rwm"} for d in spec.linux.devices if d.type in ("c", "b", "u")]
    resources["devices"] = [{k: v for k, v in rule.items() if v is not None} for rule in rules]
    return resources


def _seccomp_program(spec, cache):
    if not spec.linux.seccomp:
        return None
    from pyctr.runtime import seccomp

    return seccomp.to_program(spec.linux.seccomp, "linux.seccomp", cache)


def connect_console(path: str) -> int:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise PyctrError(f"--console-socket {path}: {e.strerror}", 1) from None
    return sock.detach()


def _channel_to_init() -> tuple[int, int]:
    """The parent's messages to the init: a socket rather than a pipe, so that descriptors can
    go with them (runtime/userns_root.py)."""
    from pyctr.runtime import syscalls

    return syscalls.unix_socketpair()


def _failure(line: str) -> PyctrError:
    if line.startswith("error "):
        code, _, message = line[6:].partition(" ")
        return PyctrError(message, int(code) if code.isdigit() else 1)
    return PyctrError(f"the container's init failed ({line or 'no reply'})", 1)


class _Messages:
    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""

    def next(self) -> str:
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return self.buffer.decode(errors="replace").strip()
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")

    def close(self) -> None:
        os.close(self.fd)


def write_pid_file(path: str, pid: int) -> None:
    """Written whole or not at all (conmon reads it as soon as create returns), with no newline."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise PyctrError(f"--pid-file {path}: {e.strerror}", 1) from None


# --- start ---------------------------------------------------------------------------------
def start(root: str, container_id: str) -> None:
    sd = ocistate.StateDir(root, container_id).load()
    with sd.lock:
        status = sd.status()
        if status != "created":
            raise ConflictError(f"cannot start a container that is {status}: only a created one", 1)
        config = jsonstore.read_json(sd.config_path) or {}
        if config.get("process") is None:
            _kill_and_wait(sd.pid)
            raise PyctrError("cannot start a container that has no process: process is not set in config.json", 1)
        prestart, poststart = _saved_hooks(config, "prestart", "poststart")
        if prestart:
            try:
                _run_hooks("prestart", prestart, sd.oci_state())
            except PyctrError:
                # The spec: stop the container and go on with the lifecycle's end (delete, poststop).
                _kill_and_wait(sd.pid)
                _delete_locked(sd, "stopped", _poststop_hooks(sd))
                raise
        report = _release(sd)
        if report:
            from pyctr.runtime import process

            raise process.failure_from_report(report)
        if poststart:
            _run_hooks("poststart", poststart, sd.oci_state())


def _saved_hooks(config: dict | None, *kinds: str) -> list[list]:
    """The hooks of each kind asked for ("prestart", ...) in the spec that create saved (and
    checked). Without any, the spec is not read again: spec.py brings ctypes, json and enum, ~10 ms
    of a `start` or a `delete`, which podman runs for every container."""
    hooks = (config or {}).get("hooks") or {}
    if not any(hooks.get(kind) for kind in kinds):
        return [[] for _ in kinds]
    from pyctr.runtime import spec as specs

    parsed = specs.Hooks(hooks)
    return [getattr(parsed, specs.HOOK_KINDS[kind]) for kind in kinds]


def _release(sd: ocistate.StateDir) -> bytes:
    """Open the fifo, which lets the init go on; returns what the init reported after its "0":
    nothing once the program runs (the fifo closes at exec), or why it could not run."""
    import select

    explain.step("cat", sd.fifo_path)
    fd = os.open(sd.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        watch = _pidfd(sd.pid)
        data = b""
        while not data:  # the init's "0", or its death before it opened its end
            readable, _, _ = select.select([fd] + ([watch] if watch is not None else []), [], [], 0.1)
            if fd in readable:
                data = os.read(fd, 4096)
                if data:
                    break
            if watch in readable or not sd.alive():
                data = _read_available(fd)
                if not data:
                    os.unlink(sd.fifo_path)
                    raise PyctrError("the container's init died before the start", 1)
                break
        # Only now that the init has opened its end (it opens it by name) may the name go: from
        # here on the container counts as running.
        os.unlink(sd.fifo_path)
        os.set_blocking(fd, True)
        while chunk := os.read(fd, 4096):
            data += chunk
        if watch is not None:
            os.close(watch)
        return data[1:] if data.startswith(b"0") else data
    finally:
        os.close(fd)


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def saved_spec(sd: ocistate.StateDir):
    from pyctr.runtime import spec as specs

    return specs.Spec(jsonstore.read_json(sd.config_path), sd.record.get("bundle", "/"))


# --- state, kill, delete -------------------------------------------------------------------
def state(root: str, container_id: str) -> dict:
    return ocistate.StateDir(root, container_id).load().oci_state()


def kill(root: str, container_id: str, sig: int, all_processes: bool = False) -> None:
    sd = ocistate.StateDir(root, container_id).load()
    status = sd.status()
    if status not in ("created", "running", "paused"):
        raise ConflictError(f"container {container_id} is {status}: cannot send it a signal", 1)
    if all_processes:
        group = cgroup_of(sd)
        explain.step("kill", f"-{sig}", "$(cat cgroup.procs)")
        group.kill(sig)
        if status == "paused":
            group.thaw()
        return
    explain.step("kill", f"-{sig}", sd.pid)
    os.kill(sd.pid, sig)


def delete(root: str, container_id: str, force: bool = False) -> None:
    sd = ocistate.StateDir(root, container_id)
    try:
        sd.load()
    except PyctrError:
        if force:
            return  # runc's delete --force of what is gone already succeeds
        raise
    with sd.lock:
        status = sd.status()
        if status not in ("stopped",) and not force:
            raise ConflictError(f"cannot delete container {container_id} that is {status}: stop it first "
                                "(or use --force)", 1)
        _delete_locked(sd, status, _poststop_hooks(sd))


def _delete_locked(sd: ocistate.StateDir, status: str, poststop: list) -> None:
    group = cgroup_of(sd)
    if status != "stopped":
        explain.step("kill", "-9", sd.pid)
        group.kill(SIGKILL)
        if status == "paused":
            group.thaw()
        _kill_and_wait(sd.pid)
    group.remove()
    stopped = {**sd.oci_state(), "status": "stopped"}
    _remove_state_dir(sd)
    if poststop:
        _run_hooks("poststop", poststop, stopped)


def _poststop_hooks(sd: ocistate.StateDir) -> list:
    """The poststop hooks create saved; none if that spec is gone or spoilt: delete goes on."""
    try:
        config = jsonstore.read_json(sd.config_path)
        return _saved_hooks(config if isinstance(config, dict) else None, "poststop")[0]
    except (OSError, ValueError, PyctrError):
        return []


def _remove_state_dir(sd: ocistate.StateDir) -> None:
    """rm -rf: the files ocistate keeps, and the init's staging folder (a file and an empty folder
    to bind onto, rootfs._staging_place)."""
    explain.step("rm", "-rf", sd.dir)
    remove_tree(sd.dir)


def remove_tree(folder) -> None:
    """rm -rf by descriptors, following no symlink, as shutil.rmtree does; shutil itself (whose
    import brings zlib, bz2 and lzma: ~3 ms of a --rm start, ~7 ms of a pyctr-oci delete with
    `re` and `enum`) only for what this cannot remove, such as a symlink to a folder."""
    try:
        for _, subfolders, files, folder_fd in os.fwalk(folder, topdown=False):
            for name in files:
                os.unlink(name, dir_fd=folder_fd)
            for name in subfolders:
                os.rmdir(name, dir_fd=folder_fd)
        os.rmdir(folder)
    except OSError:
        if os.path.lexists(folder):
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


# --- pause, resume, update, stats, ps -----------------------------------------------------
def pause(root: str, container_id: str) -> None:
    sd = ocistate.StateDir(root, container_id).load()
    with sd.lock:
        if sd.status() != "running":
            raise ConflictError(f"container {container_id} is {sd.status()}: only a running one can be paused", 1)
        cgroup_of(sd).freeze()
        sd.save(paused=True)


def resume(root: str, container_id: str) -> None:
    sd = ocistate.StateDir(root, container_id).load()
    with sd.lock:
        if sd.status() != "paused":
            raise ConflictError(f"container {container_id} is {sd.status()}: only a paused one can be resumed", 1)
        cgroup_of(sd).thaw()
        sd.save(paused=False)


def update(root: str, container_id: str, resources: dict) -> None:
    sd = ocistate.StateDir(root, container_id).load()
    with sd.lock:
        if sd.status() == "stopped":
            raise ConflictError(f"container {container_id} is stopped: nothing to update", 1)
        from pyctr.runtime import cgroups

        group = cgroup_of(sd)
        resources = cgroups.resources.drop_unset(resources)
        group.refuse_what_cannot_apply(resources)
        group.update(resources)
        config = jsonstore.read_json(sd.config_path)
        merged = config.setdefault("linux", {}).setdefault("resources", {})
        for key, value in resources.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
        ocistate.write_private_json(sd.config_path, config)


def stats(root: str, container_id: str) -> dict:
    sd = ocistate.StateDir(root, container_id).load()
    if sd.status() == "stopped":
        raise ConflictError(f"container {container_id} is stopped", 1)
    return cgroup_of(sd).stats()


def processes(root: str, container_id: str) -> list[int]:
    sd = ocistate.StateDir(root, container_id).load()
    if sd.status() == "stopped":
        return []
    return sorted(cgroup_of(sd).pids())


def list_all(root: str) -> list[ocistate.StateDir]:
    found = []
    for container_id in ocistate.all_ids(root):
        try:
            found.append(ocistate.StateDir(root, container_id).load())
        except PyctrError:
            pass
    return found


# --- helpers -------------------------------------------------------------------------------
def _run_hooks(kind: str, entries, state: dict) -> None:
    from pyctr.runtime import hooks  # only a spec with hooks needs them

    hooks.run(kind, entries, state)


def _now() -> str:
    from pyctr.runtime.reaper import now_rfc3339

    return now_rfc3339()


def _start_time(pid: int) -> int | None:
    from pyctr.runtime.container import process_start_time

    return process_start_time(pid)


def _waitpid(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL, then wait until the process has finished (it may be a zombie of another parent)."""
    try:
        os.kill(pid, SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, os.WNOHANG)  # ours, when create fails half-way
    except ChildProcessError:
        pass
    deadline = time.monotonic() + timeout
    from pyctr.runtime.container import process_start_time

    while process_start_time(pid) is not None and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        time.sleep(0.005)
