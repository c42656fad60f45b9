"""`-t` in the foreground: the user's terminal in raw mode, proxied to the container's pty."""

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
