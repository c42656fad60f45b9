"""The init of a new container (runc's nsexec and standard_init), from fork to exec.

Two forked stages, as runc has:
  stage 1  joins the namespaces the spec names by path, makes the user namespace (the parent
           writes its maps), unshares the other new ones, forks stage 2, says its PID, exits;
           without namespaces to join nor a user namespace, there is no stage 1: the caller
           forks stage 2 itself into a new PID namespace (fork_pid_1), one fork fewer;
  stage 2  the container's init (PID 1 of a new PID namespace), orphaned at once (or when the
           caller exits), so the caller's subreaper (conmon, containerd's shim, pyctr's
           monitor) becomes its parent.
           Once the parent says "go" (its cgroup joined, createRuntime hooks run), it builds
           the root, prepares the process, says "created", and blocks on opening exec.fifo.
           `start` opens the other end; the init writes "0", runs the startContainer hooks,
           and execs. The fifo stays open until exec (close-on-exec), so `start` sees its end
           only once the program runs, or reads why it did not.

Messages to the parent are lines on a pipe: "userns", "pid N", "created", "error CODE message".
From the parent, on a socket: "mapped", "go STATE-JSON"; with a new user namespace, before "go",
"userns-root JSON" with descriptors of the root, the staging folder and the bind sources, which
the container's root could not reach by path (runtime/userns_root.py).
"""

import os

from pyctr.runtime import explain, init, jsonstore, syscalls
from pyctr.runtime.errors import PyctrError

NAMESPACE_FLAGS = {"pid": syscalls.CLONE_NEWPID, "network": syscalls.CLONE_NEWNET, "mount": syscalls.CLONE_NEWNS,
                   "ipc": syscalls.CLONE_NEWIPC, "uts": syscalls.CLONE_NEWUTS, "user": syscalls.CLONE_NEWUSER,
                   "cgroup": syscalls.CLONE_NEWCGROUP}
UNSHARE_NAMES = {"pid": "--pid", "network": "--net", "mount": "--mount", "ipc": "--ipc", "uts": "--uts",
                 "user": "--user", "cgroup": "--cgroup"}


