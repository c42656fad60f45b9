"""`-t`: a pty from the container's own devpts, and the user's terminal proxied to it; and
relay(), the copy loop between our stdio and a container process's (its pty, or exec's pipes).

As runc does with its console socket, the container's process opens the pty after it has
entered the container's mount namespace (so `tty` says /dev/pts/0 there), and passes the
master side back over a unix socket to whoever copies the bytes: the CLI, or the monitor of a
detached container.
"""

import fcntl
import os
import select
import signal
import termios
import tty


def _copy_window_size(source_fd: int, target_fd: int) -> None:
    try:
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def proxy(master: int, forward_stdin: bool) -> None:
    """Copy stdin to the pty and the pty to stdout until the container side closes."""
    stdin_is_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_is_tty else None
    if stdin_is_tty:
        _copy_window_size(0, master)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_window_size(0, master))
        tty.setraw(0)
    try:
        # When our stdin ends (a pipe or file, not a person), ^D at the start of a line tells
        # the container's shell, as a pty has no end-of-file of its own.
        relay({master: 1}, stdin_to=master if forward_stdin else None, end_of_input=b"\n\x04")
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)


def relay(outputs: dict[int, int], stdin_to: int | None = None, end_of_input: bytes | None = None,
          until_exit_of: int | None = None) -> None:
    """Copy each fd of `outputs` to its target (our stdout, stderr) until all of them end, and
    our stdin to `stdin_to`. At the end of our stdin, `stdin_to` gets `end_of_input`, or is
    closed (a pipe). With `until_exit_of` (a pidfd), stop once that process has exited, after
    copying what it left: a background process that keeps the pipes open does not hold us.
    Closes every fd it was given, except the pidfd."""
    outputs = dict(outputs)
    still_open = set(outputs) | ({stdin_to} if stdin_to is not None else set())
    reading_stdin = stdin_to is not None
    pending = b""  # read from our stdin, not yet taken by stdin_to
    if stdin_to is not None:
        os.set_blocking(stdin_to, False)  # a process that reads nothing must not stop its output
    try:
        while outputs:
            readers = list(outputs) + ([0] if reading_stdin and not pending else [])
            if until_exit_of is not None:
                readers.append(until_exit_of)
            readable, writable, _ = select.select(readers, [stdin_to] if pending else [], [])
            for fd in readable:
                if fd in outputs:
                    _copy_once(fd, outputs)
            if until_exit_of in readable:
                for fd in list(outputs):
                    os.set_blocking(fd, False)
                    while _copy_once(fd, outputs):
                        pass
                return
            if 0 in readable:
                data = os.read(0, 65536)
                pending, reading_stdin = data or (end_of_input or b""), bool(data)
            if writable:
                try:
                    pending = pending[os.write(stdin_to, pending):]
                except BlockingIOError:
                    pass
                except OSError:  # the process closed its stdin (EPIPE), or the pty is gone (EIO)
                    pending, reading_stdin = b"", False
            if not reading_stdin and not pending and end_of_input is None:
                still_open -= _close_all({stdin_to} & still_open)  # our stdin's end, passed on
            # An output whose reader left (`| head`) is closed now: its writer gets SIGPIPE.
            still_open -= _close_all(still_open - set(outputs) - {stdin_to})
    finally:
        _close_all(still_open)


def _copy_once(fd: int, outputs: dict[int, int]) -> bool:
    """One read from fd to its target; False if there was nothing to read. At fd's end, or when
    its target is gone, fd leaves `outputs`."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return False
    except OSError:  # EIO: every process holding the pty's other side has exited
        data = b""
    if data:
        try:
            _write_all(outputs[fd], data)
            return True
        except OSError:
            pass
    del outputs[fd]
    return False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:  # our stdout may be non-blocking: wait until it takes more
            select.select([], [fd], [])


def _close_all(fds: set[int]) -> set[int]:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    return fds


def open_console(console_fd: int, uid: int, gid: int) -> int:
    """In the container: open a pty, send its master over console_fd, return the slave."""
    import socket

    master, slave = os.openpty()
    os.fchown(slave, uid, gid)
    with socket.socket(fileno=console_fd) as console:
        socket.send_fds(console, [b"pty"], [master])
    os.close(master)
    return slave


def receive_console(console_fd: int) -> int | None:
    """The master side of the container's pty, or None if the container died before sending it."""
    import socket

    with socket.socket(fileno=console_fd) as console:
        _, fds, _, _ = socket.recv_fds(console, 16, 1)
    return fds[0] if fds else None


def console_pair() -> tuple[int, int]:
    """(receiver, sender) ends of the console socket, as plain fds (close-on-exec)."""
    import socket

    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return receiver.detach(), sender.detach()
