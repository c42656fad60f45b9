"""`python -m bench.profile`: where the time of pyctr's commands goes, for the rows that miss
their budget. For each command: its wall time, what `python -X importtime` says it imports
(total and the heaviest top-level imports), and a cProfile of the calling process by
cumulative time. Then podman's calls to its runtime, pyctr-oci's and runc's side by side: when
each call begins and how long it takes, within one `podman run --rm`. Runs in a sandbox like
the bench (private PYCTR_ROOT/STATE, its own Alpine, podman's storage of its own).
"""

import argparse
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import alpine
from bench.measure import CommandFailed, run
from bench.peers import PODMAN_IMAGE, Podman, missing, pyctr_oci_binary
from bench.pyctr_cli import Pyctr
from bench.sandbox import Sandbox, unmount_all_under

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")

# The in-process profile: pyctr's own main() under cProfile, printed to stderr.
PROFILE_SNIPPET = """
import cProfile, io, os, pstats, sys
from pyctr.runtime import cli
profiler = cProfile.Profile()
profiler.enable()
try:
    code = cli.main(sys.argv[1:])
except SystemExit as e:  # --version exits from inside argparse
    code = e.code or 0
profiler.disable()
out = io.StringIO()
pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats({top} * 3)
sys.stderr.write("@@PROFILE@@" + out.getvalue())
sys.stderr.flush()
os._exit(code)
"""


