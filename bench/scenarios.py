"""The nine scenarios (the cluster and network policy ones are in bench/cluster.py and bench/policy.py).
Each returns rows of the results table; none raises for a contender that
cannot run (its cells say "failed: …" instead), so one broken piece never hides the others."""

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import conformance as oci_conformance
from bench.cluster import cluster
from bench import procs
from bench.measure import (CommandFailed, Contender, Series, interleave, pair_ratio, removal_timeout,
                           run, single_ratio, timed)
from bench.peers import PODMAN_IMAGE, Podman, PyctrOci, Runc, floor_argv, python_floor_argv
from bench.policy import network_policy
from bench.pyctr_cli import Pyctr
from bench.rows import Row
from bench.sandbox import Sandbox

TRUE = ["/bin/true"]
SLEEP = ["sleep", "1000000"]
ROUTED_NETWORK = "benchrouted"
ROUTED_SUBNET = "10.244.1.0/24"  # only ever exists inside the sandbox node namespace


@dataclass
class Context:
    sandbox: Sandbox
    pyctr: Pyctr
    podman: Podman
    podman_error: str | None
    runc: Runc
    runc_error: str | None
    pyctr_oci: PyctrOci
    pyctr_oci_error: str | None
    rootfs: Path
    runs: int
    density: list[int]
    ps_containers: int
    cluster_sizes: list[int] = field(default_factory=lambda: [3, 10, 20])


# -- 1. start, no network ---------------------------------------------------------------------

def start_no_network(ctx: Context) -> list[Row]:
    scenario = "start, no network"
    s = interleave([
        Contender("pyctr", lambda i: ctx.pyctr.cmd("run", "--rm", "--network", "none", "alpine", *TRUE),
                  ctx.pyctr.env, ctx.pyctr.error),
        Contender("runc", ctx.runc.run_argv, None, ctx.runc_error),
        Contender("podman", lambda i: ctx.podman.cmd("run", "--rm", "--network", "none",
                                                     PODMAN_IMAGE, *TRUE),
                  ctx.podman.env, ctx.podman_error),
        Contender("floor", lambda i: floor_argv(ctx.rootfs, TRUE)),
        Contender("python floor", lambda i: python_floor_argv(_python(ctx), ctx.rootfs, TRUE)),
    ], ctx.runs)
    py_floor = s["python floor"]
    return [
        Row("start-none-runc", scenario, "run --rm /bin/true vs runc", s["pyctr"], s["runc"],
            pair_ratio(s["pyctr"], s["runc"]), s["floor"], budget=1.3),
        Row("start-none-podman", scenario, "run --rm /bin/true vs podman", s["pyctr"], s["podman"],
            pair_ratio(s["pyctr"], s["podman"]), s["floor"]),
        # What Python itself costs: pyctr against the least a Python start can do, and that
        # least against runc (no budget: it says how far any Python runtime is from runc).
        Row("start-none-python-floor", scenario, "run --rm /bin/true vs the Python floor", s["pyctr"],
            py_floor, pair_ratio(s["pyctr"], py_floor), s["floor"], budget=1.2),
        Row("start-none-python-floor-runc", scenario, "the Python floor vs runc", py_floor, s["runc"],
            pair_ratio(py_floor, s["runc"]), s["floor"]),
    ]


def _python(ctx: Context) -> Path:
    """The Python that runs pyctr (the venv's)."""
    return Path(ctx.pyctr.binary).parent / "python"


# -- 2. pyctr-oci (runc's command line): on runc's bundle, and as podman's runtime ---------

def oci(ctx: Context) -> list[Row]:
    scenario = "OCI runtime"
    oci_error = ctx.pyctr_oci_error or ctx.runc_error  # it runs runc's bundle
    run_rm = ("run", "--rm", "--network", "none", PODMAN_IMAGE, *TRUE)

    s = interleave([
        Contender("pyctr-oci run", ctx.pyctr_oci.run_argv, None, oci_error),
        Contender("runc run", ctx.runc.run_argv, None, ctx.runc_error),
        Contender("pyctr-oci in podman", lambda i: ctx.pyctr_oci.podman_argv(*run_rm),
                  ctx.podman.env, ctx.podman_error or ctx.pyctr_oci_error),
        Contender("runc in podman", lambda i: ctx.podman.cmd(*run_rm), ctx.podman.env, ctx.podman_error),
    ], ctx.runs)
    return [
        Row("oci-run-runc", scenario, "pyctr-oci run vs runc run (one bundle)", s["pyctr-oci run"],
            s["runc run"], pair_ratio(s["pyctr-oci run"], s["runc run"]), budget=1.0),
        Row("oci-podman-runc", scenario, "podman run --rm: --runtime pyctr-oci vs runc",
            s["pyctr-oci in podman"], s["runc in podman"],
            pair_ratio(s["pyctr-oci in podman"], s["runc in podman"]), budget=1.1),
    ]


