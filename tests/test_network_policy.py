"""Issue 14 on one host: labels, Kubernetes-shaped network policies, and their nftables
enforcement, with real containers and real packets (busybox nc from Alpine) in a sandbox
network namespace (netsandbox.py), on both the bridge and the routed driver. Nothing runs in
this machine's own netns.

Every refusal is checked twice: the client gets no answer, and the counter of the drop rule at
the end of the receiving (or sending) container's chain went up, so a server that was merely
slow cannot pass for a policy that works.
"""

import json
import re
import secrets
import shutil
import time
from types import SimpleNamespace

import pytest

from netsandbox import PYTHON, Sandbox, eventually, not_one_line_errors, pull_alpine

SLEEP = ("alpine", "sleep", "600")
NETWORKS = {"bridge": ("pb", "172.31.1.0/24"), "routed": ("pr", "172.31.2.0/24")}
# db serves TCP 5432, 8005 (in the range 8000-8010) and 9000, and UDP 5353; web serves TCP 80.
DB_SERVERS = ("for p in 5432 8005 9000; do (while true; do nc -lvn -p $p -e echo pong; done) & done; "
              "while true; do nc -lun -p 5353 -e echo pong; done")
WEB_SERVER = "while true; do nc -lvn -p 80 -e echo pong; done"


@pytest.fixture(scope="module")
def node():
    sandbox = Sandbox()
    try:
        images = pull_alpine(sandbox.dir / "images-root")
        node = sandbox.node("pol1", images)
        node.sandbox_images = images
        # An uplink with a default route, as a real node has: a routed container's gateway,
        # 169.254.1.1, is answered by proxy ARP only when the node has a route to it.
        node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        node.run("ip", "addr", "add", "10.99.0.1/24", "dev", "eth0")
        node.run("ip", "link", "set", "eth0", "up")
        node.run("ip", "link", "set", "eth0-peer", "up")
        node.run("ip", "route", "add", "default", "via", "10.99.0.2")
        # br_netfilter's namespace-wide switch off (its default is on): the bridge tests then show
        # that pyctr's per-bridge switch alone does it, and that pyctr never turns this one on.
        node.write_sysctl("net.bridge.bridge-nf-call-iptables", 0)
        yield node
    finally:
        sandbox.close()


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def scene(request, node):
    """On a network of the driver: db (app=db), web (app=web), and two unlabelled containers,
    `stranger` and `other`."""
    driver = request.param
    name, subnet = NETWORKS[driver]
    node.pyctr("network", "create", "--driver", driver, "--subnet", subnet, name)
    names = {}
    for role, labels, command in (("db", ["--label", "app=db"], ["sh", "-c", DB_SERVERS]),
                                  ("web", ["-l", "app=web", "--label", "tier=front"], ["sh", "-c", WEB_SERVER]),
                                  ("stranger", [], ["sleep", "600"]), ("other", [], ["sleep", "600"])):
        names[role] = f"{role}-{name}"
        node.start("--name", names[role], "--network", name, *labels, "alpine", *command)
    ips = {role: node.ip_of(container) for role, container in names.items()}
    scene = SimpleNamespace(node=node, driver=driver, network=name, subnet=subnet, names=names, ips=ips)
    # Everything is open before any policy: the servers answer everyone.
    for client in ("web", "stranger"):
        assert eventually_reaches(scene, client, "db", 5432)
    assert eventually_reaches(scene, "db", "web", 80)
    try:
        yield scene
    finally:
        node.pyctr("rm", "-f", *names.values(), check=False, timeout=120)
        node.pyctr("network", "rm", name, check=False)


def policy_yaml(name: str, spec: str) -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"


def apply(scene, name: str, spec: str, check: bool = True):
    path = scene.node.root.parent / f"{name}.yaml"
    path.write_text(policy_yaml(name, spec))
    return scene.node.pyctr("network", "policy", "apply", scene.network, "-f", path, check=check)


