"""The host monitor: one process per state folder that watches every detached container.

A detached container needs, for as long as it runs, a parent for its PID 1 (whose exit status
only a parent can collect), a reader for its output (which goes into Docker's json-file log),
and someone to record how it ended. A Python process per container did all three, at about 4 MiB
each. Now the work is split by what must survive what:

  - a keeper per container: the process that created it (a fork of this one, lifecycle.keep),
    which then execs `sleep infinity` (about 0.1 MiB). PID 1 is its child, so when PID 1 exits it
    stays a zombie, its status readable in /proc; the keeper also holds the container's output
    pipes (and pty, and the stdin pipe of -i) open, at fixed descriptors;
  - this process, for all containers: it takes copies of the keeper's descriptors
    (pidfd_getfd), copies the output into the logs, and when PID 1 exits reads its status, has
    the exit recorded and the keeper killed. PID 1 then comes to us (a subreaper) to be reaped.

So it is not a single point of failure. SIGKILLed, it loses nothing: the containers run on; their
output waits in the pipes (the keepers keep them open, so no writer gets EPIPE); an exit waits as
a zombie. The next one adopts every running container from its keeper and catches up. It is
started by the first detached start, or by any command that finds a container waiting for it
(container.refresh), in its own session, in /, as `python -I -m pyctr.runtime.hostmonitor STATE`.
It exits once it watches nothing, runs no foreground run, and no request came for IDLE_SECONDS
(or $PYCTR_HOST_MONITOR_IDLE).

It also serves foreground runs (runtime/runclient.py): a fork of it, warm, runs `pyctr run` for
a CLI that sent its command line and stdio, is the container's monitor, and sends the exit code
back. From the fork on, that runner is on its own: a SIGKILL of the host monitor does not reach it.
Once a run has ended, the next run's runner is forked ahead, as a Spare.

The CLI talks to it over a unix socket in the state folder (0700, like the folder): it sends the
descriptors the keeper needs (its end of the start handshake, the container's stdio), and gets
the keeper's PID back.
"""

import fcntl
import os
import signal
import sys
import time

from pyctr.runtime import errors

# json, selectors and socket are imported where used: a command that finds the host monitor
# gone (container.refresh) imports this module for ensure_running alone.

SOCKET_NAME = "monitor.sock"
LOCK_NAME = "monitor.lock"
IDLE_SECONDS = 2.0
IDLE_VARIABLE = "PYCTR_HOST_MONITOR_IDLE"  # another idle time, in seconds (a warm start is ~15 ms faster)
CONNECT_ATTEMPTS = 3
MAX_FDS = 11  # the CLI's stdio, the two handshake ends, up to three stdio fds, up to three monitor ends
RUN_REQUEST_SIZE = 1 << 20  # a foreground run's request carries the CLI's environment
READ_SIZE = 65536
# Where a keeper holds what it keeps: the output (or the pty), stderr, the write end of -i's stdin.
KEEPER_OUTPUT_FD, KEEPER_ERROR_FD, KEEPER_STDIN_FD = 3, 4, 5
KEEPER_MARK = "PYCTR_CONTAINER"  # in a keeper's environment: the container it keeps


# --- the client: the CLI of a detached start ------------------------------------------------------
def fork_keeper(c, stdio: list[int], monitor_ends: list[int], ready_w: int, go_r: int) -> int:
    """Have the host monitor fork the keeper of container `c` (it then creates the container, and
    answers on ready_w as a foreground monitor does); returns the keeper's PID. Starts the host
    monitor when none answers."""
    import json
    import socket

    from pyctr.runtime import explain, settings
    from pyctr.runtime.errors import PyctrError

    paths = settings.current()
    request = json.dumps({"container": c.id, "root": str(paths.root), "state": str(paths.state),
                          "explain": explain.enabled, "umask": _current_umask(), "tty": c.config["Config"]["Tty"],
                          "log": c.log_file, "stdio": len(stdio)}).encode()
    # The CLI's own stdio too: the keeper's --explain lines and errors during create go there.
    fds = [0, 1, 2, ready_w, go_r, *stdio, *monitor_ends]
    last_error = None
    for _ in range(CONNECT_ATTEMPTS):
        try:
            with _connect(paths.state) as conn:
                socket.send_fds(conn, [request], fds)
                answer = conn.recv(4096)
            if answer.startswith(b"pid "):
                return int(answer[4:])
            last_error = answer.decode(errors="replace") or "it exited"  # it was going idle: again
        except (FileNotFoundError, ConnectionError) as e:
            last_error = e.strerror
            start(paths.state)
    raise PyctrError(f"pyctr's host monitor does not answer ({last_error})")


