"""The seven scenarios. Each returns rows of the results table; none raises for a contender that
cannot run (its cells say "failed: …" instead), so one broken piece never hides the others."""

from dataclasses import dataclass
from pathlib import Path

from bench import conformance as oci_conformance
from bench import procs
from bench.measure import (CommandFailed, Contender, Series, interleave, pair_ratio, run,
                           single_ratio, timed)
from bench.peers import PODMAN_IMAGE, Podman, PyctrOci, Runc, floor_argv, python_floor_argv
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
            pair_ratio(s["pyctr"], s["runc"]), s["floor"], budget=1.0),
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
            s["podman bridge"], pair_ratio(s["pyctr bridge"], s["podman bridge"]), budget=0.5),
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


# -- 5. density: N detached containers --------------------------------------------------------

def density(ctx: Context) -> list[Row]:
    rows, starts = [], {}
    for n in ctx.density:
        batch_rows, starts[n] = _density_batch(ctx, n)
        rows += batch_rows
    rows += _growth_rows(ctx, starts)
    return rows


def _density_batch(ctx: Context, n: int) -> tuple[list[Row], dict[str, Series]]:
    """Start n `sleep` containers with each tool, alternating start by start, so that container
    number i of either tool starts with i-1 of each already running."""
    scenario = f"density N={n}"
    ids = {"pyctr": [], "podman": []}
    starts = {"pyctr": Series("pyctr", error=ctx.pyctr.error),
              "podman": Series("podman", error=ctx.podman_error)}
    argv = {"pyctr": ctx.pyctr.cmd("run", "-d", "--network", "none", "alpine", *SLEEP),
            "podman": ctx.podman.cmd("run", "-d", "--network", "none", PODMAN_IMAGE, *SLEEP)}
    env = {"pyctr": ctx.pyctr.env, "podman": ctx.podman.env}
    try:
        for i in range(n):
            for tool in (("pyctr", "podman") if i % 2 == 0 else ("podman", "pyctr")):
                if starts[tool].error:
                    continue
                try:
                    ms, p = timed(argv[tool], env[tool])
                except CommandFailed as e:
                    starts[tool].error = f"failed at #{i + 1}: {e}"
                    continue
                starts[tool].samples.append(ms)
                ids[tool].append(p.stdout.strip().splitlines()[-1])
        # Every process of the tool alive now: the scenarios before this one removed their
        # containers, so these serve this batch alone (a shared reaper counts too).
        mem = {"pyctr": _memory(ctx.pyctr.own_pids(), "pyctr"),
               "podman": _memory(ctx.podman.conmon_pids(), "conmon")}
    finally:
        removal = _remove_batch(ctx, ids)
    return [
        Row(f"density-{n}-start", scenario, "time per start", starts["pyctr"], starts["podman"],
            pair_ratio(starts["pyctr"], starts["podman"])),
        _memory_row(n, scenario, "pss", mem, starts),
        _memory_row(n, scenario, "rss", mem, starts),
        Row(f"density-{n}-remove", scenario, f"remove all {n} (rm -f, one call)", removal["pyctr"],
            removal["podman"], single_ratio(removal["pyctr"], removal["podman"])),
    ], starts


def _memory(pids: list[int], what: str) -> dict:
    per_process = [m for m in map(procs.memory_kib, sorted(pids)) if m]
    return {"what": what, "processes": len(per_process),
            "pss_kib": [m[0] for m in per_process], "rss_kib": [m[1] for m in per_process]}


def _memory_row(n: int, scenario: str, kind: str, mem: dict, starts: dict[str, Series]) -> Row:
    """Memory held per running container: the sum over the tool's own processes, divided by N."""
    def per_container(tool: str, name: str) -> Series:
        m = mem[tool]
        if starts[tool].error:
            return Series(name, "MiB", error=starts[tool].error)
        if not m[f"{kind}_kib"]:
            return Series(name, "MiB", error=f"failed: no {m['what']} processes found")
        return Series(name, "MiB", [sum(m[f"{kind}_kib"]) / 1024 / n])

    a, b = per_container("pyctr", "pyctr"), per_container("podman", "conmon")
    budget = 1.0 if kind == "pss" else None
    return Row(f"density-{n}-mem-{kind}", scenario, f"memory per container ({kind.upper()})", a, b,
               single_ratio(a, b), budget=budget,
               extra={"pyctr": mem["pyctr"], "podman": mem["podman"]} if kind == "pss" else {})


def _remove_batch(ctx: Context, ids: dict[str, list[str]]) -> dict[str, Series]:
    argv = {"pyctr": ctx.pyctr.cmd("rm", "-f", *ids["pyctr"]),
            "podman": ctx.podman.cmd("rm", "-f", "-t", "0", *ids["podman"])}
    env = {"pyctr": ctx.pyctr.env, "podman": ctx.podman.env}
    out = {}
    for tool in ("pyctr", "podman"):
        s = out[tool] = Series(tool)
        if not ids[tool]:
            s.error = "failed: nothing was started"
            continue
        try:
            s.samples.append(timed(argv[tool], env[tool])[0])
        except CommandFailed as e:
            s.error = f"failed: {e}"
    return out


def _growth_rows(ctx: Context, starts: dict[int, dict[str, Series]]) -> list[Row]:
    """The last k starts of the largest batch (hi-k..hi-1 already running) against the whole
    smallest batch of k: flat means no step of `run` scans every container."""
    lo, hi = min(ctx.density), max(ctx.density)
    k = lo
    rows = []
    for tool in ("pyctr", "podman"):
        first, last = starts[lo][tool], starts[hi][tool]
        late = Series(f"{tool} last {k} of N={hi}", error=last.error, samples=last.samples[-k:])
        early = Series(f"{tool} N={lo}", error=first.error, samples=list(first.samples))
        rows.append(Row(f"density-growth-{tool}", "density growth",
                        f"{tool}: start at N={hi} vs N={lo}", late, early, single_ratio(late, early),
                        budget=1.2 if tool == "pyctr" else None))
    return rows


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
            s["pyctr ps"], py, pair_ratio(s["pyctr ps"], py)),
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
}
NOT_IN_QUICK = {"conformance"}  # minutes long; `--quick --only conformance` still runs it