def reaches(scene, client: str, server: str, port: int, udp: bool = False) -> bool:
    address = scene.ips[server]
    command = (f"echo ping | nc -u -w1 {address} {port}" if udp else f"nc -w1 {address} {port} </dev/null")
    return "pong" in scene.node.exec(scene.names[client], command, check=False).stdout


def eventually_reaches(scene, client: str, server: str, port: int, udp: bool = False) -> bool:
    """The servers restart nc after each client: a refusal in that gap is not a policy."""
    return eventually(lambda: reaches(scene, client, server, port, udp), timeout=15)


def drops(scene, role: str, direction: str) -> int:
    """Packets counted by the drop at the end of the container's ingress or egress chain."""
    cid = scene.node.inspect(scene.names[role], "{{.Id}}")
    listed = scene.node.run("nft", "-j", "list", "chain", "inet", f"pyctr-policy-{scene.network}",
                            f"{direction}-{cid[:12]}").stdout
    rules = [item["rule"] for item in json.loads(listed)["nftables"] if "rule" in item]
    return sum(e["counter"]["packets"] for rule in rules for e in rule["expr"] if "counter" in e)


def refused(scene, client: str, server: str, port: int, udp: bool = False,
            chain: tuple[str, str] | None = None) -> bool:
    """No answer, and the drop of `chain` (role, direction; default: the server's ingress) counted it."""
    role, direction = chain or (server, "ingress")
    before = drops(scene, role, direction)
    return not reaches(scene, client, server, port, udp) and drops(scene, role, direction) > before


def remove_policies(scene) -> None:
    names = scene.node.pyctr("network", "policy", "ls", "-q", scene.network).stdout.split()
    if names:
        scene.node.pyctr("network", "policy", "rm", scene.network, *names)


@pytest.fixture
def clean(scene):
    remove_policies(scene)
    yield scene
    remove_policies(scene)


DB_FROM_WEB = """  podSelector:
    matchLabels: {app: db}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: web}
    ports:
    - port: 5432
"""


# --- one host, both drivers -----------------------------------------------------------------
def test_web_reaches_db_on_5432_and_an_unlabelled_container_cannot(clean):
    scene = clean
    apply(scene, "db-from-web", DB_FROM_WEB)
    assert eventually_reaches(scene, "web", "db", 5432)
    assert refused(scene, "stranger", "db", 5432)
    assert refused(scene, "web", "db", 9000)  # another port of db: not in the rule
    assert eventually_reaches(scene, "stranger", "web", 80)  # web is selected by nothing: open
    if scene.driver == "bridge":  # switched packets reach the inet table through this bridge's option only
        inspected = json.loads(scene.node.pyctr("network", "inspect", scene.network).stdout)[0]
        bridge = inspected["Options"]["com.docker.network.bridge.name"]
        [link] = json.loads(scene.node.run("ip", "-d", "-j", "link", "show", bridge).stdout)
        assert link["linkinfo"]["info_data"]["nf_call_iptables"] == 1
        assert scene.node.run("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").stdout.strip() == "0"


def test_db_cannot_open_a_connection_to_web_but_its_replies_pass(clean):
    scene = clean
    apply(scene, "db-from-web", DB_FROM_WEB)
    apply(scene, "db-no-egress", "  podSelector:\n    matchLabels: {app: db}\n  policyTypes: [Egress]\n")
    assert refused(scene, "db", "web", 80, chain=("db", "egress"))
    # db is isolated for egress, yet web's connection to it gets db's answer (conntrack).
    assert eventually_reaches(scene, "web", "db", 5432)
    # policyTypes as Kubernetes defaults it: Ingress, and Egress only with egress rules.
    shown = json.loads(scene.node.pyctr("network", "policy", "inspect", scene.network,
                                        "db-from-web", "db-no-egress").stdout)
    assert [p["spec"]["policyTypes"] for p in shown] == [["Ingress"], ["Egress"]]