def ensure_running(state_dir) -> None:
    """Start a host monitor unless one runs: a container waits for it (its exit, or its output,
    is not being collected)."""
    try:
        lock = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        lock = None
    if lock is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the one that runs holds it
        except BlockingIOError:
            return
        finally:
            os.close(lock)
    start(state_dir)


def _connect(state_dir):
    import socket

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        conn.connect(os.path.join(state_dir, SOCKET_NAME))
    except BaseException:
        conn.close()
        raise
    return conn


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def start(state_dir, wait: bool = True) -> None:
    """Start a host monitor, detached from us, and (unless told not to) wait until it listens
    (or has found another that does, and exited)."""
    from pyctr.runtime import explain, hosttools

    explain.comment("start pyctr's host monitor (it watches every detached container)")
    ready_r, ready_w = os.pipe()
    argv = hosttools.python("-m", "pyctr.runtime.hostmonitor", str(state_dir), str(ready_w))
    # Its own errors, if any, go beside its socket.
    hosttools.spawn_detached(argv, hosttools.pyctr_environment(), None, os.path.join(state_dir, "monitor.log"), ready_w)
    os.close(ready_w)
    while wait and os.read(ready_r, 64):  # EOF once it listens, or has exited
        pass
    os.close(ready_r)


# --- the keeper -------------------------------------------------------------------------------------
def become_keeper(container_id: str, pid: int, outputs: list[int], stdin_end: int | None, report_w: int) -> None:
    """Exec `sleep infinity` holding `outputs` and `stdin_end` at the keeper's fixed descriptors,
    after telling the host monitor PID 1's PID on report_w (which the exec closes: its EOF says
    that the keeper is ready to be adopted). Never returns."""
    from pyctr.runtime import hosttools, monitor, settings, syscalls
    from pyctr.runtime.cgroups import warm

    warm.stop()  # its thread's descriptor could be one of those replaced or closed below
    wanted = dict(zip((KEEPER_OUTPUT_FD, KEEPER_ERROR_FD), outputs))
    if stdin_end is not None:
        wanted[KEEPER_STDIN_FD] = stdin_end
    # Out of the way first (a source may sit on another's target), then into place.
    high = {target: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for target, fd in wanted.items()}
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for target, fd in high.items():
        os.dup2(fd, target)  # inheritable: it survives the exec
    os.write(report_w, f"{pid}\n".encode())
    syscalls.close_fds_except(list(wanted))
    monitor.ignore_terminal_signals()  # but not SIGCHLD: PID 1 must stay a zombie until read
    paths = settings.current()
    env = {"PYCTR_ROOT": str(paths.root), "PYCTR_STATE": str(paths.state), KEEPER_MARK: container_id}
    sleep = hosttools.tool("sleep")
    try:
        os.execve(sleep, [sleep, "infinity"], env)
    finally:
        os._exit(255)


# --- the server ---------------------------------------------------------------------------------------
class Watched:
    """A running detached container, as the host monitor follows it."""

    def __init__(self, container_id: str, keeper: int, pid: int, log_path: str, settings: dict):
        self.id = container_id
        self.keeper = keeper
        self.pid = pid
        self.log_path = log_path
        self.settings = settings  # root, state, explain: those of the CLI that started it
        self.streams: dict[int, object] = {}  # fd: its reaper.LineSplitter
        self.pidfd: int | None = None
        self.status: int | None = None  # the wait status, once PID 1 has exited


