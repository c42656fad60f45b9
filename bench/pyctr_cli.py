"""pyctr as the bench drives it: the installed `pyctr` command with a root and state of its own."""

import os
import sys
import time
from pathlib import Path

from bench import procs
from bench.measure import CommandFailed, removal_timeout, run

LINGER = 10  # seconds pyctr's processes get to exit on their own after the last `rm -f`
# (a shared monitor may stay a moment, idle, in case another start comes)


def default_binary() -> str:
    return str(Path(sys.executable).parent / "pyctr")


class Pyctr:
    def __init__(self, workdir: Path, binary: str | None = None):
        self.binary = binary or default_binary()
        self.root = workdir / "pyctr-root"
        self.state = workdir / "pyctr-state"
        self.env = dict(os.environ, PYCTR_ROOT=str(self.root), PYCTR_STATE=str(self.state))
        self.error: str | None = None  # why pyctr rows cannot run, once known

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, *args]

    @property
    def python(self) -> Path:
        """The Python that runs pyctr (the venv's)."""
        return Path(self.binary).parent / "python"

    def pull(self, mirror_url: str) -> None:
        """`pyctr pull alpine` from the given mirror; on failure the pyctr rows say why."""
        env = dict(self.env, PYCTR_ALPINE_MIRROR=mirror_url)
        try:
            run(self.cmd("pull", "alpine"), env=env, timeout=600)
        except CommandFailed as e:
            self.error = f"failed: pull: {e}"

    def run_detached(self, *command: str, network: str = "none") -> str:
        """Start a detached container; its ID."""
        p = run(self.cmd("run", "-d", "--network", network, "alpine", *command), self.env)
        return p.stdout.strip().splitlines()[-1]

    def pid_of(self, cid: str) -> int:
        return int(run(self.cmd("inspect", "--format", "{{.State.Pid}}", cid), self.env).stdout)

    def own_pids(self) -> list[int]:
        """Every process pyctr keeps on the host side (monitors, whatever their shape), not the
        containers' own: those that carry the bench's PYCTR_STATE or name its folders, and their
        descendants."""
        return procs.tool_pids("PYCTR_STATE", str(self.state), (f"{self.root}/", f"{self.state}/"))

    def container_ids(self) -> list[str]:
        try:
            return run(self.cmd("ps", "--all", "--quiet", "--no-trunc"), self.env).stdout.split()
        except CommandFailed:
            return []

    def remove(self, ids: list[str]) -> None:
        if ids:
            run(self.cmd("rm", "--force", *ids), self.env, timeout=removal_timeout(len(ids)))

    def cleanup(self) -> list[str]:
        """Remove every container of the bench's pyctr; then kill whatever of pyctr's is left
        (processes carrying our PYCTR_STATE were started by the bench). Returns the leaks."""
        leaks = []
        ids = self.container_ids()
        try:
            self.remove(ids)
        except CommandFailed as e:
            leaks.append(f"pyctr rm -f of {len(ids)} containers: {e}")
        deadline = time.monotonic() + LINGER
        while (left := self.own_pids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            leaks.append(f"{len(left)} pyctr processes still running after rm -f: killed")
            procs.kill(left)
        return leaks
