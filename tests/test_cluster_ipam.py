"""Issue 12, first slice: a routed network whose pool lives in etcd, handed out to nodes in
blocks. A real etcd runs in the sandbox's head namespace (its own data folder); node1 and node2
run pyctr through nsenter. Nothing runs in this machine's own netns. Routes between the nodes
are still typed (`network route add`): BGP is a later slice."""

import ipaddress
import json
import time
from types import SimpleNamespace

import pytest

from netsandbox import (HEAD_UNDERLAY_IP, PYTHON, Sandbox, build_cluster, etcd_keys, fails_in_one_line, pull_alpine,
                        read_output, start_etcd)

ETCD_URL = f"http://{HEAD_UNDERLAY_IP}:2379"
DATASTORE = f"etcd://{HEAD_UNDERLAY_IP}:2379"
POOL = "172.19.0.0/16"
CREATE = ("network", "create", "--driver", "routed", "--subnet", POOL, "--block-size", "28",
          "--datastore", DATASTORE, "calico")
SLEEP = ("alpine", "sleep", "600")
NODE_IPS = {"node1": "10.141.0.1", "node2": "10.141.0.2"}

# etcd's own count of key-value requests, by method (Range, Txn, Put, DeleteRange).
KV_REQUESTS = """
import json, re, sys, requests
text = requests.get(sys.argv[1] + "/metrics", timeout=5).text
found = re.findall(r'^grpc_server_started_total{grpc_method="(\\w+)",grpc_service="etcdserverpb.KV".*} (\\d+)', text, re.M)
print(json.dumps({method: int(count) for method, count in found}))
"""


@pytest.fixture(scope="module")
def cluster():
    sandbox = Sandbox()
    try:
        images = pull_alpine(sandbox.dir / "images-root")
        nodes = build_cluster(sandbox, images)
        head = nodes["head"]
        start_etcd(head, sandbox.dir / "etcd-data", ETCD_URL)
        for role in ("node1", "node2"):
            nodes[role].extra_env["PYCTR_NODE_NAME"] = role
        # Each node's routes and nftables before any cluster network, for the last test.
        before = {role: nodes[role].snapshot() for role in ("node1", "node2")}
        yield SimpleNamespace(sandbox=sandbox, before=before, **nodes)
    finally:
        try:
            for role in ("node1", "node2"):
                if role in locals().get("nodes", {}):
                    nodes[role].remove_all_containers()
        finally:
            sandbox.close()  # etcd, and its data folder under the sandbox's


def keys(cluster) -> dict:
    return etcd_keys(cluster.head, ETCD_URL)


def kv_requests(cluster) -> dict:
    return json.loads(cluster.head.run(PYTHON, "-c", KV_REQUESTS, ETCD_URL).stdout)


def under(found: dict, prefix: str) -> dict:
    return {key[len(prefix):]: doc for key, doc in found.items() if key.startswith(prefix)}


def start_many(node, count: int, prefix: str) -> list:
    return [node.pyctr_spawn("run", "-d", "--name", f"{prefix}{i}", "--network", "calico", *SLEEP)
            for i in range(count)]


def wait_all(processes) -> None:
    for process in processes:
        code, out, err = read_output(process)
        assert code == 0, err


def test_pool_is_defined_once_same_arguments_join_other_arguments_are_refused(cluster):
    n1, n2 = cluster.node1, cluster.node2
    n1.pyctr(*CREATE)
    pool = {"subnet": POOL, "block_size": 28, "masquerade": False}
    assert keys(cluster) == {"/pyctr/pools/calico": pool, "/pyctr/members/calico/node1": {}}

    files = n2.pyctr_files()
    other = list(CREATE)
    other[other.index("28")] = "26"
    fails_in_one_line(n2.pyctr(*other, check=False), "calico", "other arguments")
    assert n2.pyctr_files() == files
    fails_in_one_line(n2.pyctr(*CREATE, "--masquerade", check=False), "other arguments")

    n2.pyctr(*CREATE)  # the same arguments on another node: it joins the pool
    assert keys(cluster) == {"/pyctr/pools/calico": pool, "/pyctr/members/calico/node1": {},
                             "/pyctr/members/calico/node2": {}}
    inspected = json.loads(n2.pyctr("network", "inspect", "calico").stdout)[0]
    assert inspected["Options"]["pyctr.datastore"] == DATASTORE
    assert inspected["IPAM"]["Config"] == [{"Subnet": POOL}]
    assert inspected["Scope"] == "global"
    assert "calico              routed    global  172.19.0.0/16" in n2.pyctr("network", "ls").stdout


