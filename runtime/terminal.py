"""`-t`: a pty from the container's own devpts, and the user's terminal proxied to it.

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
    sources = [master] + ([0] if forward_stdin else [])
    try:
        while True:
            readable, _, _ = select.select(sources, [], [])
            if master in readable:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every process holding the pty's other side has exited
                    data = b""
                if not data:
                    return
                os.write(1, data)
            if 0 in readable:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    # Our stdin ended (a pipe or file, not a person): pass on an end-of-file,
                    # as ^D at the start of a line, so the container's shell exits.
                    os.write(master, b"\n\x04")
                    sources.remove(0)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        os.close(master)


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
