"""The node agent: one per node, started by `pyctr node start`, detached (its own session, in /,
`python -I -m pyctr.network.nodeagent NODE_DIR READY_FD`), with its output in agent.log.

It ties the node's parts together:

  - BIRD is its child, started with PR_SET_PDEATHSIG (SIGTERM): an agent that dies, even by
    SIGKILL, takes BIRD with it, and BIRD closes its sessions (the other nodes withdraw this
    node's blocks at once) and takes its routes out of the kernel;
  - a BIRD that dies makes the agent exit: it revokes the node's lease, so the node leaves the
    other nodes' mesh, and `pyctr node start` starts it again. No restart behind the user's
    back: a node whose BIRD crashes is a node to look at (bird.log);
  - it keeps the node's lease alive (every third of its TTL). When the lease expired anyway (the
    agent was stopped, or etcd was away longer than the TTL), it registers the node again;
  - it renders BIRD's configuration from etcd (the other nodes, this node's blocks) and runs
    `birdc configure` when the text changes;
  - it rebuilds a cluster network's policy table when its policies or endpoints in etcd change
    (clusterpolicy.py).

Why it polls etcd (every POLL_SECONDS, two range requests) rather than watching: the loop that
keeps the lease and waits on BIRD is then all there is, with no thread; it needs no resync after
etcd restarts or compacts (a watch must read everything again after any reconnect, and etcd3gw
runs a watch as a thread over a streamed HTTP response); and two reads a node per half second
are nothing to etcd at a cluster's size. The price would be up to POLL_SECONDS of delay before a
new block reaches BIRD; but this node's own blocks change only by this node's `run` (a claim)
and `network rm` (a release), and these wake the agent at once through a FIFO in the node's
folder (node.wake_agent), so the mesh hears of a new block within a fraction of a second. Other
changes (nodes that come and go, a `node rm`) wait for the poll.

When etcd cannot be reached, nothing changes: BIRD keeps its sessions and the kernel its routes,
so containers keep talking; the agent says so once in its log and tries again. SIGUSR1 writes the
agent's stack to its log.
"""

import contextlib
import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyctr.network import bird, clusterpolicy, datastore, node
from pyctr.runtime import jsonstore
from pyctr.runtime.errors import PyctrError