def test_ip_block_with_except(clean):
    scene = clean
    apply(scene, "db-ipblock", f"""  podSelector:
    matchLabels: {{app: db}}
  ingress:
  - from:
    - ipBlock:
        cidr: {scene.subnet}
        except: [{scene.ips['stranger']}/32]
    ports:
    - {{protocol: TCP, port: 9000}}
""")
    assert eventually_reaches(scene, "other", "db", 9000)  # unlabelled, but in the block
    assert eventually_reaches(scene, "web", "db", 9000)
    assert refused(scene, "stranger", "db", 9000)  # the exception


def test_a_port_range_and_udp(clean):
    scene = clean
    apply(scene, "db-range-udp", """  podSelector:
    matchExpressions:
    - {key: app, operator: In, values: [db, cache]}
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: tier, operator: Exists}
    ports:
    - {protocol: TCP, port: 8000, endPort: 8010}
    - {protocol: UDP, port: 5353}
""")
    assert eventually_reaches(scene, "web", "db", 8005)
    assert eventually_reaches(scene, "web", "db", 5353, udp=True)
    assert refused(scene, "web", "db", 5432)  # TCP outside the range
    assert refused(scene, "stranger", "db", 5353, udp=True)  # no tier label


def test_removing_the_policy_opens_db_again(clean):
    scene = clean
    apply(scene, "db-from-web", DB_FROM_WEB)
    assert refused(scene, "stranger", "db", 5432)
    ls = scene.node.pyctr("network", "policy", "ls", scene.network).stdout.splitlines()
    assert ls[0].split() == ["NAME", "POD-SELECTOR", "POLICY-TYPES", "CREATED"]
    assert ls[1].split()[:3] == ["db-from-web", "app=db", "Ingress"]
    assert scene.node.pyctr("network", "policy", "rm", scene.network, "db-from-web").stdout.split() == ["db-from-web"]
    assert eventually_reaches(scene, "stranger", "db", 5432)
    # No policy, no default-deny: no table at all.
    assert f"pyctr-policy-{scene.network}" not in scene.node.run("nft", "list", "tables").stdout


def test_a_container_started_later_is_in_the_sets_and_isolated_at_once(clean):
    scene = clean
    node = scene.node
    apply(scene, "db-from-web", DB_FROM_WEB)
    late_web = f"late-web-{scene.network}"
    late_db = f"late-db-{scene.network}"
    try:
        node.start("--name", late_web, "--network", scene.network, "--label", "app=web", *SLEEP)
        node.start("--name", late_db, "--network", scene.network, "--label", "app=db", "alpine", "sh", "-c",
                   "while true; do nc -lvn -p 5432 -e echo pong; done")
        scene.names.update(late_web=late_web, late_db=late_db)
        scene.ips.update(late_web=node.ip_of(late_web), late_db=node.ip_of(late_db))
        assert eventually_reaches(scene, "late_web", "db", 5432)
        assert eventually_reaches(scene, "web", "late_db", 5432)
        assert refused(scene, "stranger", "late_db", 5432)
        node.pyctr("rm", "-f", late_web)  # leaves the set of app=web
        table = node.run("nft", "list", "table", "inet", f"pyctr-policy-{scene.network}").stdout
        assert scene.ips["late_web"] not in table and scene.ips["late_db"] in table
    finally:
        node.pyctr("rm", "-f", late_web, late_db, check=False)
        for key in ("late_web", "late_db"):
            scene.names.pop(key, None)
            scene.ips.pop(key, None)


