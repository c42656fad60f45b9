"""Timing commands, and runs of several commands interleaved round by round.

Every command is timed the same way: wall-clock time around one subprocess.run, so that the
fork/exec/wait cost of the harness is the same for pyctr and for its peers.
"""

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

TIMEOUT = 60  # seconds for one start, exec or ps: a hung run is a failure, not a hang


@dataclass
class Series:
    """The samples of one command (or one figure), in `unit`. `error` ends the series."""

    name: str
    unit: str = "ms"
    samples: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def to_json(self) -> dict:
        return {"name": self.name, "unit": self.unit, "samples": self.samples, "error": self.error}


class CommandFailed(Exception):
    pass


def run(argv: list[str], env: dict | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a command to completion; raise CommandFailed with its first stderr line on failure."""
    try:
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"timed out after {timeout:.0f}s: {' '.join(argv[:6])}")
    except FileNotFoundError:
        raise CommandFailed(f"{argv[0]}: not installed")
    if p.returncode != 0:
        raise CommandFailed(first_line(p.stderr) or f"{argv[0]} exited {p.returncode}")
    return p


def removal_timeout(count: int) -> float:
    """Seconds one `rm -f` of `count` containers may take before it counts as hung."""
    return 120 + count


def timed(argv: list[str], env: dict | None = None,
          timeout: float = TIMEOUT) -> tuple[float, subprocess.CompletedProcess]:
    """Milliseconds for one run of argv, and its result."""
    t0 = time.perf_counter()
    p = run(argv, env, timeout)
    return (time.perf_counter() - t0) * 1000, p


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:160]
    return ""


@dataclass
class Contender:
    """One command of an interleaved comparison. `argv(i)` gives the command of run i."""

    name: str
    argv: Callable[[int], list[str]]
    env: dict | None = None
    error: str | None = None  # set beforehand when it cannot run at all (e.g. set-up failed)


def interleave(contenders: list[Contender], runs: int, warmup: int = 1) -> dict[str, Series]:
    """A B C A B C ...: one run of each per round, the starting one rotating each round so that
    no contender always runs right after the same other. Warm-up rounds are not recorded.
    A contender that fails once stops; the others go on."""
    series = {c.name: Series(c.name, error=c.error) for c in contenders}
    for r in range(warmup + runs):
        shift = r % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            s = series[c.name]
            if s.error:
                continue
            try:
                ms, _ = timed(c.argv(r), c.env)
            except CommandFailed as e:
                s.error = f"failed: {e}"
                continue
            if r >= warmup:
                s.samples.append(ms)
    return series


def pair_ratio(a: Series, b: Series) -> float | None:
    """Median of a[i] / b[i] over the rounds both completed: the two ran back to back, so the
    machine's mood at that moment cancels out."""
    if not (a.ok and b.ok):
        return None
    n = min(len(a.samples), len(b.samples))
    return statistics.median(a.samples[i] / b.samples[i] for i in range(n))


def single_ratio(a: Series, b: Series) -> float | None:
    """Ratio of medians, for figures measured once per tool (memory, removal time)."""
    if not (a.ok and b.ok) or b.median == 0:
        return None
    return a.median / b.median
