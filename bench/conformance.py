"""The whole OCI runtime-tools validation suite on pyctr-oci, through the project's harness
(../shared/oci-conformance/validate.sh), and runc's baseline, which the harness keeps
(baseline/runc.tsv). The test suite runs a fast subset (tests/test_oci_conformance.py)."""

import re
import subprocess
from pathlib import Path

from bench.measure import CommandFailed

HARNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "oci-conformance"
TIMEOUT = 1800  # seconds: the suite takes about 2.5 min here, each program at most 120 s

_POINTS = re.compile(r"^oci-validation: (\d+) passed, (\d+) failed, (\d+) skipped of (\d+)$", re.M)
_PROGRAMS = re.compile(r"^programs: (\d+) ok, (\d+) not ok, of (\d+);", re.M)
_WORSE = re.compile(r"^worse than baseline: (\d+)(?: \((.*)\))?$", re.M)


class Summary:
    """Points (TAP results) and programs (a program is ok when none of its points failed)."""

    def __init__(self, passed: int, failed: int, skipped: int, ok_programs: int, programs: int,
                 worse: list[str] | None = None):
        self.passed, self.failed, self.skipped = passed, failed, skipped
        self.ok_programs, self.programs = ok_programs, programs
        self.worse = worse  # programs worse than runc's baseline; None for the baseline itself

    def to_json(self) -> dict:
        return dict(vars(self))


def run(runtime: str, outdir: Path) -> Summary:
    """validate.sh on `runtime`; it exits 1 when any point failed, which runc's baseline does too."""
    script = HARNESS / "validate.sh"
    if not script.is_file():
        raise CommandFailed(f"the OCI validation harness is missing: {script}")
    try:
        p = subprocess.run([str(script), runtime, str(outdir)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"validate.sh timed out after {TIMEOUT} s")
    if p.returncode not in (0, 1):
        said = p.stderr.strip().splitlines()
        raise CommandFailed(f"validate.sh exited {p.returncode}: {said[-1][:160] if said else 'no message'}")
    return parse(p.stdout)


def parse(summary: str) -> Summary:
    points, programs, worse = _POINTS.search(summary), _PROGRAMS.search(summary), _WORSE.search(summary)
    if not (points and programs and worse):
        raise CommandFailed("validate.sh printed no summary")
    names = worse.group(2).split() if worse.group(2) else []
    if len(names) != int(worse.group(1)):
        raise CommandFailed(f"validate.sh's summary does not add up: {worse.group(0)}")
    return Summary(int(points.group(1)), int(points.group(2)), int(points.group(3)),
                   int(programs.group(1)), int(programs.group(3)), names)


def baseline(path: Path = HARNESS / "baseline" / "runc.tsv") -> Summary:
    """runc's results, one program a line: program, status, pass, fail, skip, ..."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return Summary(sum(int(r[2]) for r in rows), sum(int(r[3]) for r in rows), sum(int(r[4]) for r in rows),
                   sum(r[1] in ("ok", "SKIP") for r in rows), len(rows))