def test_default_deny_isolates_every_container_until_a_policy_allows(scene):
    node = scene.node
    name = f"{scene.network}-deny"
    subnet = {"bridge": "172.31.3.0/24", "routed": "172.31.4.0/24"}[scene.driver]
    node.pyctr("network", "create", "--driver", scene.driver, "--subnet", subnet, "--default-deny", name)
    deny = SimpleNamespace(node=node, network=name, names={}, ips={})
    try:
        assert json.loads(node.pyctr("network", "inspect", name).stdout)[0]["Options"]["pyctr.default_deny"] == "true"
        for role, labels in (("a", ["--label", "app=a"]), ("b", ["--label", "app=b"])):
            deny.names[role] = f"{role}-{name}"
            node.start("--name", deny.names[role], "--network", name, *labels, "alpine", "sh", "-c", WEB_SERVER)
            deny.ips[role] = node.ip_of(deny.names[role])
        assert refused(deny, "a", "b", 80, chain=("a", "egress"))
        apply(deny, "b-from-a", """  podSelector:
    matchLabels: {app: b}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a}}
""")
        assert refused(deny, "a", "b", 80, chain=("a", "egress"))  # a is still isolated for egress
        apply(deny, "a-to-b", """  podSelector:
    matchLabels: {app: a}
  egress:
  - to:
    - podSelector: {matchLabels: {app: b}}
""")
        assert eventually_reaches(deny, "a", "b", 80)
        assert refused(deny, "b", "a", 80, chain=("b", "egress"))  # the other way stays closed
    finally:
        node.pyctr("rm", "-f", *deny.names.values(), check=False)
        node.pyctr("network", "rm", name, check=False)
    assert f"pyctr-policy-{name}" not in node.run("nft", "list", "tables").stdout


# --- bad input ------------------------------------------------------------------------------
BAD_POLICIES = [
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x\n", "invalid YAML"),
    (policy_yaml("x", "  podSelector: {}\n  ingres: []\n"), "spec.ingres: unknown field"),
    (policy_yaml("x", "  podSelector:\n    matchLabel: {app: db}\n"), "spec.podSelector.matchLabel: unknown field"),
    (policy_yaml("x", "  podSelector:\n    matchExpressions:\n    - {key: app, operator: Is, values: [db]}\n"),
     "operator: 'Is' is not one of"),
    (policy_yaml("x", "  podSelector:\n    matchExpressions:\n    - {key: app, operator: In}\n"),
     "In needs at least one value"),
    (policy_yaml("x", "  podSelector:\n    matchLabels: {'bad key': db}\n"), "invalid label key 'bad key'"),
    (policy_yaml("x", "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n"),
     "invalid CIDR '10.0.0.0/33'"),
    (policy_yaml("x", "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 70000}\n"), "not a port number"),
    (policy_yaml("x", "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 90, endPort: 80}\n"), "is below port 90"),
    (policy_yaml("x", "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: ICMP}\n"), "not one of TCP, UDP, SCTP"),
    (policy_yaml("Bad_Name", "  podSelector: {}\n"), "metadata.name: invalid name"),
    (policy_yaml("x", "  podSelector: {}\n  policyTypes: [Ingres]\n"), "'Ingres' is not Ingress or Egress"),
    (policy_yaml("x", "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n"), "not supported"),
]


def test_bad_input_is_one_line_exit_125_and_nothing_is_applied(node):
    node.pyctr("network", "create", "--driver", "routed", "--subnet", "172.31.5.0/24", "badnet")
    try:
        good = node.root.parent / "good.yaml"
        good.write_text(policy_yaml("kept", DB_FROM_WEB))
        node.pyctr("network", "policy", "apply", "badnet", "-f", good)
        before = node.run("nft", "list", "ruleset").stdout
        stored_before = node.pyctr("network", "policy", "inspect", "badnet", "kept").stdout
        cases = [(["network", "policy", "apply", "nosuch", "-f", good], "network nosuch not found"),
                 (["network", "policy", "apply", "none", "-f", good], "policies need a bridge or routed network"),
                 (["network", "policy", "apply", "badnet", "-f", node.root.parent / "missing.yaml"], "cannot read"),
                 (["network", "policy", "rm", "badnet", "kept", "nosuch"], "has no policy nosuch"),
                 (["network", "policy", "inspect", "badnet", "nosuch"], "has no policy nosuch")]
        for i, (text, expected) in enumerate(BAD_POLICIES):
            path = node.root.parent / f"bad{i}.yaml"
            path.write_text(text)
            cases.append((["network", "policy", "apply", "badnet", "-f", path], expected))
        failures = not_one_line_errors(node, cases)
        assert not failures, "\n".join(failures)
        assert node.run("nft", "list", "ruleset").stdout == before
        assert node.pyctr("network", "policy", "inspect", "badnet", "kept").stdout == stored_before
        assert node.pyctr("network", "policy", "ls", "-q", "badnet").stdout.split() == ["kept"]
    finally:
        node.pyctr("network", "rm", "badnet", check=False)
    assert "pyctr-policy-badnet" not in node.run("nft", "list", "tables").stdout