@pytest.mark.parametrize("args, words", [
    (("--subnet", "172.30.0.0/16", "--block-size", "12"), ("/12", "larger than the pool")),
    (("--subnet", "172.30.0.0/16", "--block-size", "33"), ("block size 33",)),
    (("--subnet", "10.141.0.0/16"), ("overlaps", "10.141.0.0/16")),  # the nodes' own underlay
])
def test_bad_pools_are_one_line_and_write_nothing(cluster, args, words):
    n1 = cluster.node1
    files, before = n1.pyctr_files(), keys(cluster)
    result = n1.pyctr("network", "create", "--driver", "routed", *args, "--datastore", DATASTORE,
                      "bad", check=False)
    fails_in_one_line(result, *words)
    assert n1.pyctr_files() == files
    assert keys(cluster) == before


def test_unreachable_etcd_at_create_is_one_line_and_writes_nothing(cluster):
    n1 = cluster.node1
    files = n1.pyctr_files()
    result = n1.pyctr("network", "create", "--driver", "routed", "--subnet", "172.30.0.0/16",
                      "--datastore", f"etcd://{HEAD_UNDERLAY_IP}:2399", "gone", check=False)
    fails_in_one_line(result, "etcd://10.141.255.254:2399", "cannot be reached")
    assert n1.pyctr_files() == files


def test_two_nodes_starting_twenty_containers_at_once_share_no_block_and_no_address(cluster):
    n1, n2 = cluster.node1, cluster.node2
    wait_all(start_many(n1, 10, "a") + start_many(n2, 10, "b"))
    found = keys(cluster)
    blocks = under(found, "/pyctr/blocks/calico/")
    allocations = under(found, "/pyctr/ipam/calico/")
    assert len(allocations) == 20
    owners = {block: doc["node"] for block, doc in blocks.items()}
    assert set(owners.values()) == {"node1", "node2"}
    for (block_a, node_a) in owners.items():
        for (block_b, node_b) in owners.items():
            if block_a != block_b:
                assert not ipaddress.IPv4Network(block_a).overlaps(ipaddress.IPv4Network(block_b))
    seen = {}
    for node, prefix in ((n1, "a"), (n2, "b")):
        role = "node1" if node is n1 else "node2"
        cid_of = {}
        for i in range(10):
            name = f"{prefix}{i}"
            ip = node.ip_of(name)
            assert ip not in seen, f"{name} and {seen[ip]} both have {ip}"
            seen[ip] = name
            cid_of[ip] = node.inspect(name, "{{.Id}}")
            block = next(b for b in owners if ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(b))
            assert owners[block] == role  # in a block of its own node
            assert allocations[ip] == {"container": cid_of[ip], "node": role}
        # the node blackholes its blocks
        blackholes = node.run("ip", "route", "show", "type", "blackhole").stdout.split()
        assert {b for b, owner in owners.items() if owner == role} <= set(blackholes)