# -- 3. start with a network, inside the sandbox node namespace ------------------------------

def start_bridge(ctx: Context) -> list[Row]:
    scenario = "start, network (in netns)"
    sb = ctx.sandbox
    if not sb.netns:
        sb.make_netns()
    routed_error = ctx.pyctr.error or _create_routed_network(ctx)

    def pyctr_on(network: str):
        return lambda i: sb.in_netns(ctx.pyctr.cmd("run", "--rm", "--network", network, "alpine", *TRUE))

    s = interleave([
        Contender("pyctr bridge", pyctr_on("bridge"), ctx.pyctr.env, ctx.pyctr.error),
        Contender("podman bridge", lambda i: sb.in_netns(ctx.podman.cmd("run", "--rm", PODMAN_IMAGE, *TRUE)),
                  ctx.podman.env, ctx.podman_error),
        Contender("pyctr routed", pyctr_on(ROUTED_NETWORK), ctx.pyctr.env, routed_error),
    ], ctx.runs)
    return [
        Row("start-bridge-podman", scenario, "bridge: pyctr vs podman (netavark)", s["pyctr bridge"],
            s["podman bridge"], pair_ratio(s["pyctr bridge"], s["podman bridge"]), budget=0.3),
        Row("start-routed-bridge", scenario, "pyctr routed vs pyctr bridge", s["pyctr routed"],
            s["pyctr bridge"], pair_ratio(s["pyctr routed"], s["pyctr bridge"])),
    ]


def _create_routed_network(ctx: Context) -> str | None:
    argv = ctx.sandbox.in_netns(ctx.pyctr.cmd("network", "create", "--driver", "routed",
                                              "--subnet", ROUTED_SUBNET, ROUTED_NETWORK))
    try:
        run(argv, ctx.pyctr.env)
    except CommandFailed as e:
        return f"failed: network create: {e}"
    return None


# -- 4. exec into a running container ---------------------------------------------------------

def exec_(ctx: Context) -> list[Row]:
    scenario = "exec"
    pyctr_id = pyctr_error = podman_id = podman_error = None
    target_pid = None
    try:
        pyctr_id = ctx.pyctr.run_detached(*SLEEP)
        target_pid = ctx.pyctr.pid_of(pyctr_id)
    except CommandFailed as e:
        pyctr_error = f"failed: {e}"
    pyctr_error = ctx.pyctr.error or pyctr_error
    if not ctx.podman_error:
        try:
            podman_id = run(ctx.podman.cmd("run", "-d", "--network", "none", PODMAN_IMAGE, *SLEEP),
                            ctx.podman.env).stdout.strip()
            target_pid = target_pid or ctx.podman.pid_of(podman_id)
        except CommandFailed as e:
            podman_error = f"failed: {e}"
    podman_error = ctx.podman_error or podman_error
    try:
        s = interleave([
            Contender("pyctr exec", lambda i: ctx.pyctr.cmd("exec", pyctr_id, *TRUE), ctx.pyctr.env,
                      pyctr_error),
            Contender("podman exec", lambda i: ctx.podman.cmd("exec", podman_id, *TRUE), ctx.podman.env,
                      podman_error),
            Contender("nsenter", lambda i: ["nsenter", "-t", str(target_pid), "-a", *TRUE], None,
                      None if target_pid else "failed: no running container to enter"),
        ], ctx.runs)
    finally:
        _quietly(lambda: ctx.pyctr.remove([pyctr_id] if pyctr_id else []))
        if podman_id:
            _quietly(lambda: run(ctx.podman.cmd("rm", "-f", "-t", "0", podman_id), ctx.podman.env))
    return [Row("exec-podman", scenario, "exec /bin/true vs podman exec", s["pyctr exec"],
                s["podman exec"], pair_ratio(s["pyctr exec"], s["podman exec"]), s["nsenter"],
                budget=1.0)]


