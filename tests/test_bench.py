"""The bench's smoke mode runs end to end and leaves nothing behind. Nothing about speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bench needs root")


def _netns() -> set[str]:
    """The bench's node namespaces (others' tests may make namespaces of their own meanwhile)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("benchnode-")}


def _workdirs() -> set[Path]:
    return {d for d in Path("/tmp").glob("pyctr-bench-*") if d.is_dir()}


def test_quick_bench_prints_the_table_and_writes_every_run(tmp_path):
    netns_before, workdirs_before = _netns(), _workdirs()
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]

    # The table: a header and one row per figure, every scenario present.
    assert "| scenario | figure | pyctr median" in p.stdout
    for scenario in ("start, no network", "start, network", "exec", "density N=3",
                     "density growth", "CLI overhead"):
        assert f"| {scenario}" in p.stdout, scenario

    # The JSON keeps every run, and the machine it ran on.
    [result] = tmp_path.glob("bench-*.json")
    doc = json.loads(result.read_text())
    assert doc["quick"] is True and doc["machine"]["nproc"] >= 1
    keys = {r["key"] for r in doc["rows"]}
    assert {"start-none-runc", "start-bridge-podman", "exec-podman", "density-3-start",
            "density-growth-pyctr", "cli-version"} <= keys
    version = next(r for r in doc["rows"] if r["key"] == "cli-version")
    assert len(version["pyctr"]["samples"]) == 3  # --version needs nothing but pyctr itself

    # The bench cleans up after itself: its node namespace and its work directory are gone.
    assert _netns() - netns_before == set()
    assert _workdirs() - workdirs_before == set()