def test_a_bridge_policy_without_br_netfilter_is_refused_rather_than_left_unenforced(node):
    """Where br_netfilter is a module not loaded, switched traffic would pass every policy. Here it
    is built in: a private mount namespace hides /proc/sys/net (an empty tmpfs over it) from one
    pyctr, which then sees a kernel without it."""
    node.pyctr("network", "create", "--driver", "bridge", "--subnet", "172.31.6.0/24", "nobrnf")
    try:
        policy = node.root.parent / "nobrnf.yaml"
        policy.write_text(policy_yaml("db", DB_FROM_WEB))
        before = node.run("nft", "list", "ruleset").stdout
        hidden = node.run("unshare", "--mount", "--propagation", "private", "sh", "-c",
                          'mount -t tmpfs none /proc/sys/net && exec "$@"', "sh",
                          PYTHON, "-m", "pyctr.runtime", "network", "policy", "apply", "nobrnf", "-f", policy,
                          check=False, env=node.env)
        assert hidden.returncode == 125 and hidden.stderr.count("\n") == 1, hidden.stderr
        assert "need the kernel's br_netfilter" in hidden.stderr, hidden.stderr
        assert node.run("nft", "list", "ruleset").stdout == before
        assert node.pyctr("network", "policy", "ls", "-q", "nobrnf").stdout.split() == []
        # With br_netfilter in sight, the same policy applies.
        node.pyctr("network", "policy", "apply", "nobrnf", "-f", policy)
        assert "pyctr-policy-nobrnf" in node.run("nft", "list", "tables").stdout
    finally:
        node.pyctr("network", "rm", "nobrnf", check=False)


def test_explain_prints_the_nft_transaction(node):
    node.pyctr("network", "create", "--driver", "routed", "--subnet", "172.31.6.0/24", "explained")
    try:
        path = node.root.parent / "explained.yaml"
        path.write_text(policy_yaml("db-from-web", DB_FROM_WEB))
        lines = node.pyctr("--explain", "network", "policy", "apply", "explained", "-f", path).stderr.splitlines()
        start = lines.index("nft -f - <<'EOF'")
        script = lines[start + 1:lines.index("EOF", start)]
        assert script[:3] == ["add table inet pyctr-policy-explained", "delete table inet pyctr-policy-explained",
                              "table inet pyctr-policy-explained {"]
        assert any(re.fullmatch(r"ip saddr @peers-[0-9a-f]{12} tcp dport 5432 accept", l.strip()) for l in script)
        assert sum(l.startswith("nft ") for l in lines) == 1  # one transaction
    finally:
        node.pyctr("network", "rm", "explained", check=False)


