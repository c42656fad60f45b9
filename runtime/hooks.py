"""OCI hooks: programs the spec names, run at six points with the container's state on stdin.

  createRuntime    at create, in the runtime's namespaces, once the container's exist
  createContainer  at create, in the container's namespaces, before pivot_root
  prestart         at start (deprecated by the spec for createRuntime), in the runtime's namespaces
  startContainer   at start, in the container, before its program runs
  poststart        at start, after the program runs, before `start` returns
  poststop         at delete, after the container is gone

A failure of the first four is an error that stops the operation; of the last two, a warning,
and the rest go on (runtime-spec, config.md "Hooks").
"""

import os

from pyctr.runtime import explain, log
from pyctr.runtime.errors import PyctrError

WARN_ONLY = ("poststart", "poststop")


def run(kind: str, hooks, state: dict) -> None:
    """Run `hooks` (spec.Hook) of one kind in order; `state` is the OCI state JSON they read."""
    import json

    document = json.dumps(state).encode()
    for hook in hooks:
        explain.step(*hook.args, f"<<< (the state: {state['status']})")
        try:
            _run_one(hook, document)
        except PyctrError as e:
            if kind in WARN_ONLY:
                log.warning(f"{kind} hook: {e}")
                continue
            raise PyctrError(f"{kind} hook: {e}", 1) from None


def _run_one(hook, document: bytes) -> None:
    import subprocess  # not at import: engine.create imports us on every container's start

    try:
        result = subprocess.run(hook.args, executable=hook.path, input=document,
                                env=dict(pair.partition("=")[::2] for pair in hook.env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=hook.timeout, close_fds=True, cwd="/")
    except subprocess.TimeoutExpired:
        raise PyctrError(f"{hook.path} timed out after {hook.timeout} s") from None
    except OSError as e:
        raise PyctrError(f"{hook.path}: {e.strerror}") from None
    if result.returncode != 0:
        said = (result.stderr or result.stdout).decode(errors="replace").strip()
        how = (f"killed by signal {-result.returncode}" if result.returncode < 0
               else f"exit status {result.returncode}")
        raise PyctrError(f"{hook.path}: {how}" + (f": {said}" if said else ""))
