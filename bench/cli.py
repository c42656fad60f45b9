"""`python -m bench`: set up the contenders, run the scenarios, print and save the results."""

import argparse
import fcntl
import os
import sys
import time
import traceback
from pathlib import Path

from bench import alpine, report
from bench.measure import CommandFailed, Series
from bench.peers import Podman, PyctrOci, Runc, missing
from bench.pyctr_cli import Pyctr, default_binary
from bench.rows import Row
from bench.sandbox import Sandbox, unmount_all_under
from bench.scenarios import NOT_IN_QUICK, SCENARIOS, Context

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 3 runs each, density N=5,10, ps with 5 containers, a cluster of 3, "
                   "no conformance")
    p.add_argument("--runs", type=int, help="timed runs of each command (default 20; quick 3)")
    p.add_argument("--density", help="comma-separated N at which the density ramp measures; it goes up to "
                   "the largest, and the smallest is the batch the others' starts are compared with "
                   "(default 10,100,1000)")
    p.add_argument("--ps-containers", type=int, help="containers running during `pyctr ps` (default 50)")
    p.add_argument("--cluster", help="comma-separated numbers of nodes for the cluster rows (default 3,10,20; "
                   "quick 3)")
    p.add_argument("--only", help=f"comma-separated scenarios among {','.join(SCENARIOS)}")
    p.add_argument("--compare", type=Path, metavar="OLD.json", help="compare with an earlier run")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work directory (for debugging)")
    p.add_argument("--pyctr", help="the pyctr command (default: the one beside this Python)")
    alpine.add_mirror_arguments(p)
    args = p.parse_args(argv)
    alpine.check_mirror_arguments(p, args)
    args.runs = args.runs or (3 if args.quick else 20)
    args.density = [int(n) for n in (args.density or ("5,10" if args.quick else "10,100,1000")).split(",")]
    if min(args.density) < 1:
        p.error("--density: each N must be at least 1")
    args.cluster = [int(n) for n in (args.cluster or ("3" if args.quick else "3,10,20")).split(",")]
    if min(args.cluster) < 2:
        p.error("--cluster: a cluster has at least 2 nodes")
    args.ps_containers = args.ps_containers if args.ps_containers is not None else (5 if args.quick else 50)
    args.only = (args.only.split(",") if args.only
                 else [name for name in SCENARIOS if not (args.quick and name in NOT_IN_QUICK)])
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (containers need namespaces, mounts and cgroups)", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta = {"started": started, "argv": sys.argv[1:], "quick": args.quick, "runs": args.runs,
            "machine": report.machine(args.pyctr or default_binary())}
    print(f"bench: {report.describe_machine(meta['machine'])}", file=sys.stderr)
    rows, leaks = [], []
    _wait_for_other_runs()
    sb = Sandbox(keep=args.keep)
    try:
        with sb:
            ctx = _set_up(sb, args, leaks)
            for name in args.only:
                print(f"bench: {name} …", file=sys.stderr, flush=True)
                t0 = time.monotonic()
                rows += _run_scenario(name, ctx)
                print(f"bench: {name} done in {time.monotonic() - t0:.0f}s", file=sys.stderr)
            leaks += _leftover_containers(ctx)
    except BaseException:  # Ctrl-C, SIGTERM: no table, but what the clean-up could not undo
        for leak in leaks + sb.problems:
            print(f"LEAK: {leak}", file=sys.stderr)
        raise
    leaks += sb.problems
    meta.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), leaks=leaks)
    return _output(rows, meta, args)


