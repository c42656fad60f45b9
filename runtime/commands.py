"""Handlers of the container commands that change containers (the read-only ones are in
listing.py). Each takes the parsed args and returns an exit code."""

import os
import signal
import sys

from pyctr.runtime import container as records
from pyctr.runtime import lifecycle, options
from pyctr.runtime.errors import PyctrError
from pyctr.runtime.runclient import SignalRelay

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


# --- run, create, start ----------------------------------------------------------------------
def cmd_create(args) -> int:
    c = lifecycle.create(args)
    print(c.id)
    return 0


def cmd_run(args) -> int:
    _warm_cgroup_lock()
    c = lifecycle.create(args)
    forwarder = None if args.detach else SignalForwarder()
    try:
        started = lifecycle.start(c, attach=not args.detach, interactive=args.interactive)
    except BaseException:
        if args.rm:  # --rm means no record is left, whichever way the start failed
            _remove_quietly(c)
        raise
    if args.detach:
        print(c.id)
        return 0
    return attach_and_wait(started, args.interactive, forwarder)


def _warm_cgroup_lock() -> None:
    """PID 1's cgroup move, made by the monitor (or a detached container's keeper) ~20 ms from
    now, waits ~10 ms for a lock unless it is warm: begin that wait here, beside the record and
    the bundle's making (runtime/cgroups/warm.py; a runner's is warm from its first step)."""
    from pyctr.runtime.cgroups import warm

    warm.keep()


def cmd_start(args) -> int:
    if args.attach and len(args.containers) > 1:
        raise PyctrError("you cannot start and attach multiple containers at once")
    _warm_cgroup_lock()
    for ref in args.containers:
        c = records.find(ref)
        if c.running:
            print(ref)
            continue
        forwarder = SignalForwarder() if args.attach else None
        try:
            started = lifecycle.start(c, attach=args.attach, interactive=args.interactive)
        except lifecycle.AlreadyRunning:  # another start won the race: nothing to do, as Docker
            print(ref)
            continue
        if args.attach:
            return attach_and_wait(started, args.interactive, forwarder)
        print(ref)
    return 0


class SignalForwarder(SignalRelay):
    """Sends the signals pyctr gets to the container's PID 1, as `docker run` does; those that
    come before PID 1 runs its program are held and sent once it does."""

    def __init__(self):
        super().__init__(FORWARDED_SIGNALS)


def attach_and_wait(started: lifecycle.StartedContainer, interactive: bool,
                    forwarder: SignalForwarder) -> int:
    """Forward signals to the container, proxy its pty if it has one, and return its exit code."""
    forwarder.forward_to(started.pid)
    if started.pty_master is not None:
        from pyctr.runtime import terminal

        terminal.proxy(started.pty_master, forward_stdin=interactive)
    return started.wait_for_exit()


def _remove_quietly(c) -> None:
    try:
        lifecycle.remove(records.load(c.id), force=True)
    except Exception:
        pass


# --- stop, kill, rm, wait, prune -------------------------------------------------------------
def _each(refs: list[str], action) -> int:
    """Docker's multi-container behaviour: act on each, report each failure, exit 1 if any failed."""
    failed = False
    for ref in refs:
        try:
            action(records.find(ref))
            print(ref)
        except PyctrError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = True
            if len(refs) == 1:
                return e.exit_code
    return 1 if failed else 0


def cmd_stop(args) -> int:
    return _each(args.containers, lambda c: lifecycle.stop(c, args.time))


def cmd_restart(args) -> int:
    def restart(c):
        lifecycle.stop(c, args.time)
        _warm_cgroup_lock()  # here, not first: a stop may take seconds, and the warming lasts 0.15 s
        lifecycle.start(records.load(c.id), attach=False)

    return _each(args.containers, restart)


def cmd_kill(args) -> int:
    sig = options.parse_signal(args.signal)
    return _each(args.containers, lambda c: lifecycle.send_signal(c, sig))


def cmd_rm(args) -> int:
    return _each(args.containers, lambda c: lifecycle.remove(c, args.force))


def cmd_wait(args) -> int:
    for ref in args.containers:
        c = records.find(ref)
        lifecycle.wait_until_exited(c)
        print(c.state.get("ExitCode", 0))
    return 0


def cmd_prune(args) -> int:
    print("Deleted Containers:")
    for c in records.list_all():
        if not c.running:
            lifecycle.remove(c, force=False)
            print(c.id)
    return 0


# --- exec, debug -------------------------------------------------------------------------------
def cmd_exec(args) -> int:
    _warm_cgroup_lock()  # the exec'd process joins the container's cgroup, as PID 1 did
    from pyctr.runtime import nsenter

    if not args.command:
        raise PyctrError("exec needs a command: pyctr exec CONTAINER COMMAND [ARG...]")
    c = records.find(args.container)
    if not c.running:
        raise PyctrError(f"container {c.short_id} is not running")
    return nsenter.exec_in(c, args)


def cmd_debug(args) -> int:
    from pyctr.runtime import nsenter

    c = records.find(args.container)
    if not c.running:
        raise PyctrError(f"container {c.short_id} is not running")
    return nsenter.debug(c, args.command or [os.environ.get("SHELL", "/bin/sh")], args.pid)
