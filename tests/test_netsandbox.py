"""The tests' sandboxes take away what a failed test leaves: here a container whose `rm -f`
never came (it hung once, behind a node agent stopped while it held the network's lock), so its
process and its cgroups must go at close(). Both find it by its cgroups: its /proc/PID/root
reads "/" after pivot_root, so no folder of the sandbox finds it."""

import glob
import os
import subprocess
import time

from netsandbox import Node, Sandbox, cgroup_hierarchies, pull_alpine
from ociclients import ClientSandbox


def test_close_kills_and_removes_a_container_that_rm_never_removed(monkeypatch):
    sandbox = Sandbox()
    try:
        node = sandbox.node("node1", pull_alpine(sandbox.dir / "images-root"))
        cid = node.start("--network", "none", "alpine", "sleep", "600")
        pid = int(node.inspect(cid, "{{.State.Pid}}"))
        cgroups = glob.glob(f"/sys/fs/cgroup/**/pyctr/{cid}", recursive=True)
        assert cgroups
        monkeypatch.setattr(Node, "remove_all_containers", lambda self: None)  # as when `rm -f` fails
    finally:
        sandbox.close()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:  # a zombie until reaped
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the container's PID 1 outlived the sandbox"
    assert not [c for c in cgroups if os.path.exists(c)]


def test_the_client_sandbox_reports_and_kills_a_process_left_in_its_cgroup_parent():
    """podman, containerd and docker put their containers under the sandbox's cgroup parent."""
    box = ClientSandbox()
    hierarchies = cgroup_hierarchies()
    hierarchy = next((h for h in hierarchies if h.name == "pids"), None) or next(
        h for h in hierarchies if (h / "cgroup.controllers").exists())  # v1's pids, or v2
    cgroup = hierarchy / box.cgroup_parent / "podman" / "left-behind"
    left = None
    try:
        cgroup.mkdir(parents=True)
        left = subprocess.Popen(["sleep", "600"])  # as a container's process whose rm never came
        (cgroup / "cgroup.procs").write_text(str(left.pid))
        assert f"process {left.pid}" in box.leaks()
    finally:
        try:
            box.close()  # kills it, then removes the cgroups: nothing left to report
        finally:
            if left is not None and left.poll() is None:
                left.kill()
                left.wait()
    assert left.returncode == -9, "close() did not kill the process left in the cgroup parent"
    assert not (hierarchy / box.cgroup_parent).exists()