class HostMonitor:
    READ = 1  # selectors.EVENT_READ
    def __init__(self, state_dir: str):
        import selectors

        self.state_dir = state_dir
        self.path = os.path.join(state_dir, SOCKET_NAME)
        self.selector = selectors.DefaultSelector()  # epoll: a thousand containers are 3000 fds
        self.keepers: dict[int, tuple[dict, int]] = {}  # keepers still creating: pid -> (request, report fd)
        self.watched: dict[str, Watched] = {}
        self.helpers: set[int] = set()  # forks recording an exit, and runners
        self.runners: set[int] = set()  # the runners among them
        self.spare: Spare | None = None
        self.last_request = self.last_run = time.monotonic()
        try:
            self.idle_seconds = float(os.environ.get(IDLE_VARIABLE) or IDLE_SECONDS)
        except ValueError:
            self.idle_seconds = IDLE_SECONDS

    # -- start and stop
    def listen(self) -> bool:
        """Take the lock and the socket; False when another host monitor holds them."""
        self.lock_fd = os.open(os.path.join(self.state_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:  # one that serves: ours is not needed
                    _connect(self.state_dir).close()
                    return False
                except OSError:  # one going idle: it lets go in a moment
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.01)
        from pyctr.runtime import container as records

        # Who holds it, for container.refresh to check without taking the lock.
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, f"{os.getpid()} {records.process_start_time(os.getpid())}".encode(), 0)
        try:
            os.unlink(self.path)  # a killed one's
        except FileNotFoundError:
            pass
        import socket

        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self.listener.listen(128)
        self.identity = os.stat(self.path).st_ino
        self.selector.register(self.listener, self.READ, self.accept)
        return True

    def idle(self) -> bool:
        return (not self.keepers and not self.watched and not self.helpers
                and time.monotonic() - self.last_request > self.idle_seconds)

    def leave(self) -> bool:
        """Stop listening, unless a request came in meanwhile (it is served first)."""
        if self.selector.select(0):
            return False
        try:
            if os.stat(self.path).st_ino == self.identity:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.listener.close()  # a connection still queued is refused: its client starts another
        self.dismiss_spare()
        return True

    def dismiss_spare(self) -> None:
        """Let the spare go (it leaves at its pair's EOF), if there is one."""
        if self.spare is not None:
            self.spare.channel.close()
            self.spare = None

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wake-up fd hears it
        self.selector.register(wake_r, self.READ, lambda fd: _drain(fd))
        self.parents_fds = [self.lock_fd, self.listener.fileno(), wake_r, wake_w, self.selector.fileno()]
        while True:
            self.reap()
            if time.monotonic() - self.last_run > self.idle_seconds:
                self.dismiss_spare()  # no run for a while: detached starts alone have no use for it
            if self.idle() and self.leave():
                return
            for key, _ in self.selector.select(min(self.idle_seconds, IDLE_SECONDS) / 2):
                key.data(key.fd)

    # -- requests: fork a keeper
    def accept(self, _fd: int) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            self.last_request = time.monotonic()
            import json
            import socket

            from pyctr.runtime import runclient

            try:
                message, fds, flags, _ = socket.recv_fds(conn, RUN_REQUEST_SIZE, MAX_FDS)
            except OSError:
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):  # not ours: the client gets EOF
                for fd in fds:
                    os.close(fd)
                return
            if message.startswith(runclient.REQUEST_KIND + b"\0"):
                return self.fork_runner(conn, message, fds)
            try:
                request = json.loads(message)
            except ValueError:
                for fd in fds:
                    os.close(fd)
                return
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            try:
                keeper = os.fork()
            except OSError as e:
                conn.send(f"error {e.strerror}".encode())
                keeper = None
            if keeper == 0:
                _run_keeper(request, fds, report_w, [*self.ours_in_a_fork(), conn.fileno(), report_r])
            for fd in (*fds, report_w):
                os.close(fd)
            if keeper is None:
                os.close(report_r)
                return
            self.keepers[keeper] = (request, report_r)
            self.selector.register(report_r, self.READ, lambda fd: self.keeper_reported(fd, keeper))
            conn.send(f"pid {keeper}".encode())

    def fork_runner(self, conn, message: bytes, fds: list[int]) -> None:
        """A foreground `pyctr run` (runtime/runclient.py): a fork runs it as the CLI would; the
        spare, when one waits, else a fork made now."""
        self.last_run = time.monotonic()
        spare, self.spare = self.spare, None
        if spare is not None and spare.hand_over(conn, message, fds):
            runner = spare.pid
        else:
            try:
                runner = os.fork()
            except OSError as e:
                runner = None
                _log(f"fork of a runner: {e}")  # the CLI, finding the connection closed, runs it itself
            if runner == 0:
                try:
                    self._leave_to_the_fork()
                    from pyctr.runtime import runclient

                    runclient.serve(conn, message, fds)
                finally:
                    os._exit(255)
        for fd in fds:
            os.close(fd)
        if runner is not None:
            self.helpers.add(runner)  # we stay while it runs: the next run finds us warm
            self.runners.add(runner)

    def fork_spare(self) -> None:
        """The next run's runner, forked now that no run is going on (see Spare)."""
        import socket

        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError as e:
            _log(f"fork of a spare runner: {e}")
            ours.close()
            its.close()
            return
        if pid == 0:
            try:
                ours.close()
                self._leave_to_the_fork()
                Spare.wait_for_its_run(its)
            finally:
                os._exit(255)
        its.close()
        self.spare = Spare(pid, ours)

    def _leave_to_the_fork(self) -> None:
        """In a fork that becomes a runner: nothing of ours stays open in it."""
        for fd in self.ours_in_a_fork():
            os.close(fd)  # above all the lock: a runner must not hold a dead host monitor's
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def keeper_reported(self, fd: int, keeper: int) -> None:
        """The keeper wrote PID 1's PID, then exec'd (EOF), or it failed to create (EOF alone)."""
        report = b""
        while chunk := os.read(fd, 64):
            report += chunk
        self.selector.unregister(fd)
        os.close(fd)
        request, _ = self.keepers.pop(keeper, (None, None))
        if report and request is not None:
            self.adopt(Watched(request["container"], keeper, int(report), request["log"],
                               {k: request[k] for k in ("root", "state", "explain")}), request["tty"])

    def ours_in_a_fork(self) -> list[int]:
        """What a fork of ours closes first: the lock, the socket, the wake-up pipe and the epoll,
        the spare's end of its pair, and what watched_fds() says."""
        return [*self.parents_fds, *([self.spare.channel.fileno()] if self.spare is not None else []),
                *self.watched_fds()]

    def watched_fds(self) -> list[int]:
        """What a fork of ours must close: the descriptors of every container we watch or wait for."""
        return [*(fd for _, fd in self.keepers.values()),
                *(fd for w in self.watched.values() for fd in (*w.streams, *([w.pidfd] if w.pidfd is not None else [])))]

    # -- adoption: from a keeper this process forked, or one a killed host monitor left
    def adopt(self, w: Watched, tty: bool) -> None:
        from pyctr.runtime import reaper, syscalls

        try:
            keeper_fd = os.pidfd_open(w.keeper)
        except ProcessLookupError:
            return  # the keeper is gone: PID 1 came to us, or its exit was recorded without us
        try:
            for target, stream in ((KEEPER_OUTPUT_FD, "stdout"), (KEEPER_ERROR_FD, "stderr"))[:1 if tty else 2]:
                try:
                    fd = syscalls.pidfd_getfd(keeper_fd, target)
                except OSError:
                    continue  # a tty whose master never came
                os.set_blocking(fd, False)
                w.streams[fd] = reaper.LineSplitter(stream)
                self.selector.register(fd, self.READ, lambda fd, w=w: self.output(w, fd))
            w.pidfd = os.pidfd_open(w.pid)  # also for a zombie: it is readable at once
            self.selector.register(w.pidfd, self.READ, lambda fd, w=w: self.exited(w))
        except OSError:
            self.forget(w)
            raise
        finally:
            os.close(keeper_fd)
        self.watched[w.id] = w

    def adopt_orphans(self) -> None:
        """At start: every running detached container whose keeper lives, from a host monitor
        that was killed (or stopped) before."""
        from pyctr.runtime import container as records

        for container_id in records.all_ids():
            try:
                c = records.load(container_id)  # as recorded: refresh() would wait for us
            except (records.NotFoundError, ValueError):
                continue
            keeper = c.state.get("MonitorPid")
            if c.running and c.state.get("Keeper") and c.monitor_alive() and _keeps(keeper, c.id):
                w = Watched(c.id, keeper, c.pid, c.log_file,
                            {"root": os.environ["PYCTR_ROOT"], "state": self.state_dir, "explain": False})
                try:
                    self.adopt(w, c.config["Config"]["Tty"])
                except OSError:
                    continue

    # -- a container's output and exit
    def output(self, w: Watched, fd: int) -> None:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's other side is gone
            chunk = b""
        splitter = w.streams[fd]
        entries = splitter.feed(chunk) if chunk else splitter.end()
        if entries:
            with open(w.log_path, "ab", buffering=0) as log:
                log.write(b"".join(entries))
        if not chunk:
            self.selector.unregister(fd)
            os.close(fd)
            del w.streams[fd]
            if w.status is not None and not w.streams:
                self.record(w)

    def exited(self, w: Watched) -> None:
        """PID 1 has exited: a zombie of its keeper (or reaped by us, if its keeper was killed)."""
        self.selector.unregister(w.pidfd)
        os.close(w.pidfd)
        w.pidfd = None
        if w.status is None:
            w.status = _zombie_status(w.pid)
        if w.status is None:  # reaped by someone else: the keeper was killed, and we were not its subreaper
            w.status = 255 << 8
        if not w.streams:  # else: once the output is all in the log (every writer is gone with PID 1's namespace)
            self.record(w)

    def record(self, w: Watched) -> None:
        """Have the exit recorded and the container cleaned up, in a fork (it may take a while),
        which then lets the keeper go."""
        self.forget(w)
        helper = os.fork()
        if helper:
            self.helpers.add(helper)
            return
        code = 0
        try:
            for fd in self.ours_in_a_fork():
                os.close(fd)
            signal.set_wakeup_fd(-1)
            from pyctr.runtime import container as records
            from pyctr.runtime import explain, monitor, settings

            settings.configure(w.settings["root"], w.settings["state"])
            explain.enable(w.settings["explain"])
            c = records.load(w.id)
            explain.log_to(c.explain_log_path)  # beside the log: a monitor has no terminal
            monitor.finish(c, w.status)
        except BaseException as e:
            code = 1
            _log(f"recording the exit of {w.id[:12]}: {e}")
        finally:
            try:
                os.kill(w.keeper, signal.SIGKILL)  # PID 1's zombie then comes to us, to be reaped
            except ProcessLookupError:
                pass
            os._exit(code)

    def forget(self, w: Watched) -> None:
        for fd in list(w.streams) + ([w.pidfd] if w.pidfd is not None else []):
            self.selector.unregister(fd)
            os.close(fd)
        w.streams.clear()
        w.pidfd = None
        self.watched.pop(w.id, None)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.helpers.discard(pid)
            if pid in self.runners:
                self.runners.discard(pid)
                if not self.runners and self.spare is None:
                    self.fork_spare()  # runs come in bursts: the next one may come soon
            if self.spare is not None and pid == self.spare.pid:  # it died waiting
                self.dismiss_spare()
            self.keepers.pop(pid, None)  # one that died creating: its report pipe says EOF too
            for w in self.watched.values():
                if w.pid == pid and w.status is None:  # its keeper was killed: PID 1 came to us
                    w.status = status


