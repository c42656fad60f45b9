"""The results: a table on stdout, a JSON file with every run, a comparison with an earlier
JSON file, and a PNG of the distributions. matplotlib is imported only to draw the plot."""

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from bench.rows import Row

FAILED_WIDTH = 70  # a failure message is cut to this in the table; the JSON keeps it whole


# -- the machine ---------------------------------------------------------------------------------

def machine(pyctr_binary: str) -> dict:
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "runc": _version(["runc", "--version"]),
        "podman": _version(["podman", "--version"]),
        "pyctr": _version([pyctr_binary, "--version"]),
        "pyctr_commit": _version(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"]),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def describe_machine(m: dict) -> str:
    return (f"{m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
            f"Python {m['python']}; {m['runc']}; {m['podman']}; {m['pyctr']} ({m['pyctr_commit']})")


# -- the table -----------------------------------------------------------------------------------

HEADER = ["scenario", "figure", "pyctr median (min–max)", "peer", "peer median (min–max)",
          "ratio", "floor", "budget", "met?"]


def table(rows: list[Row]) -> str:
    """A Markdown table of every row with every figure: readable on a terminal."""
    lines = [_md(HEADER), _md(["---"] * len(HEADER))]
    for r in rows:
        lines.append(_md([
            r.scenario, r.title, _figure(r.pyctr),
            r.peer.name if r.peer else "", _figure(r.peer),
            f"{r.ratio:.2f}×" if r.ratio is not None else "–",
            _figure(r.floor, spread=False),
            _budget(r), _met(r),
        ]))
    return "\n".join(lines)


README_HEADER = ["scenario", "result", "budget", "met?"]


def readme_table(rows: list[Row]) -> str:
    """The same rows in the shape of the project README's table, to paste there as is: each
    row's result (the ratio with both medians, or pyctr's figure where the budget bounds it),
    its budget and whether it was met."""
    lines = [_md(README_HEADER), _md(["---"] * len(README_HEADER))]
    for r in rows:
        lines.append(_md([f"{r.scenario}: {r.title}", _result(r), _budget(r), _met(r)]))
    return "\n".join(lines)


def budgets_summary(rows: list[Row]) -> str:
    budgeted = [r for r in rows if r.budget is not None]
    unmet = [f"{r.scenario}: {r.title}" for r in budgeted if r.met is not True]
    text = f"Budgets met: {len(budgeted) - len(unmet)} of {len(budgeted)}."
    return text + (f" Not met (or not measured): {'; '.join(unmet)}." if unmet else "")


def _result(r: Row) -> str:
    if not r.pyctr.ok:
        return _figure(r.pyctr)
    mine = _figure(r.pyctr, spread=False)
    theirs = _figure(r.peer, spread=False) if r.peer and r.peer.ok else ""
    if r.budget_on_figure:  # the title does not name the peer: the cell does
        return mine + (f" ({r.ratio:.2f}× {r.peer.name}'s {theirs})" if r.ratio is not None else "")
    if r.ratio is None:
        return mine + (f" ({r.peer.name} {theirs})" if theirs else "")
    return f"{r.ratio:.2f}× ({mine} vs {theirs})"


def _met(r: Row) -> str:
    if r.budget is None:
        return ""
    return {True: "yes", False: "**no**", None: "not measured"}[r.met]


def _budget(r: Row) -> str:
    if r.budget is None:
        return ""
    return f"≤ {r.budget:g} {_noun(r.budget, r.pyctr.unit)}" if r.budget_on_figure else f"≤ {r.budget:g}×"


MEASURES = {"MiB", "ms", "s", "%", "Gbit/s"}  # any other unit counts things: "programs", "requests"


def _noun(count: float, unit: str) -> str:
    """"1 request", not "1 requests"."""
    return unit[:-1] if unit not in MEASURES and count == 1 and unit.endswith("s") else unit


def _md(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _figure(s, spread: bool = True) -> str:
    if s is None:
        return ""
    if s.error:
        return s.error if len(s.error) <= FAILED_WIDTH else s.error[:FAILED_WIDTH - 1] + "…"
    if not s.samples:
        return "–"
    unit, scale = s.unit, 1
    if unit == "ms" and s.median >= 10_000:  # a removal of many containers: seconds read better
        unit, scale = "s", 1000
    fmt = {"MiB": "{:.2f}", "ms": "{:.1f}", "s": "{:.1f}", "%": "{:.1f}", "Gbit/s": "{:.2f}"}.get(unit, "{:.0f}")  # other units count things
    text = f"{fmt.format(s.median / scale)} {_noun(round(s.median / scale, 6), unit)}"
    if spread and len(s.samples) > 1:
        text += f" ({fmt.format(s.min / scale)}–{fmt.format(s.max / scale)})"
    return text


# -- JSON and --compare --------------------------------------------------------------------------

def write_json(path: Path, rows: list[Row], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(meta, rows=[r.to_json() for r in rows])
    path.write_text(json.dumps(doc, indent=1) + "\n")


def compare(rows: list[Row], old_path: Path) -> str:
    """Row by row: the old and new ratio, and how pyctr's own median moved."""
    old = {r["key"]: r for r in json.loads(old_path.read_text())["rows"]}
    lines = [f"Compared with {old_path}:", "",
             _md(["figure", "old ratio", "new ratio", "old pyctr", "new pyctr", "pyctr change"]),
             _md(["---"] * 6)]
    for r in rows:
        o = old.get(r.key)
        if not o:
            continue
        old_med = _median(o["pyctr"]["samples"]) if not o["pyctr"]["error"] else None
        new_med = r.pyctr.median if r.pyctr.ok else None
        change = f"{(new_med / old_med - 1) * 100:+.0f}%" if old_med and new_med else "–"
        lines.append(_md([
            f"{r.scenario}: {r.title}",
            f"{o['ratio']:.2f}×" if o["ratio"] is not None else "–",
            f"{r.ratio:.2f}×" if r.ratio is not None else "–",
            f"{old_med:.1f}" if old_med else "–", f"{new_med:.1f}" if new_med else "–", change]))
    return "\n".join(lines)


def _median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def result_paths(out_dir: Path) -> tuple[Path, Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return out_dir / f"bench-{stamp}.json", out_dir / f"bench-{stamp}.png"


# -- the plot ------------------------------------------------------------------------------------

def plot(rows: list[Row], path: Path, title: str) -> str | None:
    """One panel per timed scenario (box plots of every run), the time of every start of the
    density ramp, and at each N memory per container and the time of `ps`. Returns why not,
    when there is no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    panels = _box_panels(rows)
    density_starts = [r for r in rows if r.key == "density-starts"]
    memory = [r for r in rows if r.key.startswith("density-") and r.key.endswith("-mem-pss")]
    ps = [r for r in rows if r.key.startswith("density-") and r.key.endswith("-ps")]
    count = len(panels) + bool(density_starts) + bool(memory) + bool(ps)
    if count == 0:
        return "no plot: nothing was measured"
    cols = 2
    fig, axes = plt.subplots((count + cols - 1) // cols, cols, figsize=(12, 3.8 * ((count + 1) // cols)),
                             squeeze=False)
    flat = list(axes.flat)
    for ax, (name, series) in zip(flat, panels.items()):
        ax.boxplot([s.samples for s in series])
        ax.set_xticks(range(1, len(series) + 1), [s.name for s in series])
        ax.set_title(name)
        ax.set_ylabel("ms")
        low, high = min(s.min for s in series), max(s.max for s in series)
        if high > 10 * low:  # a log scale only where the floor would be a flat line otherwise
            ax.set_yscale("log")
            # Plain numbers at 1, 2, 5 × 10^k: easier to read than powers of ten.
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            ax.set_ylim(bottom=0)
        ax.tick_params(axis="x", labelsize=8)
    rest = flat[len(panels):]
    if density_starts:
        _plot_density(rest.pop(0), density_starts[-1])
    if memory:
        _plot_bars(rest.pop(0), memory, "memory per running container (PSS)", "MiB")
    if ps:
        _plot_bars(rest.pop(0), ps, "time of ps with N running", "ms")
    for ax in rest:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _box_panels(rows: list[Row]) -> dict[str, list]:
    """Per scenario, every distinct series with more than one sample, in order of appearance."""
    panels: dict[str, list] = {}
    for r in rows:
        if r.scenario.startswith("density"):
            continue
        seen = panels.setdefault(r.scenario, [])
        for s in (r.pyctr, r.peer, r.floor):
            if s and s.ok and len(s.samples) > 1 and all(s.name != t.name for t in seen):
                seen.append(s)
    return {k: v for k, v in panels.items() if v}


def _plot_density(ax, row: Row) -> None:
    for s in (row.pyctr, row.peer):
        if s and s.samples:
            ax.plot(range(1, len(s.samples) + 1), s.samples, marker=".", linewidth=0.8, label=s.name)
    ax.set_title("density: time of each start")
    ax.set_xlabel("containers already running + 1")
    ax.set_ylabel("ms")
    ax.legend()


def _plot_bars(ax, rows: list[Row], title: str, unit: str) -> None:
    """pyctr's figure beside its peer's, at each N."""
    labels = [r.scenario.replace("density ", "") for r in rows]
    width = 0.4
    for offset, pick in ((-width / 2, lambda r: r.pyctr), (width / 2, lambda r: r.peer)):
        values = [pick(r).median if pick(r) and pick(r).ok else 0 for r in rows]
        name = next((pick(r).name for r in rows if pick(r)), "")
        ax.bar([i + offset for i in range(len(rows))], values, width, label=name)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.margins(y=0.25)  # room for the legend above the tallest bar
    ax.legend(loc="upper left")