def _wait_for_other_runs() -> None:
    """One bench at a time: two would share the CPUs (skewing both) and podman's fixed paths.
    The lock is an flock on this package's folder, so nothing is created for it; it is
    released when the process ends."""
    fd = os.open(Path(__file__).resolve().parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("bench: waiting for another bench run to finish …", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)


def _set_up(sb: Sandbox, args: argparse.Namespace, leaks: list[str]) -> Context:
    """The rootfs, pyctr's image, the runc bundle and podman's image. A contender whose set-up
    fails keeps its reason; its cells show it."""
    if "bridge" in args.only:
        sb.make_netns()  # made first so that it goes last, after the containers in it
    pyctr = Pyctr(sb.dir, args.pyctr)
    sb.on_cleanup("pyctr containers", lambda: leaks.extend(pyctr.cleanup()))
    with alpine.mirror(args.mirror_dir, args.mirror) as url:
        print(f"bench: Alpine from {url}", file=sys.stderr)
        tarball = alpine.fetch_minirootfs(url, sb.dir)
        pyctr.pull(url)
    rootfs = alpine.unpack(tarball, sb.dir / "rootfs")

    runc = Runc(sb.dir, rootfs, sb.tag)
    runc_error = missing("runc") or _try(runc.setup)
    sb.on_cleanup("runc containers", runc.cleanup)
    pyctr_oci = PyctrOci(sb.dir, runc.bundle, sb.tag)
    pyctr_oci_error = pyctr_oci.missing()
    sb.on_cleanup("pyctr-oci containers", pyctr_oci.cleanup)

    podman = Podman(sb.dir)
    podman_error = missing("podman") or _try(lambda: podman.setup(tarball))
    sb.on_cleanup("podman storage", lambda: unmount_all_under(podman.dir))
    sb.on_cleanup("podman containers and image", podman.cleanup)
    for who, err in (("pyctr", pyctr.error), ("runc", runc_error), ("pyctr-oci", pyctr_oci_error),
                     ("podman", podman_error)):
        if err:
            print(f"bench: {who}: {err}", file=sys.stderr)
    return Context(sb, pyctr, podman, podman_error, runc, runc_error, pyctr_oci, pyctr_oci_error,
                   rootfs, args.runs, args.density, args.ps_containers, args.cluster)


def _run_scenario(name: str, ctx: Context) -> list:
    """A scenario that breaks becomes one failed row, so the others still report."""
    try:
        return SCENARIOS[name](ctx)
    except Exception as e:
        traceback.print_exc()
        return [Row(f"{name}-crashed", name, "the scenario crashed",
                    Series("pyctr", error=f"failed: bench bug: {type(e).__name__}: {e}"))]


def _try(step) -> str | None:
    try:
        step()
    except CommandFailed as e:
        return f"failed: set-up: {e}"
    return None


def _leftover_containers(ctx: Context) -> list[str]:
    """Every scenario removes what it started: anything still listed now is a leak."""
    leaks = []
    ids = ctx.pyctr.container_ids()
    if ids:
        leaks.append(f"{len(ids)} pyctr containers were left after the scenarios")
    if not ctx.podman_error:
        out = ctx.podman.container_ids()
        if out:
            leaks.append(f"{len(out)} podman containers were left after the scenarios")
    for runtime in (ctx.runc, ctx.pyctr_oci):
        left = runtime.left()
        if left:
            leaks.append(f"{len(left)} {runtime.name} containers were left after the scenarios")
    return leaks


def _output(rows, meta: dict, args: argparse.Namespace) -> int:
    json_path, png_path = report.result_paths(args.out)
    report.write_json(json_path, rows, meta)
    print()
    print(report.table(rows))
    print()
    print(report.budgets_summary(rows))
    print()
    print("For the project README (one line per row: the result, its budget, met or not):")
    print()
    print(report.readme_table(rows))
    print()
    print(f"Machine: {report.describe_machine(meta['machine'])}")
    print(f"Every run: {json_path}")
    if not args.no_plot:
        why_not = report.plot(rows, png_path, report.describe_machine(meta["machine"]))
        print(why_not or f"Plot: {png_path}")
    if args.compare:
        print()
        print(report.compare(rows, args.compare))
    for leak in meta["leaks"]:
        print(f"LEAK: {leak}")
    return 0