class Spare:
    """A runner forked before its run's request. A fork pays for every page it writes that it
    still shares with the host monitor (copy-on-write): a runner forked at the request took ~2 ms
    of its run so. A spare is forked once a run has ended (runs come in bursts, and the CPU is
    then free), takes those faults at once (~5 ms: every private writable mapping, as a write to
    each page would), and waits on a socket pair for one request, which the host monitor passes
    on as it came (the CLI's connection with it). It leaves when the host monitor does: at the
    pair's EOF, whether the host monitor went idle or was killed."""

    def __init__(self, pid: int, channel):
        self.pid = pid
        self.channel = channel

    def hand_over(self, conn, message: bytes, fds: list[int]) -> bool:
        """Pass a run's request on; False when the spare is gone (a fork serves it instead)."""
        import socket

        try:
            socket.send_fds(self.channel, [message], [conn.fileno(), *fds])
            return True
        except OSError:
            return False
        finally:
            self.channel.close()

    @staticmethod
    def wait_for_its_run(channel) -> None:
        """In the fork: take the faults, then serve the one request that comes, if one does."""
        import socket

        _take_write_faults_now()
        message, fds, _, _ = socket.recv_fds(channel, RUN_REQUEST_SIZE, MAX_FDS)
        channel.close()
        if not fds:  # EOF: the host monitor left
            return
        from pyctr.runtime import runclient

        runclient.serve(socket.socket(fileno=fds[0]), message, fds[1:])


