"""The network tests' sandbox (netsandbox.Sandbox) takes away what a failed test leaves: here a
container whose `rm -f` never came (it hung once, behind a node agent stopped while it held the
network's lock), so its process and its cgroups must go at close()."""

import glob
import os
import time

from netsandbox import Node, Sandbox, pull_alpine


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
