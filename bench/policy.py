"""Network policies across a cluster (issue 14): three pyctr nodes, each in a network namespace
of its own (`benchnode-TAG-nodeN`, on a bridge in `benchnode-TAG-fabric`), a private etcd in
node1's namespace, BIRD and the node agents started by `pyctr node start`, and one routed
cluster network. Two rows:

- how long a policy change takes to reach every node: from the moment `network policy apply`
  starts on node1 until the tables of all three nodes hold the changed rule (each apply changes
  the port of one rule; the nodes' tables are polled with `nft list table` every few ms);
- TCP throughput from a container on node1 to one on node2 (iperf3 from Debian, run in the
  containers' network namespaces), without any policy and with a policy that selects both
  (server's ingress, client's egress), round by round in alternating order; the figure is the
  loss between the two sides' medians, 1 − with / without (see _throughput_runs: why not the
  median of the rounds' own losses, which the JSON keeps).
"""

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from bench import procs
from bench.measure import CommandFailed, Series, run
from bench.pyctr_cli import LINGER, Pyctr
from bench.rows import Row
from bench.sandbox import delete_netns

SCENARIO = "network policy, 3 nodes"
NODES = 3
NETWORK = "benchpolicy"
POOL = "10.250.0.0/16"  # only ever exists inside the bench's node namespaces
TABLE = f"pyctr-policy-{NETWORK}"
ETCD_ADDRESS = "10.141.0.1"  # node1's
DATASTORE = f"etcd://{ETCD_ADDRESS}:2379"
SPREAD_BUDGET_MS = 1000.0  # the goal: a change takes effect on every node within 1 s
LOSS_BUDGET_PERCENT = 5.0
IPERF_PORT = 5201
POLL_SECONDS = 0.005
AGENT_POLL_SECONDS = 0.5  # network/nodeagent.py's
ETCD_READY = """
import sys, time, urllib.request
deadline = time.monotonic() + 20
while True:
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/v3/kv/range", data=b'{"key": "AA=="}'),
                               timeout=1).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
"""
CHANGING = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bench-change}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: {port}}}]
"""
BOTH_SELECTED = f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bench-iperf}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: {IPERF_PORT}}}]
  egress:
  - to: [{{podSelector: {{matchLabels: {{app: db}}}}}}]
    ports: [{{port: {IPERF_PORT}}}]
"""