def _take_write_faults_now() -> None:
    """Copy now the pages this process shares copy-on-write with its parent, and map those it
    has not touched: every private writable mapping but the stack."""
    from pyctr.runtime import syscalls

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if fields[1] == "rw-p" and fields[-1] != "[stack]":
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    syscalls.populate_writable(start, end - start)
    except OSError:
        pass  # before Linux 5.14: the runner takes them as it goes


def _run_keeper(request: dict, fds: list[int], report_w: int, parents_fds: list[int]) -> None:
    """In the fork: become the container's keeper. Never returns."""
    try:
        for fd in parents_fds:
            os.close(fd)  # above all the lock: a keeper must not hold a dead host monitor's
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.umask(request["umask"])
        for target, fd in enumerate(fds[:3]):  # the CLI's stdio: --explain lines and errors go there
            os.dup2(fd, target)
            os.close(fd)
        (ready_w, go_r), rest = fds[3:5], fds[5:]
        from pyctr.runtime import lifecycle

        lifecycle.keep(request, ready_w, go_r, rest[:request["stdio"]], rest[request["stdio"]:], report_w)
    except BaseException as e:
        errors.last_words("keeper", e)
    finally:
        os._exit(255)


def _keeps(pid: int, container_id: str) -> bool:
    """Whether `pid` is the keeper of that container (and not a reused PID, nor one still creating)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{KEEPER_MARK}={container_id}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def _zombie_status(pid: int) -> int | None:
    """The wait status of a zombie, from field 52 of /proc/PID/stat (exit_code); None when it
    is not a zombie (any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[49]) if fields[0] == b"Z" else None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _log(message: str) -> None:
    try:
        os.write(2, f"pyctr host monitor: {message}\n".encode())
    except OSError:
        pass


