"""The cluster rows (issue 12's scale): how soon a block that one node claims is routed by every
other node, over BGP, for N nodes; and what a container start costs etcd.

For each N (3, 10, 20; 3 in --quick) the bench builds, in namespaces of its own (nothing in the
host's): a fabric namespace with a bridge, the underlay 10.99.0.0/16; etcd in a namespace of its
own on it (10.99.255.254, its data in the work directory); and N node namespaces (10.99.0.1 …),
each a pyctr node (`pyctr node start`: BIRD and the node agent) with its own root and state, the
bench's Alpine image shared. Every node joins one cluster network (`network create --driver
routed --datastore …`). Once the full mesh is Established, each sample is:

  - `pyctr run -d` on one node (in turn) that holds no block: its start claims one in etcd;
  - convergence: from the moment etcd has the block's key (an etcd watch on /pyctr/blocks/ in
    etcd's namespace stamps it) to the moment the last of the N − 1 other nodes has the route
    `BLOCK via NODE_IP … proto bird` in its main table (`ip -ts monitor route` in each node's
    namespace stamps it, as the kernel announces it);
  - then `rm -f` and `network rm` on that node (its block is freed), until every other node has
    withdrawn the route, and `network create` again.

etcd requests per container start are read from etcd's own metrics (grpc_server_started_total of
the KV service, by method), around one `pyctr run -d` on a node that already holds a block with
room. No node agent runs yet then: an agent's own reads of etcd would blur the count.
"""

import json
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

from bench.measure import CommandFailed, Series, run
from bench.pyctr_cli import Pyctr
from bench.rows import Row
from bench.sandbox import ETCD_WAIT_READY, delete_netns

NETWORK = "benchcluster"
POOL = "172.19.0.0/16"  # only ever exists inside the bench's node namespaces
BLOCK_SIZE = 26
UNDERLAY_PREFIX = "10.99.0."
ETCD_IP = "10.99.255.254"
ETCD_URL = f"http://{ETCD_IP}:2379"
DATASTORE = f"etcd://{ETCD_IP}:2379"
CONVERGENCE_BUDGET_MS = 1000.0
BUDGET_AT = 20  # the goal: 1 s at N = 20
MAX_SAMPLES = 10  # per N (the full bench's 20 runs would add minutes and say little more)
WAIT = 30.0  # seconds a route, a key or a mesh may take before the sample counts as failed
MESH_WAIT = 90.0
STARTS_AT_ONCE = 5  # `node start`s run side by side (each waits for its BIRD)
SLEEP = ("sleep", "1000000")

# An etcd watch through its JSON gateway: one line "TIME TYPE KEY" per event, stamped as it
# arrives (a line "created" first, once the watch is in place).
WATCH = """
import base64, json, sys, time, requests
b64 = lambda s: base64.b64encode(s.encode()).decode()
prefix = sys.argv[2]
end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
request = {"create_request": {"key": b64(prefix), "range_end": b64(end)}}
with requests.post(sys.argv[1] + "/v3/watch", json=request, stream=True, timeout=(5, None)) as reply:
    for line in reply.iter_lines():
        now = time.time()
        result = json.loads(line).get("result", {})
        if result.get("created"):
            print("created", flush=True)
        for event in result.get("events", []):
            key = base64.b64decode(event["kv"]["key"]).decode()
            print(f"{now:.6f} {event.get('type', 'PUT')} {key}", flush=True)
"""
# etcd's own count of key-value requests, by method (Range, Txn, Put, DeleteRange).
KV_REQUESTS = """
import json, re, sys, requests
text = requests.get(sys.argv[1] + "/metrics", timeout=5).text
found = re.findall(r'^grpc_server_started_total{grpc_method="(\\w+)",grpc_service="etcdserverpb.KV".*} (\\d+)', text, re.M)
print(json.dumps({method: int(count) for method, count in found}))
"""