# -- 5. density: up to N detached containers --------------------------------------------------

MEMORY_BUDGET_MIB = 1.0  # PSS per detached container, at the largest N
GROWTH_BUDGET = 1.1  # a start at the largest N against one at the smallest
SETTLE = 0.5  # seconds between the N-th start and the memory measurement


@dataclass
class _Tool:
    """One side of the density scenario: how it starts, lists and removes containers, and
    which host processes of its own hold memory for them."""

    name: str
    holder: str  # what the memory figure counts: everything pyctr keeps, podman's conmons
    error: str | None
    env: dict
    start: list[str]
    ps: list[str]
    remove: Callable[[list[str]], list[str]]
    own_pids: Callable[[], list[int]]


@dataclass
class _Ramp:
    """What one tool's ramp from 0 to N running containers measured."""

    starts: Series  # every start, in order: start number i had i-1 running
    memory: dict[int, dict]  # at each N of the list: procs.memory of the tool's processes
    ps: dict[int, Series]  # at each N of the list: the time of its `ps`
    removal: Series | None = None  # one `rm -f` of them all


def density(ctx: Context) -> list[Row]:
    """Each tool alone in turn, pyctr then podman, starts `sleep` containers one by one up to
    the largest N; at each N of the list it measures the memory its processes hold and the
    time of its `ps`; then one `rm -f` removes them all. One tool at a time, so that a start
    at N pays for the tool's own N containers only (podman's overlay mounts in the host's
    mount table, for one, would slow every mount namespace another tool makes)."""
    marks = sorted(set(ctx.density))
    ramps = {tool.name: _ramp(tool, marks, ctx.runs) for tool in (_pyctr_side(ctx), _podman_side(ctx))}
    return _density_rows(ramps, marks)


def _pyctr_side(ctx: Context) -> _Tool:
    p = ctx.pyctr
    return _Tool("pyctr", "pyctr", p.error, p.env, p.cmd("run", "-d", "--network", "none", "alpine", *SLEEP),
                 p.cmd("ps"), lambda ids: p.cmd("rm", "-f", *ids), p.own_pids)


def _podman_side(ctx: Context) -> _Tool:
    p = ctx.podman
    return _Tool("podman", "conmon", ctx.podman_error, p.env,
                 p.cmd("run", "-d", "--network", "none", PODMAN_IMAGE, *SLEEP), p.cmd("ps"),
                 lambda ids: p.cmd("rm", "-f", "-t", "0", *ids), p.conmon_pids)


