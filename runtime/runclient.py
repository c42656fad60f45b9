"""`pyctr run` in the foreground as a thin client of the host monitor (runtime/hostmonitor.py).

A foreground run done in the CLI's own process first imports everything a start needs (~15 ms
of a ~80 ms start), and then creates the container in a cold process. The host monitor, when one
serves the state folder, has all of that imported already: the CLI sends it the command line,
its environment, umask and working directory, and its stdio, and the host monitor forks a
runner that runs the command as the CLI would (cli.main, with the CLI's stdio as its own), as
the container's monitor itself rather than forking one, then sends back the exit code. Meanwhile
the CLI passes on every signal it gets to the runner, whose handlers are the CLI's own: during a
run, commands.SignalForwarder sends them on to the container's PID 1.

The runner is a process of its own from the fork on: a SIGKILL of the host monitor during a run
changes nothing for it, nor for its container. Until it begins to create the container, it dies
with its CLI, as the CLI's own process would have. From then on it is the container's monitor
as well (lifecycle._RunnerAsMonitor; a CLI forks a monitor of its own), and it outlives the
CLI, as that monitor would: a container whose CLI died before its start never runs its command,
and one that runs goes on, its exit recorded.

The CLI runs the command itself when no host monitor listens (and then starts one, without
waiting, for the next run, unless it is in a named network namespace), under
--explain (whose steps print in the CLI's order),
when the runner would not see what the CLI sees (other namespaces or root: --network host and
the network's set-up happen where the runner is), and with a terminal the CLI does not hold in
the foreground (a background job must not read it). PYCTR_RUN_IN_CLI=1 asks for that too.
"""

import os
import sys

# _signal and _socket rather than signal and socket: their enums (the enum module, ~3 ms) would
# be most of a thin client's imports.
import _signal
import _socket

from pyctr.runtime import errors

# The CLI's own signals, passed on to the runner: those commands.SignalForwarder sends on to the
# container, and the window size for -t's terminal.proxy.
PASSED_ON = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
             _signal.SIGUSR2, _signal.SIGWINCH)
REQUEST_KIND = b"run"
STDIO_AND_CWD = 4  # the descriptors a request carries: 0, 1, 2 and the working directory
NAMESPACES = ("mnt", "net", "pid", "uts", "ipc", "cgroup", "user")


in_runner = False  # set in a runner: it runs the command itself
_cli_connection = None  # a runner's connection to its CLI


def wanted(args) -> bool:
    """Whether this command may run in a runner of the host monitor."""
    if (in_runner or args.command_name != "run" or args.detach or args.explain
            or os.environ.get("PYCTR_RUN_IN_CLI") == "1"):
        return False
    if args.tty or args.interactive:
        try:
            return not os.isatty(0) or os.tcgetpgrp(0) == os.getpgrp()
        except OSError:
            return False
    return True


def run(argv: list[str], state_dir: str, in_cli) -> int:
    """Have the host monitor's runner run `pyctr argv`, or run it here (`in_cli()`, which returns
    the exit code) when no runner can; its exit code."""
    relay = SignalRelay()
    try:
        conn = _connect(state_dir)
    except OSError:
        relay.give_back()
        try:
            return in_cli()
        finally:
            # For the runs that follow; only now, as its start-up would slow this one down.
            _start_host_monitor(state_dir)
    try:
        try:
            _send_request(conn, argv)
            answer = conn.recv(64)
        except OSError:
            answer = b""
        if answer.startswith(b"runner "):
            relay.forward_to(int(answer[7:]))
            return _await_exit(conn)
    finally:
        conn.close()
    relay.give_back()  # "fallback", or the host monitor went away: nothing was done yet
    return in_cli()


def _connect(state_dir: str):
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        conn.connect(os.path.join(state_dir, "monitor.sock"))
    except BaseException:
        conn.close()
        raise
    return conn