def test_a_node_whose_block_is_full_claims_another(cluster):
    n1 = cluster.node1
    mine = [b for b, doc in under(keys(cluster), "/pyctr/blocks/calico/").items() if doc["node"] == "node1"]
    assert len(mine) == 1  # 10 addresses of a /28
    wait_all(start_many(n1, 7, "c"))  # 17 > 16
    found = keys(cluster)
    mine = sorted(b for b, doc in under(found, "/pyctr/blocks/calico/").items() if doc["node"] == "node1")
    assert len(mine) == 2
    addresses = [n1.ip_of(f"c{i}") for i in range(7)]
    assert len(set(addresses)) == 7
    assert any(ipaddress.IPv4Address(a) in ipaddress.IPv4Network(mine[1]) for a in addresses)
    blackholes = n1.run("ip", "route", "show", "type", "blackhole").stdout.split()
    assert set(mine) <= set(blackholes)


def test_containers_on_two_nodes_ping_once_routes_are_added_and_rm_frees_the_address(cluster):
    n1, n2 = cluster.node1, cluster.node2
    blocks = under(keys(cluster), "/pyctr/blocks/calico/")
    for node, other in ((n1, "node2"), (n2, "node1")):
        for block, doc in blocks.items():
            if doc["node"] == other:
                node.pyctr("network", "route", "add", "calico", block, "via", NODE_IPS[other])
    own = next(b for b, doc in blocks.items() if doc["node"] == "node1")
    fails_in_one_line(n1.pyctr("network", "route", "add", "calico", own, "via", "10.141.0.2", check=False),
                      "this node's block")
    n1.exec("a0", f"ping -c1 -W2 {n2.ip_of('b0')}")

    # A start on a node that holds a block with room costs etcd one request: the address's txn.
    before = kv_requests(cluster)
    n1.start("--name", "one-txn", "--network", "calico", *SLEEP)
    after = kv_requests(cluster)
    assert {m: after[m] - before.get(m, 0) for m in after if after[m] != before.get(m, 0)} == {"Txn": 1}

    ip = n1.ip_of("a1")
    n1.pyctr("rm", "-f", "a1")
    assert f"/pyctr/ipam/calico/{ip}" not in keys(cluster)
    assert ip not in json.loads(n1.pyctr_files()["calico/ipam.json"])["allocations"]


def test_unreachable_etcd_at_run_is_one_line_and_leaves_nothing(cluster):
    n1, head = cluster.node1, cluster.head
    containers = n1.pyctr("ps", "-aq", "--no-trunc").stdout.split()
    links = n1.snapshot()["links"]
    files, before = n1.pyctr_files(), keys(cluster)
    # etcd stops answering node1 (its packets are dropped): the client's timeout, not a refusal.
    head.nft("add table ip cutoff\n"
             "add chain ip cutoff input { type filter hook input priority -5; policy accept; }\n"
             "add rule ip cutoff input ip saddr 10.141.0.1 tcp dport 2379 drop\n")
    try:
        started = time.monotonic()
        result = n1.pyctr("run", "-d", "--name", "late", "--network", "calico", *SLEEP, check=False)
        assert time.monotonic() - started < 10
    finally:
        head.nft("delete table ip cutoff\n")
    fails_in_one_line(result, DATASTORE, "cannot be reached")
    # As Docker (and pyctr on any network) does after a failed start, the container is left
    # "created", with the error; nothing of the network is.
    assert n1.inspect("late", "{{.State.Status}}") == "created"
    assert "cannot be reached" in n1.inspect("late", "{{.State.Error}}")
    assert n1.snapshot()["links"] == links
    assert n1.pyctr_files() == files
    assert keys(cluster) == before
    n1.pyctr("rm", "late")
    assert n1.pyctr("ps", "-aq", "--no-trunc").stdout.split() == containers


def test_network_rm_on_both_nodes_leaves_etcd_and_the_nodes_as_they_were(cluster):
    for role in ("node1", "node2"):
        node = getattr(cluster, role)
        node.remove_all_containers()
        node.pyctr("network", "rm", "calico")
    assert keys(cluster) == {}
    for role in ("node1", "node2"):
        after = getattr(cluster, role).snapshot()
        assert after["routes"] == cluster.before[role]["routes"]
        assert after["links"] == cluster.before[role]["links"]