# --- scale ----------------------------------------------------------------------------------
def test_a_thousand_endpoints_fill_one_set_and_a_change_is_one_transaction(node):
    """1,000 endpoints with app=bulk, made directly as a start leaves them (a record with labels,
    an address in ipam.json, a host interface of the veth's name: an ifb device here), since
    1,000 real containers would take minutes; then one real db. Its start, and a policy change,
    are each one transaction (`nft monitor` prints a line per committed generation)."""
    scale = node.sandbox.node("pol-scale", node.sandbox_images)
    scale.pyctr("network", "create", "--driver", "routed", "--subnet", "172.30.0.0/22", "scale")
    ids = [secrets.token_hex(32) for _ in range(1000)]
    containers = scale.root / "containers"
    try:
        allocations = {}
        for i, cid in enumerate(ids):
            record = {"Id": cid, "Name": f"/bulk{i}", "Config": {"Labels": {"app": "bulk"}},
                      "HostConfig": {"NetworkMode": "scale"}}
            (containers / cid).mkdir(parents=True)
            (containers / cid / "config.json").write_text(json.dumps(record))
            allocations[f"172.30.{(i + 2) // 256}.{(i + 2) % 256}"] = cid
        (scale.root / "networks" / "scale" / "ipam.json").write_text(
            json.dumps({"subnet": "172.30.0.0/22", "allocations": allocations}))
        scale.run("ip", "-batch", "-", input="".join(f"link add veth{cid[:8]} type ifb\n" for cid in ids))
        policy = scale.root.parent / "bulk.yaml"
        policy.write_text(policy_yaml("db-from-bulk", DB_FROM_WEB.replace("app: web", "app: bulk")))
        scale.pyctr("network", "policy", "apply", "scale", "-f", policy)

        log = scale.root.parent / "monitor.txt"

        def generations() -> int:
            return len(re.findall(r"^# new generation \d+", log.read_text(), re.M))

        def transactions(*argv) -> int:
            """Generations committed while pyctr ARGV ran, as `nft monitor` saw them."""
            with open(log, "w") as out:  # a line at a time (stdbuf): it is killed at the end
                monitor = scale.spawn("stdbuf", "-oL", "nft", "monitor", stdout=out)
            try:
                # It listens once it has seen a change of its own (a table made and deleted).
                eventually(lambda: scale.nft("add table ip probe\ndelete table ip probe\n") or generations())
                time.sleep(0.5)
                before = generations()
                scale.pyctr(*argv)
                time.sleep(0.5)
                return generations() - before
            finally:
                monitor.terminate()
                monitor.wait(timeout=10)

        assert transactions("run", "-d", "--name", "db", "--network", "scale", "--label", "app=db", *SLEEP) == 1
        listed = json.loads(scale.run("nft", "-j", "list", "table", "inet", "pyctr-policy-scale").stdout)["nftables"]
        [peers] = [item["set"] for item in listed if "set" in item and item["set"]["name"].startswith("peers-")]
        assert len(peers["elem"]) == 1000
        [chain] = [item["chain"]["name"] for item in listed if "chain" in item
                   and item["chain"]["name"] == "policy-db-from-bulk-ingress"]
        assert sum(1 for item in listed if "rule" in item and item["rule"]["chain"] == chain) == 1  # O(1)
        policy.write_text(policy_yaml("db-from-bulk", DB_FROM_WEB.replace("app: web", "app: bulk")
                                      .replace("5432", "5433")))
        assert transactions("network", "policy", "apply", "scale", "-f", policy) == 1
    finally:
        for cid in ids:
            shutil.rmtree(containers / cid, ignore_errors=True)
        scale.pyctr("rm", "-f", "db", check=False)
        (scale.root / "networks" / "scale" / "ipam.json").write_text(
            json.dumps({"subnet": "172.30.0.0/22", "allocations": {}}))
        scale.pyctr("network", "rm", "scale", check=False)