def cluster(ctx) -> list[Row]:
    rows = []
    ops = None
    for n in ctx.cluster_sizes:
        scenario = f"cluster N={n}"
        samples = Series("pyctr")
        extra: dict = {}
        try:
            with Cluster(ctx, n) as c:
                if ops is None:
                    ops = c.etcd_requests_per_start()
                c.start_nodes()
                samples, extra = c.convergence(min(ctx.runs, MAX_SAMPLES))
        except CommandFailed as e:
            samples.error = f"failed: {e}"
        rows.append(Row(f"cluster-{n}-converge", scenario, "a node's new block routed by every other node (BGP)",
                        samples, budget=CONVERGENCE_BUDGET_MS if n == BUDGET_AT else None,
                        budget_on_figure=True, extra=extra))
    if ops is not None:
        rows.append(ops)
    return rows


class Cluster:
    """N pyctr nodes and an etcd in the bench's namespaces, undone when the `with` ends (and, as
    a safety, by the sandbox's clean-up)."""

    def __init__(self, ctx, size: int):
        self.ctx = ctx
        self.size = size
        self.sb = ctx.sandbox
        self.dir = self.sb.dir / f"cluster-{size}"
        self._undo: list = []
        self.nodes: list[Node] = []
        self.watch: Lines | None = None
        self.monitors: list[Lines] = []
        self.etcd_ns = ""

    def __enter__(self) -> "Cluster":
        self.sb.on_cleanup(f"cluster of {self.size}", self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        while self._undo:
            what, step = self._undo.pop()
            try:
                step()
            except Exception as e:
                self.sb.problems.append(f"cluster of {self.size}: {what}: {e}")

    def _on_close(self, what: str, step) -> None:
        self._undo.append((what, step))

    def _netns(self, role: str) -> str:
        name = self.sb.add_netns(f"c{self.size}-{role}")
        self._on_close(f"delete netns {name}", lambda: delete_netns(name))
        return name

    # -- building it -----------------------------------------------------------------------

    def _build(self) -> None:
        self.dir.mkdir()
        fabric = self._netns("fabric")
        _ip(fabric, "link", "add", "br0", "type", "bridge")
        _ip(fabric, "link", "set", "br0", "up")
        self.etcd_ns = self._netns("etcd")
        self._wire(fabric, "etcd", self.etcd_ns, ETCD_IP)
        self._start_etcd()
        images = self.ctx.pyctr.root / "images"
        for i in range(1, self.size + 1):
            ns = self._netns(f"node{i}")
            address = f"{UNDERLAY_PREFIX}{i}"
            self._wire(fabric, f"node{i}", ns, address)
            node = Node(self.dir / f"node{i}", images, ns, f"node{i}", address, self.ctx.pyctr.binary)
            self.nodes.append(node)
            self._on_close(f"node{i}'s containers", lambda node=node: self.sb.problems.extend(node.cleanup()))
        for node in self.nodes:
            self._create_network(node)
        self._on_close("network rm", self._leave_network)
        self.watch = self._spawn_lines("etcd watch", self.etcd_ns, self.ctx.pyctr.python, "-c", WATCH, ETCD_URL,
                                       f"/pyctr/blocks/{NETWORK}/")
        self.watch.wait_for(lambda line: line == "created", 0, WAIT)
        for node in self.nodes:
            self.monitors.append(self._spawn_lines(f"{node.name}'s routes", node.netns,
                                                   "ip", "-ts", "monitor", "route"))

    def _wire(self, fabric: str, role: str, ns: str, address: str) -> None:
        _ip(fabric, "link", "add", f"p-{role}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip(fabric, "link", "set", f"p-{role}", "master", "br0", "up")
        _ip(ns, "addr", "add", f"{address}/16", "dev", "eth0")
        _ip(ns, "link", "set", "eth0", "up")

    def _start_etcd(self) -> None:
        data = self.dir / "etcd-data"
        with open(self.dir / "etcd.log", "w") as log:
            try:
                etcd = subprocess.Popen(
                    _in(self.etcd_ns, "etcd", "--name", "pyctr-bench", "--data-dir", str(data),
                        "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
                        "--listen-peer-urls", "http://127.0.0.1:2380",
                        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                        "--initial-cluster", "pyctr-bench=http://127.0.0.1:2380"),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            except FileNotFoundError:
                raise CommandFailed("etcd: not installed (Debian's etcd-server)") from None
        self._on_close("etcd", lambda: _stop(etcd))
        run(_in(self.etcd_ns, self.ctx.pyctr.python, "-c", ETCD_WAIT_READY, ETCD_URL))

    def _spawn_lines(self, what: str, ns: str, *argv: str) -> "Lines":
        lines = Lines(subprocess.Popen(_in(ns, *argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True, bufsize=1))
        self._on_close(what, lines.stop)
        return lines

    def start_nodes(self) -> None:
        """`pyctr node start` on every node, a few at a time; then wait for the full mesh."""
        self._on_close("node stop", self._stop_nodes)
        for first in range(0, self.size, STARTS_AT_ONCE):
            batch = [(node, subprocess.Popen(node.cmd("node", "start", "--name", node.name, "--address", node.address),
                                             env=node.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, text=True))
                     for node in self.nodes[first:first + STARTS_AT_ONCE]]
            for node, p in batch:
                _, err = p.communicate(timeout=60)
                if p.returncode != 0:
                    raise CommandFailed(f"{node.name}: node start: {err.strip()[:120]}")
        deadline = time.monotonic() + MESH_WAIT
        waiting = list(self.nodes)
        while waiting:
            waiting = [node for node in waiting if node.established() < self.size - 1]
            if waiting and time.monotonic() > deadline:
                raise CommandFailed(f"the mesh of {self.size} did not come up in {MESH_WAIT:.0f}s "
                                    f"({waiting[0].name}: {waiting[0].established()} sessions Established)")
            time.sleep(0.2)

    def _stop_nodes(self) -> None:
        stops = [subprocess.Popen(node.cmd("node", "stop"), env=node.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for node in self.nodes]
        for p in stops:
            p.wait(timeout=60)

    def _leave_network(self) -> None:
        for node in self.nodes:
            node.remove(node.container_ids())
            subprocess.run(node.cmd("network", "rm", NETWORK), env=node.env, capture_output=True, timeout=60)

    # -- the figures ----------------------------------------------------------------------

    def etcd_requests_per_start(self) -> Row:
        """KV requests to etcd around one start on node1, which holds a block with room."""
        node = self.nodes[0]
        title = "etcd requests per container start, the node holding a block (one Txn)"
        try:
            ids = [node.run_detached(*SLEEP, network=NETWORK)]  # claims node1's block
            before = self._kv_requests()
            ids.append(node.run_detached(*SLEEP, network=NETWORK))
            after = self._kv_requests()
            node.remove(ids)
        except CommandFailed as e:
            return Row("cluster-etcd-requests", "cluster", title, Series("pyctr", "requests", error=f"failed: {e}"),
                       budget=1, budget_on_figure=True)
        # A node that holds no block claims its first in each convergence sample: node1 too.
        run(node.cmd("network", "rm", NETWORK), node.env)
        self._create_network(node)
        by_method = {m: after[m] - before.get(m, 0) for m in after if after[m] != before.get(m, 0)}
        return Row("cluster-etcd-requests", "cluster", title,
                   Series("pyctr", "requests", [sum(by_method.values())]),
                   budget=1, budget_on_figure=True, extra={"by_method": by_method})

    def _kv_requests(self) -> dict:
        return json.loads(run(_in(self.etcd_ns, self.ctx.pyctr.python, "-c", KV_REQUESTS, ETCD_URL)).stdout)

    def convergence(self, samples: int) -> tuple[Series, dict]:
        series = Series("pyctr")
        detail = []
        for i in range(samples):
            k = i % self.size
            try:
                ms, info = self._one_sample(k)
            except CommandFailed as e:
                series.error = f"failed: sample {i + 1} on node{k + 1}: {e}"
                break
            series.samples.append(ms)
            detail.append(info)
        return series, {"samples": detail}

    def _one_sample(self, k: int) -> tuple[float, dict]:
        node = self.nodes[k]
        others = [m for j, m in enumerate(self.monitors) if j != k]
        mark_watch, marks = self.watch.mark(), [m.mark() for m in others]
        started = time.time()
        cid = node.run_detached(*SLEEP, network=NETWORK)
        returned = time.time()
        key_line = self.watch.wait_for(lambda line: line.split()[1:2] == ["PUT"], mark_watch, WAIT)
        written, _, key = key_line.split(maxsplit=2)
        block = key.rpartition(f"/pyctr/blocks/{NETWORK}/")[2]
        learned = f"{block} via {node.address} "
        arrivals = [_stamp(m.wait_for(lambda line: line.startswith("[") and _route(line).startswith(learned)
                                      and " proto bird" in line, mark, WAIT))
                    for m, mark in zip(others, marks)]
        ms = (max(arrivals) - float(written)) * 1000
        info = {"node": node.name, "block": block, "run_ms": (returned - started) * 1000,
                "key_after_run_start_ms": (float(written) - started) * 1000,
                "first_node_ms": (min(arrivals) - float(written)) * 1000, "last_node_ms": ms}
        # Undo: the block is freed, and every other node withdraws it, before the next sample.
        marks = [m.mark() for m in others]
        node.remove([cid])
        run(node.cmd("network", "rm", NETWORK), node.env)
        for m, mark in zip(others, marks):
            m.wait_for(lambda line: _route(line).startswith(f"Deleted {learned}"), mark, WAIT)
        self._create_network(node)
        return ms, info

    @staticmethod
    def _create_network(node: "Node") -> None:
        run(node.cmd("network", "create", "--driver", "routed", "--subnet", POOL, "--block-size", str(BLOCK_SIZE),
                     NETWORK), node.env)


class Node(Pyctr):
    """pyctr as one node of the cluster: every command in the node's namespace, with its own root
    and state, its node name and the datastore."""

    def __init__(self, workdir: Path, images: Path, netns: str, name: str, address: str, binary: str):
        super().__init__(workdir, binary)
        self.netns = netns
        self.name = name
        self.address = address
        self.env.update(PYCTR_NODE_NAME=name, PYCTR_DATASTORE=DATASTORE)
        self.root.mkdir(parents=True)
        (self.root / "images").symlink_to(images)

    def cmd(self, *args: str) -> list[str]:
        return _in(self.netns, self.binary, *args)

    def established(self) -> int:
        """How many of its BGP sessions are Established, as its BIRD says."""
        control = self.state / "node" / "bird.ctl"
        p = subprocess.run(["birdc", "-s", str(control), "show", "protocols"], capture_output=True, text=True,
                           timeout=10)
        return sum(1 for line in p.stdout.splitlines() if " BGP " in line and "Established" in line)


class Lines:
    """A process's output lines, read by a thread as they come."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def mark(self) -> int:
        with self.changed:
            return len(self.lines)

    def wait_for(self, match, start: int, timeout: float) -> str:
        """The first line from index `start` on that matches."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if match(line):
                        return line
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise CommandFailed(f"no such line in {timeout:.0f}s: {self.process.args[-3:]}")
                self.changed.wait(left)

    def stop(self) -> None:
        _stop(self.process)


def _route(line: str) -> str:
    """The route of an `ip -ts monitor` line, its timestamp cut off."""
    return line.partition("] ")[2]


def _stamp(line: str) -> float:
    """The timestamp of an `ip -ts monitor` line ([2026-11-28T11:13:29.265682], local time)."""
    return datetime.strptime(line[1:line.index("]")], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def _in(netns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns}", *map(str, argv)]


def _ip(netns: str, *args: str) -> None:
    run(["ip", "-n", netns, *args])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
