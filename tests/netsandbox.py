"""A sandbox of network namespaces for pyctr's network tests: the walk-through's cluster.

    upstream (203.0.113.1) ── head (203.0.113.254 | 10.141.255.254) ─┐
                                                 fabric: bridge br0 ─┼── node1 10.141.0.1
                                                                     └── node2 10.141.0.2

Every namespace is named pyctr-t-<random>-<role>, and every command runs through
`nsenter --net=/run/netns/NAME` into one of them: nothing here touches the machine's own network
namespace. Not `ip netns exec`: it remounts /sys, which hides the cgroup hierarchy from pyctr.
Kernel parameters are written through /proc/sys by a shell inside the namespace (/proc/sys/net
shows the netns of the process that opens it), so procps' `sysctl` is not needed.
close() removes pyctr's containers, then the processes it started, the cgroups and mounts left
under its containers, the namespaces (with their links, routes and nftables) and the folder
itself, in that order, whatever happened before.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the bench's helpers for /run/netns
from bench.sandbox import ETCD_WAIT_READY, NETNS_DIR, NetnsDirState, release_netns_dir  # noqa: E402
PYTHON = sys.executable
NETNS_PREFIX = "pyctr-t-"
UNDERLAY = "10.141.0.0/16"
HEAD_UNDERLAY_IP = "10.141.255.254"
HEAD_UPSTREAM_IP = "203.0.113.254"
UPSTREAM_IP = "203.0.113.1"


def run(argv: list, check: bool = True, timeout: float = 60, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    # Output goes through files, not pipes: a detached container's monitor may keep inherited
    # descriptors open, and a pipe would then never reach end-of-file.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        completed = subprocess.run([str(a) for a in argv], stdout=out, stderr=err, text=True,
                                   timeout=timeout, input=input, env=env)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(completed.args, completed.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


class Netns:
    def __init__(self, sandbox: "Sandbox", name: str):
        self.sandbox = sandbox
        self.name = name

    def run(self, *argv, check: bool = True, timeout: float = 60, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        return run([*self.enter, *argv], check=check, timeout=timeout, input=input, env=env)

    @property
    def enter(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def sh(self, command: str, check: bool = True) -> str:
        return self.run("sh", "-c", command, check=check).stdout

    def spawn(self, *argv, **kwargs) -> subprocess.Popen:
        return self.sandbox.spawn([*self.enter, *argv], **kwargs)

    def write_sysctl(self, key: str, value: object) -> None:
        """e.g. ("net.ipv4.ip_forward", 1), written by a shell inside this netns."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run("sh", "-c", f"echo {value} > {path}")

    def nft(self, script: str) -> None:
        self.run("nft", "-f", "-", input=script)

    def counter(self, name: str) -> int:
        """Packets seen by a named counter of the sandbox's own `table ip watch`."""
        out = self.run("nft", "-j", "list", "counter", "ip", "watch", name).stdout
        return next(item["counter"]["packets"] for item in json.loads(out)["nftables"]
                    if "counter" in item)

    def netstat(self, field: str) -> int:
        """A TcpExt/IpExt counter of this netns, e.g. IPReversePathFilter."""
        lines = self.run("cat", "/proc/net/netstat").stdout.splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            keys, vals = names.split()[1:], values.split()[1:]
            if field in keys:
                return int(vals[keys.index(field)])
        raise KeyError(field)

    def snapshot(self) -> dict:
        """Links, routes and nftables of this netns, for before/after comparisons."""
        return {
            "links": sorted(self.sh("ip -o link show | awk -F': ' '{print $2}'").split()),
            "routes": sorted(self.run("ip", "-4", "route", "show", "table", "all").stdout.splitlines()),
            "nft": self.run("nft", "list", "ruleset").stdout,
        }