# --- labels and ps filters ------------------------------------------------------------------
def test_labels_show_in_inspect_and_ps_filters_on_labels_and_networks(node):
    node = node.sandbox.node("pol-labels", node.sandbox_images)  # no other test's containers
    node.pyctr("network", "create", "--driver", "routed", "--subnet", "172.31.7.0/24", "flt")
    label_file = node.root.parent / "labels"
    label_file.write_text("\ufeff# a comment\n\napp=file\n  tier=back\nempty\n")
    made = []
    try:
        for name, args in (("f-web", ["--label", "app=web", "-l", "tier=front"]),
                           ("f-file", ["--label-file", label_file, "--label", "app=db"]),
                           ("f-none", ["--network", "none"])):
            network = [] if "--network" in args else ["--network", "flt"]
            node.pyctr("create", "--name", name, *network, *args, *SLEEP)
            made.append(name)
        assert json.loads(node.inspect("f-web", "{{json .Config.Labels}}")) == {"app": "web", "tier": "front"}
        # the file, then --label over it
        assert json.loads(node.inspect("f-file", "{{json .Config.Labels}}")) == {"app": "db", "tier": "back", "empty": ""}

        def names(*filters) -> list[str]:
            argv = [a for f in filters for a in ("--filter", f)]
            rows = json.loads(node.pyctr("ps", "-a", "--format", "json", *argv).stdout)
            return sorted(row["Names"][0] for row in rows)

        assert names("label=app") == ["f-file", "f-web"]
        assert names("label=app=web") == ["f-web"]
        assert names("label=app", "label=tier=back") == ["f-file"]  # label filters: all of them (Docker)
        assert names("label=empty=") == ["f-file"]
        assert names("network=flt") == ["f-file", "f-web"]
        assert names("network=none", "network=flt") == ["f-file", "f-none", "f-web"]  # one of them
        assert names("network=flt", "label=tier=front") == ["f-web"]  # and across keys
        assert names("network=nosuch") == []
        rows = json.loads(node.pyctr("ps", "-a", "--format", "json", "-f", "label=app=web").stdout)
        assert rows[0]["Labels"] == {"app": "web", "tier": "front"}
        for bad, expected in ((["ps", "--filter", "colour=red"], "invalid filter 'colour'"),
                              (["ps", "-f", "label"], "bad format of filter"),
                              (["create", "--label", "=x", *SLEEP], "invalid label '=x': empty name"),
                              (["create", "--label-file", "/nonexistent", *SLEEP], "open /nonexistent")):
            result = node.pyctr(*bad, check=False)
            assert result.returncode == 125 and result.stderr.count("\n") == 1 and expected in result.stderr, result
    finally:
        if made:
            node.pyctr("rm", "-f", *made, check=False)
        node.pyctr("network", "rm", "flt", check=False)


def test_the_quick_path_reads_ps_filters_and_labels_as_argparse(monkeypatch):
    from pyctr.runtime import cli

    from test_cli import check_agrees

    monkeypatch.delenv("PYCTR_LOG_LEVEL", raising=False)
    for argv in (["ps", "--filter", "label=a=b", "-f", "network=x"], ["ps", "-a", "--filter=label=a"],
                 ["run", "-l", "a=b", "--label", "c", "--label-file", "/f", "alpine", "true"],
                 ["create", "--label=x=y", "alpine"]):
        assert check_agrees(argv), argv
    assert cli.quick_parse(["ps", "--filter", "label=a"]).filter == ["label=a"]
    assert cli.quick_parse(["ps", "--fil", "label=a"]) is None  # an abbreviation: argparse's


# --- reading policies and matching labels (no packets) --------------------------------------
def test_policy_types_default_as_the_api_server_does_and_selectors_match_as_kubernetes():
    from pyctr.network import policyspec

    def spec(body: str) -> dict:
        return policyspec.parse(policy_yaml("p", body))["spec"]

    assert spec("  podSelector: {}\n")["policyTypes"] == ["Ingress"]
    assert spec("  podSelector: {}\n  egress: []\n")["policyTypes"] == ["Ingress"]  # an empty section
    assert spec("  podSelector: {}\n  egress:\n  - {}\n")["policyTypes"] == ["Ingress", "Egress"]
    assert spec("  podSelector: {}\n  policyTypes: [Egress]\n")["policyTypes"] == ["Egress"]
    selector = {"matchLabels": {"app": "db"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["test"]},
                                     {"key": "debug", "operator": "DoesNotExist"}]}
    assert policyspec.matches(selector, {"app": "db"})  # NotIn matches a missing key
    assert policyspec.matches(selector, {"app": "db", "tier": "prod"})
    assert not policyspec.matches(selector, {"app": "db", "tier": "test"})
    assert not policyspec.matches(selector, {"app": "db", "debug": ""})
    assert not policyspec.matches(selector, {"app": "web"})
    assert policyspec.matches({}, {}) and policyspec.matches({}, {"any": "thing"})
    assert policyspec.selector_text(selector) == "app=db,tier notin (test),!debug"
    # What inspect shows can be applied again (creationTimestamp is known).
    stored = policyspec.parse(policy_yaml("p", "  podSelector: {}\n"))
    stored["metadata"]["creationTimestamp"] = "2026-11-28T10:00:00Z"
    assert policyspec.check(json.loads(json.dumps(stored)))["spec"] == stored["spec"]