class InitContext:
    """What the parent prepared before the fork; the children inherit it."""

    def __init__(self, spec, fifo_path: str, staging: str, to_parent: int, from_parent: int,
                 console: int | None, stdio, preserve_fds: int, no_pivot: bool, new_keyring: bool, seccomp):
        self.spec = spec
        self.fifo_path = fifo_path
        self.staging = staging
        self.to_parent, self.from_parent = to_parent, from_parent
        self.console = console  # a connected console socket, for a terminal
        self.stdio = stdio  # fds for 0, 1, 2; None keeps ours
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.new_keyring = new_keyring
        self.seccomp = seccomp  # a compiled seccomp.Program, or None
        self.state_folder: int | None = None  # opened by stage 1
        self.buffer = b""
        self.fds: list[int] = []  # what came with the parent's messages

    def send(self, line: str) -> None:
        os.write(self.to_parent, (line + "\n").encode())

    def receive(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self._read()
            if not chunk:
                os._exit(1)  # the parent gave up (or died) before the container was made
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def _read(self) -> bytes:
        if not self.spec.linux.new_namespace("user"):
            # Descriptors come only for a user namespace's root (userns_root.py); a plain read
            # spares every other init the import of userns (shutil, subprocess, typing).
            return os.read(self.from_parent, 65536)
        import socket

        from pyctr.runtime import userns, userns_root

        with socket.socket(fileno=os.dup(self.from_parent)) as channel:
            chunk, fds = userns.recv_with_fds(channel, max_fds=userns_root.MAX_FDS)
        self.fds += fds
        return chunk

    def kept_fds(self) -> set[int]:
        fds = {self.to_parent, self.from_parent, self.console, *(self.stdio or ())}
        fds |= set(range(3, 3 + self.preserve_fds))
        return {fd for fd in fds if fd is not None}


def needs_stage1(spec) -> bool:
    """Whether PID 1 needs a stage 1 to fork it: to join namespaces by path, or for a user
    namespace (PID 1's parent writes its ID mappings). Else the caller forks PID 1 itself
    (fork_pid_1), one fork and one Python process fewer in a start."""
    return spec.linux.new_namespace("user") or any(ns.path for ns in spec.linux.namespaces)


def fork_pid_1(ctx: InitContext) -> int:
    """In the caller of create, without stage 1: fork PID 1 into a new PID namespace, where it
    makes the other namespaces itself. unshare(CLONE_NEWPID) changes only where this process's
    next child goes; setns into our own PID namespace puts that back at once. Returns PID 1's PID
    (as the host sees it)."""
    new = _new_namespaces(ctx.spec.linux)
    _explain_unshare(new)
    own_pid_namespace = None
    if "pid" in new:
        own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        syscalls.unshare(syscalls.CLONE_NEWPID)
    try:
        pid = os.fork()
        if pid == 0:
            _forked_pid_1(ctx, [t for t in new if t != "pid"])
    finally:
        if own_pid_namespace is not None:
            syscalls.setns(own_pid_namespace, syscalls.CLONE_NEWPID)
            os.close(own_pid_namespace)
    return pid


def _forked_pid_1(ctx: InitContext, new: list[str]) -> None:
    """PID 1 forked by fork_pid_1: what stage 1 would have done first, then stage 2. Never returns."""
    try:
        syscalls.close_fds_except(ctx.kept_fds())
        ctx.state_folder = os.open(os.path.dirname(ctx.fifo_path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        _unshare(new)
    except BaseException as e:
        _report(ctx, e)
    stage2(ctx)


def _new_namespaces(linux) -> list[str]:
    """The namespaces to make with unshare (the cgroup namespace comes in stage 2, once the
    parent has put PID 1 in its cgroup; a user namespace before the others, on its own)."""
    return [ns.type for ns in linux.namespaces if ns.path is None and ns.type not in ("user", "cgroup")]


def _explain_unshare(new: list[str]) -> None:
    if new:
        explain.step("unshare", *[UNSHARE_NAMES[t] for t in new], *(["--fork"] if "pid" in new else []))


def _unshare(new: list[str]) -> None:
    flags = 0
    for kind in new:
        flags |= NAMESPACE_FLAGS[kind]
    if flags:
        syscalls.unshare(flags)


def stage1(ctx: InitContext) -> None:
    """Never returns."""
    try:
        # What pyctr's caller left open must not reach the container (runc's CVE-2024-21626).
        syscalls.close_fds_except(ctx.kept_fds())
        if _loses_host_files_in_stage1(ctx.spec):
            _import_what_later_steps_need(ctx.spec)
        # The fifo's folder, held from here on: past pivot_root (or a chroot without /proc) the
        # fifo is opened relative to it. The folder is 0711 and the fifo 0622, so a user
        # namespace's root may do so too, while the state root above stays 0700.
        ctx.state_folder = os.open(os.path.dirname(ctx.fifo_path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        linux = ctx.spec.linux
        _join_namespaces(linux)
        if linux.new_namespace("user"):
            _before_user_namespace(ctx)
            explain.step("unshare", "--user")
            try:
                syscalls.unshare(syscalls.CLONE_NEWUSER)
            except PermissionError:
                raise PyctrError("linux.namespaces: this host does not let pyctr create a user namespace "
                                 "(inside a chroot, or user.max_user_namespaces is 0)") from None
            ctx.send("userns")
            if ctx.receive() != "mapped":
                os._exit(1)
            from pyctr.runtime import userns

            userns.become_root()  # says so when container id 0 is not mapped
        new = _new_namespaces(linux)
        _explain_unshare(new)
        _unshare(new)
        pid = os.fork()
        if pid == 0:
            stage2(ctx)
        try:
            ctx.send(f"pid {pid}")
        except BrokenPipeError:
            os._exit(1)  # the parent gave up meanwhile, and says why; PID 1 ends when its channel closes
        os._exit(0)
    except BaseException as e:
        _report(ctx, e)


def _loses_host_files_in_stage1(spec) -> bool:
    """Past a user namespace (host root's 0700 folders close) or a mount namespace joined by
    path, the host's Python library may be out of reach: stage 1 then imports what the later
    steps need before it enters them. Else stage 2 does, while its parent joins it to its cgroup
    (on cgroup v1, an RCU grace period long)."""
    return spec.linux.namespace("user") is not None or any(
        ns.type == "mount" and ns.path for ns in spec.linux.namespaces)


def _before_user_namespace(ctx: InitContext) -> None:
    """What must happen while we are still host root: past unshare(CLONE_NEWUSER) our root is
    the container's, with no right to enter host root's 0700 folders (the interpreter's own
    library may be in one: import now what comes later, beyond what stage 1 imported)."""
    from pyctr.runtime import inroot, rootfs, spec, userns, userns_root  # noqa: F401


class _UsernsRoot:
    """The descriptors runtime/userns_root.py's helper sent, as paths the init can use."""

    def __init__(self, message: str, fds: list[int]):
        handles = jsonstore.loads(message)
        self.fds = fds
        self.root = self._path(handles["root"])
        self.staging = self._path(handles["staging"])
        self.sources = {int(i): self._path(n) for i, n in handles["sources"].items()}

    def _path(self, n: int) -> str:
        if n >= len(self.fds):
            raise PyctrError(f"the root in the user namespace: {len(self.fds)} descriptors came, not {n + 1}", 1)
        return f"/proc/self/fd/{self.fds[n]}"

    def use_sources(self, spec) -> None:
        for i, path in self.sources.items():
            spec.mounts[i].source = path

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _join_namespaces(linux) -> None:
    """setns into each namespace given by path: the user namespace first (it owns the others),
    the mount namespace last (after it, the other paths would resolve in the container)."""
    joined = [ns for ns in linux.namespaces if ns.path]
    joined.sort(key=lambda ns: {"user": 0, "mount": 2}.get(ns.type, 1))
    fds = []
    try:
        for ns in joined:
            try:
                fds.append((ns, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise PyctrError(f"linux.namespaces: cannot open the {ns.type} namespace {ns.path}: {e.strerror}", 1)
        for ns, fd in fds:
            explain.step("nsenter", f"{UNSHARE_NAMES[ns.type]}={ns.path}")
            try:
                syscalls.setns(fd, NAMESPACE_FLAGS[ns.type])
            except OSError as e:
                raise PyctrError(f"linux.namespaces: cannot join the {ns.type} namespace {ns.path}: "
                                 f"{os.strerror(e.errno)}", 1)
    finally:
        for _, fd in fds:
            os.close(fd)


def stage2(ctx: InitContext) -> None:
    """The container's init. Never returns."""
    fifo_write = None
    try:
        # Until exec we hold host paths (the state folder): no process of the container (an exec
        # into a created container) may read our memory or fds through /proc (runc CVE-2016-9962).
        import prctl

        prctl.set_dumpable(False)
        spec = ctx.spec
        if not _loses_host_files_in_stage1(spec):
            _import_what_later_steps_need(spec)
        state: dict = {}
        userns_root = None
        cgroups_as_the_host_sees_them: dict = {}

        def wait_for_go() -> dict:
            """The parent's "go": we are in our cgroup, and the createRuntime hooks have run.
            With a user namespace, the root the parent's helper mounted comes first. Returns our
            cgroups' paths as the host sees them (for a cgroup mount, which binds them), read
            before a cgroup namespace of our own makes them all "/"."""
            nonlocal userns_root
            if state:
                return cgroups_as_the_host_sees_them
            line = ctx.receive()
            if line.startswith("userns-root "):
                userns_root = _UsernsRoot(line.partition(" ")[2], ctx.fds)
                ctx.fds = []
                line = ctx.receive()
            if not line.startswith("go "):
                os._exit(1)
            state.update(jsonstore.loads(line[3:]))  # json's decoder would import re and enum: ~5 ms
            if any(m.type == "cgroup" for m in spec.mounts):
                from pyctr.runtime import rootfs

                cgroups_as_the_host_sees_them.update(rootfs.own_cgroups())
            if spec.linux.new_namespace("cgroup"):  # now that the cgroup we are in is ours: its "/"
                explain.step("unshare", "--cgroup")
                syscalls.unshare(syscalls.CLONE_NEWCGROUP)
            return cgroups_as_the_host_sees_them

        # The root needs neither the cgroup (slow to join on v1) nor the createRuntime hooks until
        # a cgroup mount or pivot_root (which the spec puts after those hooks and the createContainer
        # ones): build it while the parent does those, and without hooks, finish it too. Under
        # --explain, or with a user namespace (the parent's helper mounts the root), in order.
        if explain.enabled or spec.linux.new_namespace("user"):
            wait_for_go()
        hooks_before_pivot = bool(spec.hooks.create_runtime or spec.hooks.create_container)
        explain.side(explain.CONTAINER)
        state_folder = ctx.state_folder

        def create_container_hooks():
            wait_for_go()
            if spec.hooks.create_container:
                from pyctr.runtime import hooks

                hooks.run("createContainer", spec.hooks.create_container, state)

        if spec.linux.new_namespace("mount"):
            from pyctr.runtime import rootfs

            staging, mounted_root = ctx.staging, None
            if userns_root is not None:
                userns_root.use_sources(spec)
                staging, mounted_root = userns_root.staging, userns_root.root
            before_pivot = create_container_hooks if hooks_before_pivot else None
            rootfs.mount_root(spec, staging, before_pivot, ctx.no_pivot,
                              in_user_namespace=spec.linux.namespace("user") is not None,
                              before_cgroup_mount=wait_for_go, mounted_root=mounted_root)
            if userns_root is not None:
                userns_root.close()
        else:
            create_container_hooks()
            os.chroot(spec.root.path)
            os.chdir("/")
        init.forget_host_import_path()
        _set_sysctls(spec.linux.sysctl)
        if spec.hostname is not None:
            explain.step("hostname", spec.hostname)
            syscalls.sethostname(spec.hostname)
        if spec.domainname is not None:
            explain.step("domainname", spec.domainname)
            syscalls.setdomainname(spec.domainname)
        if spec.linux.new_namespace("network"):
            explain.step("ip", "link", "set", "lo", "up")
            init.set_link_up("lo")
        if spec.linux.new_namespace("mount"):
            from pyctr.runtime import rootfs

            rootfs.finish_root(spec)

        wait_for_go()  # before the capabilities go: the cgroup namespace needs CAP_SYS_ADMIN
        prepared = None
        if spec.process is not None:
            from pyctr.runtime import process, spec as specs

            prepared = process.prepare(spec.process, seccomp=ctx.seccomp, console_fd=ctx.console, stdio=ctx.stdio,
                                       preserve_fds=ctx.preserve_fds, new_keyring=ctx.new_keyring,
                                       docker_user=spec.annotations.get(specs.USER_ANNOTATION))
        ctx.send("created")
        os.close(ctx.to_parent)
        # Blocks until `start` opens the other end.
        fifo_write = os.open(os.path.basename(ctx.fifo_path), os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_folder)
        os.close(state_folder)
        os.write(fifo_write, b"0")
        if prepared is None:
            raise PyctrError("cannot start a container that has no process: process is not set in config.json", 1)
        if spec.hooks.start_container:
            from pyctr.runtime import hooks

            hooks.run("startContainer", spec.hooks.start_container, {**state, "status": "created"})
        from pyctr.runtime import process

        process.exec_prepared(prepared, report_fd=fifo_write)
    except BaseException as e:
        if fifo_write is not None:
            from pyctr.runtime import process

            process.report_failure_and_exit(fifo_write, e)
        _report(ctx, e)


def _report(ctx: InitContext, error: BaseException) -> None:
    from pyctr.runtime import process

    code, message = process.describe_failure(error)
    try:
        ctx.send(f"error {code} {message}".replace("\n", " "))
    except OSError:  # past "created", no one reads the channel: say it where runc would
        try:
            os.write(2, f"pyctr-oci init: {message}\n".encode())
        except OSError:
            pass
    process.report_failure_and_exit(None, error)


def _set_sysctls(sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        explain.step("sysctl", "-w", f"{key}={value}")
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)


def _import_what_later_steps_need(spec) -> None:
    import prctl  # noqa: F401  (process.py)
    import _socket  # noqa: F401  (set_link_up)
    import resource  # noqa: F401  (rlimits)
    import struct  # noqa: F401

    from pyctr.runtime import process, rootfs, security  # noqa: F401
    if spec.process is not None and spec.process.terminal:
        import socket  # noqa: F401  (terminal's console socket)

        from pyctr.runtime import terminal  # noqa: F401  (termios and tty: a terminal's alone)
    if any(m.type == "cgroup" for m in spec.mounts):
        from pyctr.runtime import cgroups  # noqa: F401  (rootfs._mount_cgroups)
    if spec.hooks.start_container or spec.hooks.create_container:
        import json  # noqa: F401
        import subprocess  # noqa: F401

        from pyctr.runtime import hooks  # noqa: F401
    if explain.enabled:
        import shlex  # noqa: F401  (explain.step's quoting, for the lines still to come)