def wall_ms(argv: list[str], env: dict, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(argv, env)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def import_summary(python: str, args: list[str], env: dict, top: int) -> str:
    """Total self time of every import, and the top-level imports that cost the most."""
    code = "import sys; from pyctr.runtime import cli; cli.main(sys.argv[1:])"
    p = subprocess.run([python, "-X", "importtime", "-c", code, *args], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    entries = [(int(m[1]), int(m[2]), len(m[3]), m[4]) for m in map(IMPORT_LINE.match, p.stderr.splitlines()) if m]
    total = sum(e[0] for e in entries) / 1000
    # No indent: imported by the program itself (or by site, before it).
    top_level = sorted((e for e in entries if e[2] == 0), key=lambda e: -e[1])[:top]
    lines = [f"  imports: {len(entries)} modules, {total:.1f} ms of import time in all "
             f"(importtime's own overhead included)"]
    lines += [f"    {cum / 1000:6.1f} ms  {name}" for _, cum, _, name in top_level]
    return "\n".join(lines)


def cprofile_summary(python: str, args: list[str], env: dict, top: int) -> str:
    p = subprocess.run([python, "-c", PROFILE_SNIPPET.format(top=top), *args], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    _, _, report = p.stderr.partition("@@PROFILE@@")
    # Import machinery frames repeat what the import summary says: leave them out.
    noise = ("<frozen importlib", "builtins.exec", "builtins.__import__", "importlib/__init__",
             "Ordered by", "List reduced")
    keep = [line for line in report.splitlines() if line.strip() and not any(n in line for n in noise)]
    site = str(Path(python).parent.parent)
    return "\n".join("    " + line.replace(site, "<venv>") for line in keep[1:])


def profile(pyctr: Pyctr, label: str, args: list[str], runs: int, top: int) -> None:
    python = str(Path(pyctr.binary).parent / "python")
    print(f"== pyctr {' '.join(args)}  ({label})")
    try:
        print(f"  wall: {wall_ms(pyctr.cmd(*args), pyctr.env, runs):.1f} ms (median of {runs})")
    except CommandFailed as e:
        print(f"  failed: {e}")
        return
    print(import_summary(python, args, pyctr.env, top))
    print("  cProfile of the calling process, by cumulative time:")
    print(cprofile_summary(python, args, pyctr.env, top))
    print()


# Between podman (conmon, for create) and the runtime: logs when each call began and ended.
# bash's EPOCHREALTIME reads the clock without a fork; the shim costs both runtimes the same.
CALL_LOGGING_SHIM = """#!/bin/bash
began=$EPOCHREALTIME
{runtime} "$@"
code=$?
verb=
for word in "$@"; do case $word in create|start|state|kill|delete) verb=$word; break;; esac; done
echo "$began $EPOCHREALTIME $verb" >> {log}
exit $code
"""


def podman_calls(podman: Podman, workdir: Path, tarball: Path, runs: int) -> None:
    """`podman run --rm --network none IMAGE /bin/true` with each runtime behind a logging shim,
    interleaved: the run's median wall time, and for each call podman makes, the median time
    from the run's start to the call's start, and the call's own time."""
    podman.setup(tarball)
    runtimes = {"pyctr-oci": pyctr_oci_binary(), "runc": shutil.which("runc")}
    shims, logs = {}, {}
    for name, binary in runtimes.items():
        logs[name] = workdir / f"calls-{name}.log"
        shims[name] = workdir / f"shim-{name}"
        shims[name].write_text(CALL_LOGGING_SHIM.format(runtime=shlex.quote(binary),
                                                        log=shlex.quote(str(logs[name]))))
        shims[name].chmod(0o700)
    runs_of = {name: [] for name in runtimes}  # per run: (wall ms, {verb: (start, duration)})
    for r in range(runs + 1):  # the first round warms up
        for name in (runtimes if r % 2 else reversed(list(runtimes))):
            logs[name].write_text("")
            began = time.time()
            run(["podman", "--runtime", str(shims[name]), "run", "--rm", "--network", "none", PODMAN_IMAGE,
                 "/bin/true"], podman.env)
            wall = (time.time() - began) * 1000
            calls = {}
            for line in logs[name].read_text().splitlines():
                start, end, verb = line.split()
                calls[verb] = ((float(start) - began) * 1000, (float(end) - float(start)) * 1000)
            if r:
                runs_of[name].append((wall, calls))
    print(f"== podman run --rm: its calls to the runtime (medians of {runs}, through a logging shim)")
    for name, samples in runs_of.items():
        line = f"  {name:10s} run {statistics.median(w for w, _ in samples):6.1f} ms"
        for verb in ("create", "start", "delete"):
            found = [calls[verb] for _, calls in samples if verb in calls]
            if found:
                line += (f" | {verb} at {statistics.median(s for s, _ in found):5.1f}:"
                         f" {statistics.median(d for _, d in found):5.1f} ms")
        print(line)
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--top", type=int, default=12)
    alpine.add_mirror_arguments(p)
    args = p.parse_args(argv)
    alpine.check_mirror_arguments(p, args)
    with Sandbox() as sb:
        pyctr = Pyctr(sb.dir)
        sb.on_cleanup("pyctr containers", pyctr.cleanup)
        with alpine.mirror(args.mirror_dir, args.mirror) as url:
            pyctr.pull(url)
            tarball = alpine.fetch_minirootfs(url, sb.dir)
        if pyctr.error:
            print(pyctr.error)
            return 1
        python = str(Path(pyctr.binary).parent / "python")
        print("== the interpreter alone")
        for argv in ([python, "-S", "-c", "pass"], [python, "-c", "pass"]):
            print(f"  {' '.join(argv[1:]):16s} {wall_ms(argv, pyctr.env, args.runs):6.1f} ms")
        print()
        cid = pyctr.run_detached("sleep", "1000000")
        for label, command in (
                ("CLI overhead", ["--version"]),
                ("CLI overhead, 1 container", ["ps"]),
                ("start, no network", ["run", "--rm", "--network", "none", "alpine", "/bin/true"]),
                ("exec", ["exec", cid, "/bin/true"])):
            profile(pyctr, label, command, args.runs, args.top)
        podman_missing = missing("podman") or missing("runc")
        if podman_missing:
            print(f"podman's calls: {podman_missing}")
            return 0
        podman = Podman(sb.dir)
        sb.on_cleanup("podman storage", lambda: unmount_all_under(podman.dir))
        sb.on_cleanup("podman containers and image", podman.cleanup)
        podman_calls(podman, sb.dir, tarball, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