def _warm_up() -> None:
    """What every keeper and runner does, done once here so that each fork starts warm: an
    import, a dlopen or a read of the mounts in a fork costs it again (~5x an import: each page
    it touches is copied on write)."""
    import prctl  # noqa: F401
    import resource  # noqa: F401
    import struct  # noqa: F401
    import zlib  # noqa: F401  (seccomp's cache)

    from pyctr.images import store  # noqa: F401
    from pyctr.runtime.cgroups import warm  # noqa: F401
    from pyctr.runtime import (cgroups, cli, commands, container_init, engine, hooks, inroot, lifecycle,  # noqa: F401
                               monitor, process, reaper, rootfs, runclient, seccomp, security, terminal)

    try:
        cgroups.detect()  # the cgroup layout, read once per process
        seccomp._libseccomp_version()  # its dlopen; the version names the cached programs
    except Exception:
        pass  # the fork that needs them does it again, and says what is wrong


def main(argv: list[str]) -> int:
    state_dir, ready_fd = argv[1], int(argv[2])
    os.chdir("/")
    from pyctr.runtime import settings

    settings.configure(state=state_dir)
    host = HostMonitor(state_dir)
    try:
        if not host.listen():
            return 0
        import prctl

        prctl.set_child_subreaper(True)
        host.adopt_orphans()
    finally:
        os.close(ready_fd)  # the client waits for this
    _warm_up()
    import gc

    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the shared pages in each fork
    host.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