POLL_SECONDS = 0.5
BIRD_READY_SECONDS = 10.0
BIRD_STOP_SECONDS = 5.0


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class Agent:
    def __init__(self, files: node.Files):
        self.files = files
        self.node = jsonstore.read_json(files.settings)
        self.store = datastore.Datastore(self.node["datastore"])
        self.bird: subprocess.Popen | None = None
        self.wake = -1  # the wake FIFO's descriptor (open_wake)
        self.stopping = False
        self.rendered = files.bird_conf.read_text() if files.bird_conf.exists() else ""
        self.next_keep_alive = time.monotonic() + self.node["lease_ttl"] / 3
        self.last_error = ""
        self.policies = clusterpolicy.Follower(self.store, log)  # the cluster networks' policy tables

    # --- BIRD --------------------------------------------------------------------------------
    def start_bird(self) -> None:
        agent = os.getpid()

        def die_with_agent() -> None:  # in BIRD's process, before its exec
            import prctl

            prctl.set_pdeathsig(signal.SIGTERM)
            if os.getppid() != agent:  # the agent died before the line above
                os._exit(1)

        with open(self.files.bird_log, "ab") as output:
            self.bird = subprocess.Popen(node.bird_argv(self.files), stdin=subprocess.DEVNULL, stdout=output,
                                         stderr=subprocess.STDOUT, preexec_fn=die_with_agent)
        deadline = time.monotonic() + BIRD_READY_SECONDS
        while True:
            code = self.bird.poll()
            if code is not None:
                raise PyctrError(f"BIRD exited with status {code}: {self._bird_said()}")
            try:
                bird.birdc(str(self.files.bird_ctl), "show", "status", timeout=2)
                return
            except PyctrError:
                if time.monotonic() > deadline:
                    raise PyctrError(f"BIRD does not answer on {self.files.bird_ctl}") from None
                time.sleep(0.05)

    def _bird_said(self) -> str:
        try:
            lines = self.files.bird_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else "nothing (see bird.log)"

    def stop_bird(self) -> None:
        if self.bird is None or self.bird.poll() is not None:
            for path in (self.files.bird_ctl, self.files.bird_pid):  # a killed BIRD leaves them
                path.unlink(missing_ok=True)
            return
        self.bird.terminate()  # BIRD says goodbye to its peers and takes its routes out
        try:
            self.bird.wait(timeout=BIRD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.bird.kill()
            self.bird.wait()

    # --- the loop ----------------------------------------------------------------------------
    def open_wake(self) -> None:
        """The FIFO that `run` and `network rm` write a byte to when this node's blocks change
        (node.wake_agent). Opened read-write, so that it never reads as closed when a writer
        goes, and non-blocking."""
        self.files.wake.unlink(missing_ok=True)
        os.mkfifo(self.files.wake, 0o600)
        self.wake = os.open(self.files.wake, os.O_RDWR | os.O_NONBLOCK)

    def run(self) -> int:
        import select

        bird_exit = os.pidfd_open(self.bird.pid)  # readable once BIRD exits: no busy wait
        while not self.stopping:
            readable, _, _ = select.select([bird_exit, self.wake], [], [], POLL_SECONDS)
            if self.wake in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake, 4096)  # every wake so far: one sync serves them all
            if bird_exit in readable:
                code = self.bird.wait()
                how = f"signal {-code}" if code < 0 else f"status {code}"
                log(f"BIRD exited ({how}): node {self.node['name']} leaves the mesh; "
                    f"`pyctr node start` starts it again")
                return 1
            if not self.stopping:
                self.tick()
        return 0

    def tick(self) -> None:
        try:
            self.keep_lease()
            self.sync()
            self.policies.refresh()
        except PyctrError as e:
            self.say(f"{e} (BIRD keeps its sessions and routes; trying again)")
            return
        self.say("")

    def say(self, error: str) -> None:
        """Log an error once, and once that it is over."""
        if error != self.last_error:
            log(error or "the datastore answers again")
            self.last_error = error

    def keep_lease(self) -> None:
        if time.monotonic() < self.next_keep_alive:
            return
        if self.store.keep_alive(self.node["lease"]) <= 0:
            log(f"lease {self.node['lease']:x} expired: registering node {self.node['name']} again")
            self.register()
        self.next_keep_alive = time.monotonic() + self.node["lease_ttl"] / 3

    def register(self) -> None:
        self.node["lease"] = node.register(self.store, self.node)
        jsonstore.write_json(self.files.settings, self.node)

    def sync(self) -> None:
        nodes = node.registered(self.store)
        if self.node["name"] not in nodes:  # the key went while the lease lives (`etcdctl del`)
            self.register()
            nodes = node.registered(self.store)
        text = node.config_from(self.node, nodes, node.blocks_by_node(self.store))
        if text == self.rendered:
            return
        tmp = self.files.bird_conf.with_name(".bird.conf.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.files.bird_conf)
        self.rendered = text
        try:
            bird.configure(str(self.files.bird_ctl))
        except PyctrError as e:
            log(str(e))
            return
        peers = sorted(name for name in nodes if name != self.node["name"])
        log(f"BIRD reconfigured: peers {', '.join(peers) or 'none'}")

    def revoke(self) -> None:
        with contextlib.suppress(PyctrError):
            self.store.revoke(self.node["lease"])


def main(argv: list[str]) -> int:
    node_dir, ready_fd = Path(argv[1]), int(argv[2])
    files = node.Files(node_dir.parent)
    agent = Agent(files)

    def stop(_signum, _frame) -> None:
        agent.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # As containerd does: SIGUSR1 writes the agent's stack to its log, to see where a stuck one is.
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    try:
        agent.open_wake()
        agent.start_bird()
        files.agent_pid.write_text(f"{os.getpid()}\n")
    except BaseException as e:
        agent.stop_bird()
        message = str(e) if isinstance(e, PyctrError) else f"{type(e).__name__}: {e}"
        log(f"not started: {message}")
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error {message}\n".encode())
        return 1  # `node start` revokes the lease it granted
    log(f"node {agent.node['name']} started: BIRD PID {agent.bird.pid}")
    os.write(ready_fd, f"ready {os.getpid()}\n".encode())
    os.close(ready_fd)
    code = 1
    try:
        code = agent.run()
    finally:
        agent.stop_bird()
        agent.revoke()
        files.agent_pid.unlink(missing_ok=True)
        files.wake.unlink(missing_ok=True)
        log(f"node {agent.node['name']} stopped")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