class Node(Netns):
    """A namespace where pyctr runs, with its own --root and --state."""

    def __init__(self, sandbox: "Sandbox", name: str, images: Path | None):
        super().__init__(sandbox, name)
        self.root = sandbox.dir / name / "root"
        self.state = sandbox.dir / name / "state"
        self.root.mkdir(parents=True)
        self.state.mkdir(parents=True)
        self.extra_env: dict[str, str] = {}  # e.g. PYCTR_NODE_NAME: the nodes share one host name
        if images is not None:
            (self.root / "images").symlink_to(images)

    @property
    def env(self) -> dict:
        return {**os.environ, "PYCTR_ROOT": str(self.root), "PYCTR_STATE": str(self.state),
                **self.extra_env}

    def pyctr(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(PYTHON, "-m", "pyctr.runtime", *args, check=check, timeout=timeout, env=self.env)

    def pyctr_spawn(self, *args) -> subprocess.Popen:
        """pyctr in the background; its output goes to files (see run()): read_output()."""
        out = tempfile.TemporaryFile("w+")
        err = tempfile.TemporaryFile("w+")
        process = self.spawn(PYTHON, "-m", "pyctr.runtime", *args, env=self.env, stdout=out, stderr=err)
        process.output_files = (out, err)
        return process


    def start(self, *args) -> str:
        """`pyctr run -d ARGS` → the container's ID."""
        return self.pyctr("run", "-d", *args).stdout.strip().splitlines()[-1]

    def inspect(self, container: str, template: str) -> str:
        return self.pyctr("inspect", "-f", template, container).stdout.strip()

    def ip_of(self, container: str) -> str:
        return self.inspect(container, "{{.NetworkSettings.IPAddress}}")

    def exec(self, container: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.pyctr("exec", container, "sh", "-c", command, check=check)

    def remove_all_containers(self) -> None:
        ids = self.pyctr("ps", "-aq", "--no-trunc", check=False).stdout.split()
        if ids:
            self.pyctr("rm", "-f", *ids, check=False, timeout=120)

    def pyctr_files(self) -> dict:
        """The network definitions and IPAM files, with their contents (lock files aside)."""
        base = self.root / "networks"
        return {str(p.relative_to(base)): p.read_text() for p in sorted(base.rglob("*"))
                if p.is_file() and not p.name.endswith(".lock") and p.name != ".lock"} if base.exists() else {}


class Sandbox:
    def __init__(self):
        self.tag = secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{NETNS_PREFIX}{self.tag}-"))
        self.namespaces: list[Netns] = []
        self.processes: list[subprocess.Popen] = []
        # `ip netns add` bind-mounts /run/netns on itself when /run is not shared: undone at close
        # when it was not there before and no other namespaces live in it.
        self._netns_dir_before = NetnsDirState.of(NETNS_DIR)

    def _create(self, ns: Netns) -> Netns:
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def netns(self, role: str) -> Netns:
        return self._create(Netns(self, f"{NETNS_PREFIX}{self.tag}-{role}"))

    def node(self, role: str, images: Path | None = None) -> Node:
        return self._create(Node(self, f"{NETNS_PREFIX}{self.tag}-{role}", images))

    def spawn(self, argv: list, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        process = subprocess.Popen([str(a) for a in argv], start_new_session=True, text=True, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            if isinstance(ns, Node):
                with contextlib.suppress(Exception):
                    ns.remove_all_containers()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the session each was started in
            with contextlib.suppress(Exception):
                process.wait(timeout=5)
        self._kill_containers_left()
        self._remove_cgroups_left()
        self._unmount_under_dir()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns.name], check=False)
        release_netns_dir(NETNS_DIR, self._netns_dir_before)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_containers_left(self) -> None:
        # A container whose `rm -f` failed: every process in its cgroups, as `runc kill --all`
        # (its /proc/PID/root reads "/" after pivot_root: its root folder cannot find it).
        for pid in pids_in_cgroups(self._container_cgroups_left()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _remove_cgroups_left(self) -> None:
        # Those containers' cgroups, empty once their processes are dead.
        for cgroup in self._container_cgroups_left():
            remove_cgroup_tree(cgroup)

    def _container_cgroups_left(self) -> list[Path]:
        """The cgroups, in every hierarchy, of the containers our nodes still have records of."""
        ids = {p.name for ns in self.namespaces if isinstance(ns, Node)
               for p in (ns.root / "containers").glob("*") if p.is_dir()}
        if not ids:
            return []
        return [hierarchy / "pyctr" / cid for hierarchy in cgroup_hierarchies() for cid in ids
                if (hierarchy / "pyctr" / cid).is_dir()]

    def _unmount_under_dir(self) -> None:
        prefix = str(self.dir) + "/"
        with open("/proc/self/mounts") as f:
            targets = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
        for target in sorted(targets, key=len, reverse=True):
            run(["umount", "-l", target], check=False)


def link(a: Netns, a_ifname: str, b: Netns, b_ifname: str) -> None:
    """A veth between two sandbox namespaces, created inside `a`."""
    a.run("ip", "link", "add", a_ifname, "type", "veth", "peer", "name", b_ifname, "netns", b.name)


def build_cluster(sandbox: Sandbox, images: Path | None, nodes: int = 2, head_node: bool = False) -> dict:
    """fabric, node1…nodeN (10.141.0.N), head and upstream, wired and addressed as in the
    walk-through. With `head_node`, the head is a pyctr Node too (a gateway node, which NATs the
    cluster's pool itself): the sandbox's own NAT on the head then covers only the underlay."""
    fabric = sandbox.netns("fabric")
    fabric.run("ip", "link", "add", "br0", "type", "bridge")
    fabric.run("ip", "link", "set", "br0", "up")
    members = {f"node{i}": sandbox.node(f"node{i}", images) for i in range(1, nodes + 1)}
    members["head"] = sandbox.node("head") if head_node else sandbox.netns("head")
    addresses = {f"node{i}": f"10.141.0.{i}" for i in range(1, nodes + 1)} | {"head": HEAD_UNDERLAY_IP}
    for role, ns in members.items():
        link(fabric, f"p-{role}", ns, "eth0")
        fabric.run("ip", "link", "set", f"p-{role}", "master", "br0", "up")
        ns.run("ip", "addr", "add", f"{addresses[role]}/16", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        if role != "head":
            ns.run("ip", "route", "add", "default", "via", HEAD_UNDERLAY_IP)
    head, upstream = members["head"], sandbox.netns("upstream")
    link(head, "up0", upstream, "eth0")
    head.run("ip", "addr", "add", f"{HEAD_UPSTREAM_IP}/24", "dev", "up0")
    head.run("ip", "link", "set", "up0", "up")
    upstream.run("ip", "addr", "add", f"{UPSTREAM_IP}/24", "dev", "eth0")
    upstream.run("ip", "link", "set", "eth0", "up")
    # The "internet" knows the way back to the nodes' addresses (for published ports).
    upstream.run("ip", "route", "add", UNDERLAY, "via", HEAD_UPSTREAM_IP)
    head.write_sysctl("net.ipv4.ip_forward", 1)
    sources = UNDERLAY if head_node else f"{UNDERLAY}, 172.19.0.0/16"
    head.nft(f"""
        add table ip masq
        add chain ip masq postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
        add rule ip masq postrouting oifname "up0" ip saddr {{ {sources} }} masquerade
    """)
    return {**members, "fabric": fabric, "upstream": upstream}


def add_watch_counters(ns: Netns, counters: dict[str, str]) -> None:
    """Named counters in the sandbox's own `table ip watch`, counting forwarded packets that
    match, e.g. {"from_node1": "ip saddr 10.141.0.1"}; read them with ns.counter(name)."""
    lines = ["add table ip watch",
             "add chain ip watch forward { type filter hook forward priority -10; policy accept; }",
             "add chain ip watch prerouting { type filter hook prerouting priority -310; policy accept; }"]
    for name, match in counters.items():
        chain = "prerouting" if name.startswith("pre_") else "forward"
        lines.append(f"add counter ip watch {name}")
        lines.append(f"add rule ip watch {chain} {match} counter name {name}")
    ns.nft("\n".join(lines) + "\n")


PEER_SERVER = r"""
import http.server, sys
class Peer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Peer).serve_forever()
"""


def start_peer_server(ns: Netns, address: str, port: int) -> subprocess.Popen:
    """An HTTP server in `ns` whose answer is the client address it saw (`wget -qO- URL`)."""
    process = ns.spawn(PYTHON, "-c", PEER_SERVER, address, port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ns.run("sh", "-c", f"ss -ltn | grep -q '{address}:{port} '", check=False).returncode == 0:
            return process
        time.sleep(0.05)
    raise AssertionError(f"peer server on {address}:{port} did not start")


# A TCP server inside an Alpine container: `nc -lv` logs "… from … ([::ffff:IP]:PORT)".
CONTAINER_PEER_SERVER = "while true; do nc -lvn -p {port} -e echo pong; done"
_PEER_IN_LOG = re.compile(r"from \S*?\[?(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)\]?:\d+")


def peers_in_log(text: str) -> list[str]:
    return _PEER_IN_LOG.findall(text)


TCP_READ = "import socket, sys; print(socket.create_connection((sys.argv[1], int(sys.argv[2])), 3).recv(100).decode())"


def tcp_read(ns: Netns, address: str, port: int, check: bool = True) -> subprocess.CompletedProcess:
    """Connect from `ns` with the host's Python and return what the server sends first."""
    return ns.run(PYTHON, "-c", TCP_READ, address, port, check=check, timeout=10)


def fails_in_one_line(result, *words) -> str:
    """pyctr's user error: exit 125 and one line on stderr holding every one of `words`."""
    assert result.returncode == 125, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def not_one_line_errors(node, cases) -> list[str]:
    """Of `cases` ([(argv, expected words)]), run by `node`, those that did not fail as a user
    error should: exit 125 and one line "Error: …" holding the words. All are run, and reported
    together."""
    failures = []
    for argv, expected in cases:
        result = node.pyctr(*argv, check=False)
        lines = result.stderr.strip().splitlines()
        if not (result.returncode == 125 and len(lines) == 1 and lines[0].startswith("Error:")
                and expected in lines[0]):
            failures.append(f"{argv}: exit {result.returncode}, stderr {result.stderr!r}")
    return failures


def eventually(check, timeout: float = 10, interval: float = 0.1):
    """Retry `check` (a callable that returns a truthy value or raises) until it succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, subprocess.SubprocessError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@contextlib.contextmanager
def alpine_mirror():
    """The shared Alpine mirror over HTTP on loopback (a thread of this process)."""
    from conftest import SHARED_MIRROR, _serve

    server, url = _serve(SHARED_MIRROR.resolve())
    try:
        yield f"{url}/alpine"
    finally:
        server.shutdown()
        server.server_close()


def pull_alpine(images_root: Path) -> Path:
    """Pull alpine once, in this (the host's) namespace, from the local mirror; returns the
    images folder the nodes share."""
    env = {**os.environ, "PYCTR_ROOT": str(images_root), "PYCTR_STATE": str(images_root / "state")}
    if (REPO.parent / "shared" / "alpine-mirror").is_dir():
        with alpine_mirror() as url:
            env["PYCTR_ALPINE_MIRROR"] = url
            run([PYTHON, "-m", "pyctr.runtime", "pull", "alpine"], env=env, timeout=300)
    else:  # conftest's alpine_mirror has set PYCTR_ALPINE_MIRROR, or stopped the run
        run([PYTHON, "-m", "pyctr.runtime", "pull", "alpine"], env=env, timeout=300)
    return images_root / "images"


def read_output(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    process.wait(timeout=timeout)
    texts = []
    for f in process.output_files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return process.returncode, texts[0], texts[1]


def cgroup_hierarchies() -> list[Path]:
    """Every cgroup hierarchy mounted here (v1, hybrid or v2)."""
    with open("/proc/self/mountinfo") as f:
        return [Path(line.split()[4]) for line in f if " - cgroup" in line]


def pids_in_cgroups(cgroups: list[Path]) -> list[int]:
    """The processes in these cgroups and in every cgroup below them."""
    pids = set()
    for cgroup in cgroups:
        for procs in cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in procs.read_text().split())
    return sorted(pids)


def remove_cgroup_tree(top: Path) -> None:
    """rmdir bottom-up (cgroup folders never go with rm -r); a cgroup whose last process is
    still dying is busy for a moment."""
    if not top.is_dir():
        return
    deadline = time.monotonic() + 5
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                       reverse=True) + [top]:
        while path.exists():
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)


# What the tests read etcd with: its JSON gateway, straight (not pyctr's own client).
ETCD_READ_KEYS = """
import base64, json, sys, requests
b64 = lambda s: base64.b64encode(s.encode()).decode()
reply = requests.post(sys.argv[1] + "/v3/kv/range", json={"key": b64("/pyctr/"), "range_end": b64("/pyctr0")},
                      timeout=5).json()
print(json.dumps({base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
                  for kv in reply.get("kvs", [])}))
"""


# Written or deleted straight through etcd's JSON gateway: as another node, or a person with
# etcdctl, would write them.
ETCD_PUT = """
import base64, sys, requests
b64 = lambda s: base64.b64encode(s.encode()).decode()
requests.post(sys.argv[1] + "/v3/kv/put", json={"key": b64(sys.argv[2]), "value": b64(sys.argv[3])},
              timeout=5).raise_for_status()
"""
ETCD_DELETE = """
import base64, sys, requests
requests.post(sys.argv[1] + "/v3/kv/deleterange", json={"key": base64.b64encode(sys.argv[2].encode()).decode()},
              timeout=5).raise_for_status()
"""


def etcd_put(ns: Netns, client_url: str, key: str, doc) -> None:
    """`doc` as JSON; a str is put as it is (a value that is not JSON, as etcdctl can put)."""
    ns.run(PYTHON, "-c", ETCD_PUT, client_url, key, doc if isinstance(doc, str) else json.dumps(doc))


def etcd_delete(ns: Netns, client_url: str, key: str) -> None:
    ns.run(PYTHON, "-c", ETCD_DELETE, client_url, key)


def etcd_keys(ns: Netns, client_url: str) -> dict:
    """Every /pyctr/ key in the etcd at `client_url` (reached from `ns`), with its JSON document."""
    return json.loads(ns.run(PYTHON, "-c", ETCD_READ_KEYS, client_url).stdout)


def start_etcd(ns: Netns, data_dir: Path, client_url: str) -> subprocess.Popen:
    """A private etcd in `ns`, with its own data folder, serving `client_url`; returns once it
    answers. It is one of the sandbox's processes (close() kills it)."""
    with open(data_dir.parent / "etcd.log", "w") as log:
        etcd = ns.spawn("etcd", "--name", "pyctr-test", "--data-dir", data_dir,
                        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                        "--listen-peer-urls", "http://127.0.0.1:2380",
                        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                        "--initial-cluster", "pyctr-test=http://127.0.0.1:2380",
                        stdout=log, stderr=subprocess.STDOUT)
    ns.run(PYTHON, "-c", ETCD_WAIT_READY, client_url)
    return etcd