def _send_request(conn, argv: list[str]) -> None:
    """One message: fields separated by NUL (which neither an argument nor the environment can
    hold): the kind, the umask, the number of arguments, the arguments, then the environment's
    KEY=VALUE pairs. With it, the CLI's stdio and working directory."""
    umask = os.umask(0o022)
    os.umask(umask)
    fields = [REQUEST_KIND, b"%d" % umask, b"%d" % len(argv), *map(os.fsencode, argv),
              *(key + b"=" + value for key, value in os.environb.items())]
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, cwd))  # C ints, as array("i")
        conn.sendmsg([b"\0".join(fields)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    finally:
        os.close(cwd)


def _await_exit(conn) -> int:
    """The runner's last word: "exit CODE", or "signal N" when a signal the CLI passed on ended
    the run before its forwarder was in place (the CLI would have died of it: so does this)."""
    last = b""
    while message := conn.recv(64):
        last = message
    if last.startswith(b"exit "):
        return int(last[5:])
    if last.startswith(b"signal "):
        sig = int(last[7:])
        _signal.signal(sig, _signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    print("Error: pyctr's runner of this container ended without its exit code", file=sys.stderr)
    return 125


class SignalRelay:
    """Passes the signals this process gets on to another process, once it is known: the CLI's
    to its runner, and (commands.SignalForwarder) a run's to the container's PID 1. Installed
    before that process is started, so none is lost: those that come meanwhile are held."""

    def __init__(self, signals=PASSED_ON):
        self.pid: int | None = None
        self.held: list[int] = []
        self.previous = {sig: _signal.signal(sig, self._on_signal) for sig in signals}

    def _on_signal(self, sig, _frame) -> None:
        if self.pid is None:
            self.held.append(sig)
        else:
            self._send(sig)

    def forward_to(self, pid: int) -> None:
        self.pid = pid
        for sig in self.held:
            self._send(sig)
        self.held.clear()

    def _send(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def give_back(self) -> None:
        """The CLI runs the command itself: its own handlers again, and what came meanwhile."""
        for sig, handler in self.previous.items():
            _signal.signal(sig, handler)
        for sig in self.held:
            _signal.raise_signal(sig)
        self.held.clear()


def _start_host_monitor(state_dir: str) -> None:
    """Start a host monitor for the runs that follow, without waiting for it; but not from a
    named network namespace (`ip netns add`: a sandbox, a node): a host monitor in there would
    make the later runs from the host's own run in their CLIs, and would serve detached starts
    from in there."""
    if _in_a_named_network_namespace():
        return
    from pyctr.runtime import hostmonitor

    hostmonitor.start(state_dir, wait=False)


def _in_a_named_network_namespace() -> bool:
    try:
        ours = os.stat("/proc/self/ns/net")
        with os.scandir("/run/netns") as names:
            for name in names:
                theirs = os.stat(name.path)
                if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
                    return True
    except OSError:
        pass
    return False


def _same_namespaces(pid, other) -> bool:
    """Whether two processes share their namespaces and root: else a path, a PID, the host's
    network would not mean the same to both."""
    try:
        pairs = [(f"/proc/{pid}/ns/{ns}", f"/proc/{other}/ns/{ns}") for ns in NAMESPACES]
        for theirs, ours in [*pairs, (f"/proc/{pid}/root", f"/proc/{other}/root")]:
            a, b = os.stat(theirs), os.stat(ours)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                return False
    except OSError:
        return False
    return True


# --- the runner: a fork of the host monitor --------------------------------------------------------
# Signals that end a CLI (their default action) while it creates the container, before its
# SignalForwarder is in place: the runner tells the CLI to die of the same.
FATAL_BEFORE_FORWARDING = (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)


def serve(conn, message: bytes, fds: list[int]) -> None:
    """In the host monitor's fork: become the CLI that sent `message` and run its command, then
    send its exit code. Never returns."""
    global in_runner, _cli_connection
    in_runner = True
    _cli_connection = conn
    try:
        from pyctr.runtime.cgroups import warm

        warm.keep()  # the wait of PID 1's cgroup move (engine.create) begins at our first step
        fields = message.split(b"\0")
        umask, count = int(fields[1]), int(fields[2])
        argv = [os.fsdecode(arg) for arg in fields[3:3 + count]]
        environment = dict(pair.split(b"=", 1) for pair in fields[3 + count:])
        peer = _peer_pid(conn)
        if len(fds) != STDIO_AND_CWD or not _same_namespaces(peer, "self") or not _take_attributes_of(peer):
            conn.send(b"fallback")
            return
        os.umask(umask)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        os.fchdir(fds[3])
        for fd in fds:
            os.close(fd)
        os.environb.clear()
        os.environb.update(environment)
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # KeyboardInterrupt: 130, as in a CLI
        for sig in FATAL_BEFORE_FORWARDING:
            _signal.signal(sig, lambda sig, _frame: _die_of(conn, sig))
        # The runner's forks (the engine's) must not keep the CLI waiting.
        os.register_at_fork(after_in_child=conn.close)
        _die_with_the_cli(conn)
        conn.send(b"runner %d" % os.getpid())

        from pyctr.runtime import cli

        code = cli.main(argv)
        _flush()
        try:
            conn.send(b"exit %d" % code)
        except OSError:
            pass  # the CLI is gone: the exit is recorded all the same
    except BaseException as e:
        errors.last_words("runner", e)
    finally:
        # Closed before the exit, which first unmaps this large process (~1 ms): the CLI waits
        # for its connection to close, and a reader of its output (`$(pyctr run …)`) for EOF.
        for fd in (0, 1, 2, conn.fileno()):
            try:
                os.close(fd)
            except OSError:
                pass
        os._exit(0)


def _die_with_the_cli(conn) -> None:
    """The runner is the CLI's body: when the CLI dies (its end of the connection closes), the
    kernel SIGKILLs the runner, at whatever step, as it would have killed the CLI doing that step
    itself; until outlive_the_cli(), once the container is being made."""
    import fcntl
    import select

    fd = conn.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETSIG, _signal.SIGKILL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    if select.select([fd], [], [], 0)[0]:  # it died before that was in place
        os._exit(0)


def outlive_the_cli() -> None:
    """From the container's creation on, the runner is its monitor (lifecycle._RunnerAsMonitor),
    which must not die with the CLI: the kernel no longer kills it when the CLI dies."""
    import fcntl

    fd = _cli_connection.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_ASYNC)


def cli_is_gone() -> bool:
    """Whether the CLI died: it sends nothing after its request, so its end reads only as closed."""
    import select

    return bool(select.select([_cli_connection], [], [], 0)[0])


def _die_of(conn, sig: int) -> None:
    _flush()
    try:
        conn.send(b"signal %d" % sig)
    finally:
        os._exit(128 + sig)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _peer_pid(conn) -> int:
    import struct

    creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


def _take_attributes_of(peer: int) -> bool:
    """What a container inherits from the process that creates it and the spec does not set,
    taken from the CLI: its resource limits, nice value, CPU affinity and oom_score_adj."""
    import resource

    try:
        for name in dir(resource):
            if name.startswith("RLIMIT_"):
                limit = getattr(resource, name)
                resource.setrlimit(limit, resource.prlimit(peer, limit))
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, peer))
        os.sched_setaffinity(0, os.sched_getaffinity(peer))
        with open(f"/proc/{peer}/oom_score_adj", "rb") as theirs, open("/proc/self/oom_score_adj", "wb") as ours:
            ours.write(theirs.read())
    except (OSError, ValueError):
        return False
    return True