class Node:
    """One pyctr node: its namespace, and pyctr with a root and state of its own."""

    def __init__(self, ctx, index: int):
        self.index = index
        self.name = f"node{index}"
        self.netns = f"benchnode-{ctx.sandbox.tag}-{self.name}"
        self.address = f"10.141.0.{index}"
        self.pyctr = Pyctr(ctx.sandbox.dir / "policy" / self.name, ctx.pyctr.binary)
        self.pyctr.env.update(PYCTR_NODE_NAME=self.name, PYCTR_DATASTORE=DATASTORE)

    def argv(self, *argv) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", *map(str, argv)]

    def run(self, *argv, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(self.argv(*argv), timeout=timeout)

    def pyctr_run(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(self.argv(*self.pyctr.cmd(*args)), self.pyctr.env, timeout)

    def table(self) -> str:
        p = subprocess.run(self.argv("nft", "list", "table", "inet", TABLE), capture_output=True, text=True)
        return p.stdout


def network_policy(ctx) -> list[Row]:
    spread = Series("pyctr", "ms")
    loss = Series("pyctr", "%")
    without, with_policy = Series("without policy", "Gbit/s"), Series("with policy", "Gbit/s")
    applies, rounds_losses = [], []
    if ctx.pyctr.error:
        spread.error = loss.error = ctx.pyctr.error
        return _rows(spread, loss, without, with_policy, applies, rounds_losses)
    try:
        nodes, containers = _cluster(ctx)
    except (CommandFailed, subprocess.SubprocessError, OSError) as e:
        spread.error = loss.error = f"failed: set-up: {e}"
    else:
        try:
            _spread_runs(ctx, nodes, spread, applies)
        except (CommandFailed, subprocess.SubprocessError, TimeoutError) as e:
            spread.error = f"failed: {e}"
        try:
            _throughput_runs(ctx, nodes, containers, loss, without, with_policy, rounds_losses)
        except (CommandFailed, subprocess.SubprocessError, TimeoutError, ValueError) as e:
            loss.error = f"failed: {e}"
    return _rows(spread, loss, without, with_policy, applies, rounds_losses)


def _rows(spread: Series, loss: Series, without: Series, with_policy: Series, applies: list,
          rounds_losses: list) -> list[Row]:
    return [
        Row("policy-spread", SCENARIO, "a policy change on every node, from `policy apply` starting",
            spread, budget=SPREAD_BUDGET_MS, budget_on_figure=True,
            extra={"apply_returned_ms": applies, "nodes": NODES}),
        Row("policy-throughput-loss", SCENARIO,
            "TCP throughput lost to a policy selecting both containers (iperf3, node1 to node2)",
            loss, budget=LOSS_BUDGET_PERCENT, budget_on_figure=True,
            extra={"without_gbit_s": without.samples, "with_gbit_s": with_policy.samples,
                   "rounds_loss_percent": rounds_losses}),
    ]


def _cluster(ctx) -> tuple[list[Node], dict]:
    """Build the three nodes, etcd, the network and two containers; every step has its undo
    on the sandbox's stack."""
    sb = ctx.sandbox
    fabric = f"benchnode-{sb.tag}-fabric"
    nodes = [Node(ctx, i) for i in range(1, NODES + 1)]
    for name in [fabric] + [n.netns for n in nodes]:
        run(["ip", "netns", "add", name])
        sb.on_cleanup(f"delete netns {name}", lambda name=name: delete_netns(name))
        run(["ip", "-n", name, "link", "set", "lo", "up"])
    run(["ip", "-n", fabric, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", fabric, "link", "set", "br0", "up"])
    for n in nodes:
        run(["ip", "-n", fabric, "link", "add", f"p-{n.name}", "type", "veth", "peer", "name", "eth0",
             "netns", n.netns])
        run(["ip", "-n", fabric, "link", "set", f"p-{n.name}", "master", "br0", "up"])
        run(["ip", "-n", n.netns, "addr", "add", f"{n.address}/16", "dev", "eth0"])
        run(["ip", "-n", n.netns, "link", "set", "eth0", "up"])
        # A default route, as a real node has: proxy ARP answers a routed container's gateway
        # only when the node has a route to it.
        run(["ip", "-n", n.netns, "route", "add", "default", "via", "10.141.255.254"])

    etcd_dir = sb.dir / "policy" / "etcd"
    etcd_dir.mkdir(parents=True)
    url = f"http://{ETCD_ADDRESS}:2379"
    with open(etcd_dir.parent / "etcd.log", "w") as log:
        etcd = subprocess.Popen(nodes[0].argv(
            "etcd", "--name", "bench", "--data-dir", etcd_dir / "data", "--listen-client-urls", url,
            "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "bench=http://127.0.0.1:2380"), stdout=log, stderr=subprocess.STDOUT)
    sb.on_cleanup("stop etcd", lambda: _stop(etcd))
    nodes[0].run(Path(ctx.pyctr.binary).parent / "python", "-c", ETCD_READY, url, timeout=30)

    for n in nodes:
        n.pyctr.root.mkdir(parents=True)
        (n.pyctr.root / "images").symlink_to(ctx.pyctr.root / "images")  # the bench's pulled Alpine
    sb.on_cleanup("the policy cluster's containers, network and nodes", lambda: _tear_down(nodes))
    for n in nodes:
        n.pyctr_run("node", "start", "--name", n.name, "--address", n.address)
    for n in nodes:
        n.pyctr_run("network", "create", "--driver", "routed", "--subnet", POOL, "--block-size", "28", NETWORK)
    containers = {}
    for role, n in (("web", nodes[0]), ("db", nodes[1])):
        cid = n.pyctr_run("run", "-d", "--network", NETWORK, "--label", f"app={role}", "alpine",
                          "sleep", "1000000").stdout.strip().splitlines()[-1]
        containers[role] = {"id": cid, "pid": n.pyctr.pid_of(cid),
                            "ip": n.pyctr_run("inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid).stdout.strip()}
    server = subprocess.Popen(["nsenter", f"--net=/proc/{containers['db']['pid']}/ns/net", "iperf3", "-s",
                               "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sb.on_cleanup("stop the iperf3 server", lambda: _stop(server))
    _wait(lambda: _iperf(containers, ["-n", "64K"]) is not None, 30,
          lambda: f"iperf3 from web to db: {getattr(_iperf, 'last_error', '')}")
    return nodes, containers


def _spread_runs(ctx, nodes: list[Node], spread: Series, applies: list) -> None:
    path = ctx.sandbox.dir / "policy" / "change.yaml"
    for r in range(1 + ctx.runs):  # one warm-up
        port = 10000 + r
        path.write_text(CHANGING.format(port=port))
        # A run lasts about one poll period of the agents: without a random pause, every apply
        # would fall at the same moment of their polls, and measure one phase only.
        time.sleep(random.uniform(0, AGENT_POLL_SECONDS))
        started = time.perf_counter()
        apply = subprocess.Popen(nodes[0].argv(*nodes[0].pyctr.cmd("network", "policy", "apply", NETWORK,
                                                                   "-f", path)),
                                 env=nodes[0].pyctr.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        waiting, returned, everywhere = list(nodes), None, None
        while everywhere is None or returned is None:
            now = time.perf_counter()
            if returned is None and apply.poll() is not None:
                returned = now
                if apply.returncode != 0:
                    raise CommandFailed(f"policy apply: {apply.stderr.read().decode().strip()[:160]}")
            if everywhere is None:
                waiting = [n for n in waiting if f"dport {port} accept" not in n.table()]
                everywhere = now if not waiting else None
            if now > started + 10:
                apply.kill()
                apply.wait()
                raise TimeoutError(f"policy change not on {', '.join(n.name for n in waiting)} after 10 s")
            time.sleep(POLL_SECONDS)
        if r:
            spread.samples.append((everywhere - started) * 1000)
            applies.append(round((returned - started) * 1000, 1))
    nodes[0].pyctr_run("network", "policy", "rm", NETWORK, "bench-change")
    _wait(lambda: all(TABLE not in n.run("nft", "list", "tables").stdout for n in nodes), 10,
          "a table stayed after the last policy went")


def _throughput_runs(ctx, nodes, containers, loss: Series, without: Series, with_policy: Series,
                     rounds_losses: list) -> None:
    path = ctx.sandbox.dir / "policy" / "iperf.yaml"
    path.write_text(BOTH_SELECTED)
    seconds = 1 if ctx.runs <= 3 else 2
    rounds = ctx.runs
    on = False

    def switch(policy: bool) -> None:
        nonlocal on
        if policy == on:
            return
        if policy:
            nodes[0].pyctr_run("network", "policy", "apply", NETWORK, "-f", path)
        else:
            nodes[0].pyctr_run("network", "policy", "rm", NETWORK, "bench-iperf")
        # Until both containers' nodes hold (or dropped) their chains.
        _wait(lambda: all(("chain policy-bench-iperf-ingress" in n.table()) == policy for n in nodes[:2]),
              10, "the policy did not reach node1 and node2")
        on = policy

    for r in range(rounds):
        got = {}
        for policy in ((False, True) if r % 2 == 0 else (True, False)):
            switch(policy)
            rate = _iperf(containers, ["-t", str(seconds)])
            if rate is None:
                raise CommandFailed(f"iperf3 failed {'with' if policy else 'without'} the policy")
            got[policy] = rate
        without.samples.append(got[False])
        with_policy.samples.append(got[True])
        rounds_losses.append(round((1 - got[True] / got[False]) * 100, 2))
    switch(False)
    # The figure compares the medians of the two sides. Other work on the machine takes whole
    # seconds of CPU from iperf3 (client, server and the softirqs fill both CPUs), so it hits one
    # side of a round, not both: a round's own ratio is mostly that noise, while each side's
    # median leaves the hit rounds out. The rounds' losses are in the JSON.
    loss.samples.append((1 - with_policy.median / without.median) * 100)


def _iperf(containers, length: list[str]) -> float | None:
    """Gbit/s received by the server, or None when the client failed. `length`: iperf3's -t
    SECONDS or -n BYTES."""
    p = subprocess.run(["nsenter", f"--net=/proc/{containers['web']['pid']}/ns/net", "iperf3", "-c",
                        containers["db"]["ip"], "-p", str(IPERF_PORT), *length, "-J",
                        "--connect-timeout", "1000"], capture_output=True, text=True, timeout=60)
    try:
        received = json.loads(p.stdout)["end"]["sum_received"]
    except (ValueError, KeyError):  # no JSON, or iperf3's {"error": ...}
        received = None
    if p.returncode != 0 or received is None:
        _iperf.last_error = (p.stdout + p.stderr).strip()[-300:]
        return None
    return received["bits_per_second"] / 1e9


def _wait(check, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what() if callable(what) else what)
        time.sleep(0.05)


def _tear_down(nodes: list[Node]) -> None:
    """Containers, then the network, then the node, on each node, all inside the node's
    namespace; every step tried. Then whatever of theirs still runs is killed, and said."""
    problems = []
    for n in nodes:
        steps = [("network", "rm", NETWORK), ("node", "stop")]
        try:
            ids = n.pyctr_run("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                steps.insert(0, ("rm", "-f", *ids))
        except CommandFailed as e:
            problems.append(f"{n.name}: ps: {e}")
        for args in steps:
            try:
                n.pyctr_run(*args, timeout=120)
            except CommandFailed as e:
                if "no such network" not in str(e) and "no pyctr node runs" not in str(e):
                    problems.append(f"{n.name}: {' '.join(args[:2])}: {e}")
    deadline = time.monotonic() + LINGER
    while (left := [pid for n in nodes for pid in n.pyctr.own_pids()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        procs.kill(left)
        problems.append(f"{len(left)} pyctr processes of the nodes still running: killed")
    if problems:
        raise RuntimeError("; ".join(problems))


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