def _ramp(tool: _Tool, marks: list[int], runs: int) -> _Ramp:
    top = marks[-1]
    ramp = _Ramp(Series(tool.name, error=tool.error), {}, {})
    if tool.error:
        ramp.removal = Series(tool.name, error=tool.error)
        return ramp
    ids: list[str] = []
    t0 = time.monotonic()
    every = max(10, top // 10)  # a progress line every 10%
    try:
        for i in range(1, top + 1):
            try:
                ms, p = timed(tool.start, tool.env)
            except CommandFailed as e:
                ramp.starts.error = f"failed at #{i}: {e}"
                break
            if not p.stdout.split():
                ramp.starts.error = f"failed at #{i}: no container ID printed"
                break
            ids.append(p.stdout.split()[-1])
            ramp.starts.samples.append(ms)
            if i % every == 0:
                recent = statistics.median(ramp.starts.samples[-every:])
                _progress(f"{tool.name} {i}/{top} running, last {every} starts {recent:.0f} ms median, "
                          f"{time.monotonic() - t0:.0f}s")
            if i in marks:
                time.sleep(SETTLE)
                ramp.memory[i] = mem = procs.memory(tool.own_pids(), tool.holder)
                name = f"{tool.name} ps"
                ramp.ps[i] = ps = interleave([Contender(name, lambda _: tool.ps, tool.env)], runs)[name]
                names = ", ".join(f"{count} {name}" for name, count in mem["names"].items())
                _progress(f"{tool.name} at N={i}: {mem['processes']} processes ({names or 'none'}), "
                          f"{sum(mem['pss_kib']) / 1024 / i:.2f} MiB PSS per container; "
                          + (f"ps {ps.median:.0f} ms" if ps.ok else f"ps {ps.error}"))
    finally:
        ramp.removal = _remove_all(tool, ids)
        _progress(f"{tool.name}: {len(ids)} removed, {time.monotonic() - t0:.0f}s in all")
    return ramp


def _progress(text: str) -> None:
    print(f"bench: density: {text}", file=sys.stderr, flush=True)


def _remove_all(tool: _Tool, ids: list[str]) -> Series:
    s = Series(tool.name)
    if not ids:
        s.error = "failed: nothing was started"
        return s
    try:
        s.samples.append(timed(tool.remove(ids), tool.env, removal_timeout(len(ids)))[0])
    except CommandFailed as e:
        s.error = f"failed: {e}"
    return s


def _density_rows(ramps: dict[str, _Ramp], marks: list[int]) -> list[Row]:
    """Per N: a start with N-k..N-1 running (the last k starts before N, where k is the smallest
    N, so that the smallest N's row is its whole batch), memory per container and the time of
    `ps`. Then the removal of all, every start, and the growth: a start at the largest N
    against one at the smallest."""
    k, top = marks[0], marks[-1]
    py, pod = ramps["pyctr"], ramps["podman"]
    rows = []
    for n in marks:
        scenario = f"density N={n}"
        a, b = _starts_before(py, n, k), _starts_before(pod, n, k)
        rows.append(Row(f"density-{n}-start", scenario, f"time per start, {n - k}–{n - 1} running", a, b,
                        single_ratio(a, b)))
        for kind in ("pss", "rss"):
            rows.append(_memory_row(ramps, n, kind, budgeted=n == top))
        a, b = _at(py, py.ps, n, "pyctr ps"), _at(pod, pod.ps, n, "podman ps")
        rows.append(Row(f"density-{n}-ps", scenario, "pyctr ps vs podman ps", a, b, single_ratio(a, b)))
    scenario = f"density N={top}"
    rows.append(Row(f"density-{top}-remove", scenario, f"remove all {top} (rm -f, one call)", py.removal,
                    pod.removal, single_ratio(py.removal, pod.removal)))
    rows.append(Row("density-starts", scenario, f"every start, 1 to {top}", py.starts, pod.starts,
                    single_ratio(py.starts, pod.starts)))
    if len(marks) > 1:
        for tool, ramp in ramps.items():
            late = _starts_before(ramp, top, k, f"{tool}, {top - k}–{top - 1} running")
            early = _starts_before(ramp, k, k, f"{tool}, 0–{k - 1} running")
            rows.append(Row(f"density-growth-{tool}", "density growth", f"{tool}: start at N={top} vs N={k}",
                            late, early, single_ratio(late, early),
                            budget=GROWTH_BUDGET if tool == "pyctr" else None))
    return rows


def _starts_before(ramp: _Ramp, n: int, k: int, name: str | None = None) -> Series:
    """Starts number n-k+1..n of the ramp: those with n-k..n-1 containers running."""
    s = ramp.starts
    if len(s.samples) < n:
        return Series(name or s.name, error=s.error or "failed: not reached")
    return Series(name or s.name, samples=s.samples[n - k:n])


def _at(ramp: _Ramp, figures: dict[int, Series], n: int, name: str) -> Series:
    return figures.get(n) or Series(name, error=ramp.starts.error or "failed: not reached")


def _memory_row(ramps: dict[str, _Ramp], n: int, kind: str, budgeted: bool) -> Row:
    """Memory held per running container: the sum over the tool's own processes, divided by N.
    The budget is absolute (MiB of PSS), at the largest N, where a fixed cost shared by all
    containers weighs least; the ratio to podman's conmon is shown beside it."""
    def per_container(tool: str, name: str) -> Series:
        ramp = ramps[tool]
        m = ramp.memory.get(n)
        if m is None:
            return Series(name, "MiB", error=ramp.starts.error or "failed: not reached")
        if not m[f"{kind}_kib"]:
            return Series(name, "MiB", error=f"failed: no {m['what']} processes found")
        return Series(name, "MiB", [sum(m[f"{kind}_kib"]) / 1024 / n])

    a, b = per_container("pyctr", "pyctr"), per_container("podman", "conmon")
    budget = MEMORY_BUDGET_MIB if budgeted and kind == "pss" else None
    extra = {tool: ramps[tool].memory.get(n) for tool in ramps} if kind == "pss" else {}
    return Row(f"density-{n}-mem-{kind}", f"density N={n}", f"memory per container ({kind.upper()})", a, b,
               single_ratio(a, b), budget=budget, budget_on_figure=True, extra=extra)


# -- 6. CLI overhead ----------------------------------------------------------------------------

def cli(ctx: Context) -> list[Row]:
    scenario = "CLI overhead"
    python = str(_python(ctx))
    ids, ps_error = [], ctx.pyctr.error
    try:
        for _ in range(ctx.ps_containers if not ps_error else 0):
            ids.append(ctx.pyctr.run_detached(*SLEEP))
    except CommandFailed as e:
        ps_error = f"failed: starting {ctx.ps_containers} containers: {e}"
    try:
        s = interleave([
            Contender("pyctr --version", lambda i: ctx.pyctr.cmd("--version"), ctx.pyctr.env),
            Contender("pyctr ps", lambda i: ctx.pyctr.cmd("ps"), ctx.pyctr.env, ps_error),
            Contender("python -c pass", lambda i: [python, "-c", "pass"]),
        ], ctx.runs)
    finally:
        _quietly(lambda: ctx.pyctr.remove(ids))
    py = s["python -c pass"]
    return [
        Row("cli-version", scenario, "pyctr --version vs python -c pass", s["pyctr --version"], py,
            pair_ratio(s["pyctr --version"], py), budget=2.0),
        Row("cli-ps", scenario, f"pyctr ps ({ctx.ps_containers} running) vs python -c pass",
            s["pyctr ps"], py, pair_ratio(s["pyctr ps"], py), budget=2.0),
    ]


# -- 7. OCI conformance: the whole runtime-tools suite, against runc's baseline ---------------

def conformance(ctx: Context) -> list[Row]:
    """One run of the suite (about 2.5 min), compared with runc's results that the harness
    keeps; the budget: no program worse than runc's. More points and programs are better."""
    scenario = "OCI conformance"
    base = oci_conformance.baseline()
    got = error = None
    if ctx.pyctr_oci_error:
        error = ctx.pyctr_oci_error
    else:
        try:
            got = oci_conformance.run(ctx.pyctr_oci.binary, ctx.sandbox.dir / "oci-conformance")
        except CommandFailed as e:
            error = f"failed: {e}"

    def figure(unit: str, count) -> Series:
        """A count of pyctr-oci's summary, or why there is none."""
        return Series("pyctr-oci", unit, [count(got)] if got else [], error)

    def quotient(a: Series, b: Series) -> float | None:
        return a.median / b.median if a.ok and b.ok and b.median else None

    points = figure("points", lambda g: g.passed)
    programs = figure("programs", lambda g: g.ok_programs)
    runc_points = Series("runc (baseline)", "points", [base.passed])
    runc_programs = Series("runc (baseline)", "programs", [base.ok_programs])
    extra = {"pyctr-oci": got.to_json() if got else None, "runc": base.to_json()}
    return [
        Row("conformance-points", scenario, "passed points (more is better)", points, runc_points,
            quotient(points, runc_points), extra=extra),
        Row("conformance-programs", scenario, f"programs fully ok, of {base.programs} (more is better)",
            programs, runc_programs, quotient(programs, runc_programs)),
        Row("conformance-worse", scenario, "programs worse than runc's baseline",
            figure("programs", lambda g: len(g.worse)), budget=0, budget_on_figure=True,
            extra={"worse": got.worse if got else None}),
    ]


def _quietly(step) -> None:
    try:
        step()
    except CommandFailed:
        pass  # the sandbox's final clean-up catches what is left, and reports it


SCENARIOS = {
    "start": start_no_network,
    "oci": oci,
    "bridge": start_bridge,
    "exec": exec_,
    "density": density,
    "cli": cli,
    "conformance": conformance,
    "cluster": cluster,
    "policy": network_policy,
}
NOT_IN_QUICK = {"conformance"}  # minutes long; `--quick --only conformance` still runs it
