"""Issue 4 end to end: the walk-through's three scenarios (same host, another host, the
internet) for the bridge and the routed driver, with real containers and real packets, on a
cluster of network namespaces (see netsandbox.py). Nothing runs in this machine's own netns."""

import ipaddress
import re
from types import SimpleNamespace

import pytest

from netsandbox import (CONTAINER_PEER_SERVER, HEAD_UPSTREAM_IP, UPSTREAM_IP, Sandbox,
                        add_watch_counters, build_cluster, eventually, peers_in_log,
                        pull_alpine, read_output, start_peer_server, tcp_read)

SLEEP = ("alpine", "sleep", "600")


@pytest.fixture(scope="module")
def cluster():
    sandbox = Sandbox()
    try:
        images = pull_alpine(sandbox.dir / "images-root")
        nodes = build_cluster(sandbox, images)
        yield SimpleNamespace(sandbox=sandbox, images=images, **nodes)
    finally:
        sandbox.close()


@pytest.fixture(scope="module")
def routed(cluster):
    """The walk-through's Calico part: node1 owns 172.19.35.0/24, node2 172.19.36.0/24, and
    each routes the other's block through the other node."""
    n1, n2 = cluster.node1, cluster.node2
    n1.pyctr("network", "create", "--driver", "routed", "--subnet", "172.19.35.0/24", "calico")
    n2.pyctr("network", "create", "--driver", "routed", "--subnet", "172.19.36.0/24", "calico")
    n1.pyctr("network", "route", "add", "calico", "172.19.36.0/24", "via", "10.141.0.2")
    n2.pyctr("network", "route", "add", "calico", "172.19.35.0/24", "via", "10.141.0.1")
    return cluster


def server_container(node, name: str, port: int, *network_args) -> str:
    node.start("--name", name, *network_args, "alpine", "sh", "-c", CONTAINER_PEER_SERVER.format(port=port))
    return node.ip_of(name)


def nc_from(node, container: str, address: str, port: int) -> str:
    """`nc` from inside a container until the server (started just before) answers."""
    return eventually(lambda: "pong" in (out := node.exec(container, f"nc -w2 {address} {port} </dev/null",
                                                          check=False).stdout) and out)


# --- bridge ---------------------------------------------------------------------------------
def test_bridge_containers_reach_each_other_at_layer_2_and_the_gateway(cluster):
    n1 = cluster.node1
    n1.start("--name", "b1", *SLEEP)
    n1.start("--name", "b2", *SLEEP)
    ip1, ip2 = n1.ip_of("b1"), n1.ip_of("b2")
    assert ip1 != ip2
    assert {ipaddress.IPv4Address(ip1), ipaddress.IPv4Address(ip2)} <= set(ipaddress.IPv4Network("172.17.0.0/16"))
    n1.exec("b1", f"ping -c1 -W2 {ip2}")
    assert re.search(rf"^{re.escape(ip2)} dev eth0 lladdr 02:42:", n1.exec("b1", "ip neigh").stdout, re.M)
    n1.exec("b1", "ping -c1 -W2 172.17.0.1")
    routes = n1.exec("b1", "ip route").stdout
    assert "default via 172.17.0.1 dev eth0" in routes
    hostname = n1.inspect("b1", "{{.Config.Hostname}}")
    hosts = n1.exec("b1", "cat /etc/hosts").stdout
    assert re.search(rf"^{re.escape(ip1)}\s+.*\b{re.escape(hostname)}\b", hosts, re.M), hosts


def test_bridge_reaches_upstream_through_node1s_masquerade(cluster):
    n1, head = cluster.node1, cluster.head
    add_watch_counters(head, {
        "bridge_node1_to_up": f"ip saddr 10.141.0.1 ip daddr {UPSTREAM_IP} tcp dport 8001",
        "bridge_container_src": "ip saddr 172.17.0.0/16",
    })
    start_peer_server(cluster.upstream, UPSTREAM_IP, 8001)
    n1.start("--name", "b-out", *SLEEP)
    seen = n1.exec("b-out", f"wget -qO- http://{UPSTREAM_IP}:8001/").stdout.strip()
    assert seen == HEAD_UPSTREAM_IP  # upstream sees the head's address (it masquerades 10.141/16)
    assert head.counter("bridge_node1_to_up") > 0  # ... and head got it from node1's address
    assert head.counter("bridge_container_src") == 0  # no container address ever left node1


def test_bridge_published_port_is_reachable_from_upstream(cluster):
    n1 = cluster.node1
    server_container(n1, "b-web", 80, "-p", "8080:80")
    cid = n1.inspect("b-web", "{{.Id}}")
    assert f"pyctr container {cid}" in n1.run("nft", "list", "table", "ip", "pyctr").stdout
    answer = eventually(lambda: tcp_read(cluster.upstream, "10.141.0.1", 8080).stdout)
    assert answer.strip() == "pong"
    assert UPSTREAM_IP in peers_in_log(n1.pyctr("logs", "b-web").stdout + n1.pyctr("logs", "b-web").stderr)
    n1.pyctr("rm", "-f", "b-web")
    assert f"pyctr container {cid}" not in n1.run("nft", "list", "table", "ip", "pyctr").stdout
    assert tcp_read(cluster.upstream, "10.141.0.1", 8080, check=False).returncode != 0


# --- routed ---------------------------------------------------------------------------------
def test_routed_container_has_the_walkthrough_addresses_and_routes(routed):
    n1 = routed.node1
    cid = n1.start("--network", "calico", "--name", "r1", *SLEEP)
    ip = n1.ip_of("r1")
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("172.19.35.0/24")
    assert f"inet {ip}/32 " in n1.exec("r1", "ip -4 -o addr show dev eth0").stdout
    routes = sorted(line.strip() for line in n1.exec("r1", "ip route").stdout.splitlines())
    assert routes == ["169.254.1.1 dev eth0 scope link", "default via 169.254.1.1 dev eth0"]
    veth = "veth" + cid[:8]
    assert n1.run("ip", "route", "show", ip).stdout.split() == [ip, "dev", veth, "scope", "link"]
    assert "blackhole 172.19.35.0/24" in n1.run("ip", "route").stdout
    assert "master" not in n1.run("ip", "-o", "link", "show", veth).stdout  # no bridge
    expected = {f"conf/{veth}/rp_filter": "1", f"conf/{veth}/route_localnet": "1",
                f"conf/{veth}/proxy_arp": "1", f"neigh/{veth}/proxy_delay": "0",
                f"conf/{veth}/forwarding": "1"}
    for key, value in expected.items():
        assert n1.run("cat", f"/proc/sys/net/ipv4/{key}").stdout.strip() == value, key
    n1.exec("r1", "ping -c1 -W2 10.141.0.1")  # the node itself


def test_routed_reaches_a_container_on_another_node_without_nat(routed):
    n1, n2 = routed.node1, routed.node2
    server_ip = server_container(n2, "r-srv", 7000, "--network", "calico")
    assert ipaddress.IPv4Address(server_ip) in ipaddress.IPv4Network("172.19.36.0/24")
    n1.start("--network", "calico", "--name", "r-cli", *SLEEP)
    client_ip = n1.ip_of("r-cli")
    nc_from(n1, "r-cli", server_ip, 7000)
    logs = n2.pyctr("logs", "r-srv")
    assert client_ip in peers_in_log(logs.stdout + logs.stderr)  # the real 172.19.35.x


def test_routed_blackhole_drops_unused_addresses_before_head(routed):
    n1, n2, head = routed.node1, routed.node2, routed.head
    add_watch_counters(head, {"pre_to_block35": "ip daddr 172.19.35.0/24"})
    before = head.counter("pre_to_block35")
    n1.start("--network", "calico", "--name", "r-bh1", *SLEEP)
    n2.start("--network", "calico", "--name", "r-bh2", *SLEEP)
    unused = "172.19.35.250"
    assert n1.exec("r-bh1", f"ping -c2 -W1 {unused}", check=False).returncode != 0
    assert n2.exec("r-bh2", f"ping -c2 -W1 {unused}", check=False).returncode != 0
    assert head.counter("pre_to_block35") == before


def test_routed_rp_filter_drops_a_spoofing_container(routed):
    n1 = routed.node1
    n1.start("--network", "calico", "--name", "r-victim", *SLEEP)
    victim_ip = n1.ip_of("r-victim")
    n1.start("--network", "calico", "--name", "r-spoof", "--cap-add", "NET_ADMIN", *SLEEP)
    n1.exec("r-spoof", "ping -c1 -W2 10.141.0.1")  # its own address works
    before = n1.netstat("IPReversePathFilter")
    spoofed = n1.exec("r-spoof", f"ip addr add {victim_ip}/32 dev eth0 && ping -c2 -W1 -I {victim_ip} 10.141.0.1",
                      check=False)
    assert spoofed.returncode != 0
    assert n1.netstat("IPReversePathFilter") > before


def test_routed_masquerade_nats_only_traffic_leaving_the_cluster(routed):
    n1, n2, head = routed.node1, routed.node2, routed.head
    n1.pyctr("network", "create", "--driver", "routed", "--subnet", "172.19.37.0/24",
             "--masquerade", "--cluster-cidr", "172.19.0.0/16", "calnat")
    n2.pyctr("network", "route", "add", "calico", "172.19.37.0/24", "via", "10.141.0.1")
    add_watch_counters(head, {
        "nat_node1_to_up": f"ip saddr 10.141.0.1 ip daddr {UPSTREAM_IP} tcp dport 8002",
        "nat_block_src": "ip saddr 172.19.37.0/24",
    })
    start_peer_server(routed.upstream, UPSTREAM_IP, 8002)
    n1.start("--network", "calnat", "--name", "n-cli", *SLEEP)
    client_ip = n1.ip_of("n-cli")
    assert n1.exec("n-cli", f"wget -qO- http://{UPSTREAM_IP}:8002/").stdout.strip() == HEAD_UPSTREAM_IP
    assert head.counter("nat_node1_to_up") > 0
    assert head.counter("nat_block_src") == 0  # NATed to node1's address before leaving it
    server_ip = server_container(n2, "n-srv", 7001, "--network", "calico")
    nc_from(n1, "n-cli", server_ip, 7001)
    logs = n2.pyctr("logs", "n-srv")
    assert client_ip in peers_in_log(logs.stdout + logs.stderr)  # inside the cluster: no NAT


# --- scale ----------------------------------------------------------------------------------
def test_twenty_containers_started_at_once_get_distinct_addresses_and_answer(cluster):
    n2 = cluster.node2
    n2.pyctr("network", "create", "--subnet", "172.22.0.0/24", "many")
    starts = [n2.pyctr_spawn("run", "-d", "--network", "many", *SLEEP) for _ in range(20)]
    ids = []
    for process in starts:
        returncode, out, err = read_output(process)
        assert returncode == 0, err
        ids.append(out.strip().splitlines()[-1])
    addresses = [n2.ip_of(cid) for cid in ids]
    assert len(set(addresses)) == 20
    assert all(ipaddress.IPv4Address(a) in ipaddress.IPv4Network("172.22.0.0/24") for a in addresses)
    silent = n2.sh(f"for ip in {' '.join(addresses)}; do ping -c1 -W2 $ip >/dev/null || echo $ip; done")
    assert silent.split() == []
    n2.pyctr("rm", "-f", *ids, timeout=120)
    n2.pyctr("network", "rm", "many")


# --- clean-up -------------------------------------------------------------------------------
def test_rm_and_network_rm_leave_the_node_as_it_was(cluster):
    node = cluster.sandbox.node("node3", cluster.images)
    # An uplink of its own (a veth whose both ends stay in node3), for a route via 10.99.0.2.
    node.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    node.run("ip", "addr", "add", "10.99.0.1/24", "dev", "eth0")
    node.run("ip", "link", "set", "eth0", "up")
    node.run("ip", "link", "set", "eth0-peer", "up")
    before, files_before = node.snapshot(), node.pyctr_files()

    node.pyctr("network", "create", "--driver", "routed", "--subnet", "172.19.40.0/24",
               "--masquerade", "--cluster-cidr", "172.19.0.0/16", "rt")
    node.pyctr("network", "route", "add", "rt", "172.19.41.0/24", "via", "10.99.0.2")
    web = node.start("-p", "8080:80", *SLEEP)  # the default network, defined on first use
    routed_one = node.start("--network", "rt", *SLEEP)
    assert node.snapshot() != before
    node.pyctr("rm", "-f", web, routed_one)
    node.pyctr("network", "rm", "bridge", "rt")

    assert node.snapshot() == before
    assert node.pyctr_files() == files_before


def test_rm_f_cleans_up_after_sigkilled_pyctr_and_monitor(cluster):
    import json
    import os
    import signal

    node = cluster.sandbox.node("node4", cluster.images)
    before, files_before = node.snapshot(), node.pyctr_files()
    # A foreground run whose pyctr dies (its monitor and container live on) ...
    foreground = node.pyctr_spawn("run", "--name", "fg", "-p", "8082:80", *SLEEP)
    eventually(lambda: "fg" in node.pyctr("ps").stdout, timeout=30)
    foreground.send_signal(signal.SIGKILL)
    foreground.wait()
    # ... and a detached one whose monitor dies (its container lives on).
    detached = node.start("--name", "bg", "-p", "8083:80", *SLEEP)
    state = json.loads((node.state / "containers" / f"{detached}.json").read_text())
    os.kill(state["MonitorPid"], signal.SIGKILL)  # a PID this test's pyctr started
    assert node.snapshot() != before

    node.pyctr("rm", "-f", "fg", "bg")
    node.pyctr("network", "rm", "bridge")
    assert node.snapshot() == before
    assert node.pyctr_files() == files_before
    assert node.pyctr("ps", "-aq").stdout.strip() == ""


# --- bad input ------------------------------------------------------------------------------
def test_bad_input_gives_one_clear_line_and_exit_125(routed):
    n1 = routed.node1
    n1.pyctr("network", "create", "--subnet", "172.29.0.0/30", "tiny")
    n1.start("--network", "tiny", "--name", "tiny-1", *SLEEP)  # takes 172.29.0.2, the only one
    n1.start("--network", "calico", "--name", "keeps-calico-busy", *SLEEP)
    cases = [
        (["network", "create", "--subnet", "172.19.300.0/24", "x"], "invalid subnet"),
        (["network", "create", "--subnet", "10.141.7.0/24", "x"], "host route '10.141.0.0/16 dev eth0'"),
        (["network", "create", "--subnet", "172.29.0.0/24", "x"], "overlaps network tiny"),
        (["network", "create", "--bridge", "eth0", "x"], "eth0 is in use"),
        (["network", "create", "--driver", "nosuch", "x"], "driver 'nosuch' not found"),
        (["network", "create", "--driver", "routed", "x"], "needs --subnet"),
        (["network", "rm", "calico"], "in use"),
        (["network", "inspect", "nosuch"], "network nosuch not found"),
        (["network", "route", "add", "calico", "172.19.36.0/33", "via", "10.141.0.2"], "invalid CIDR"),
        (["network", "route", "add", "tiny", "172.19.36.0/24", "via", "10.141.0.2"], "for routed networks"),
        (["run", "--network", "nosuch", *SLEEP], "network nosuch not found"),
        (["run", "--network", "calico", "--ip", "10.0.0.5", *SLEEP], "outside"),
        (["run", "--network", "tiny", "--ip", "172.29.0.1", *SLEEP], "gateway"),
        (["run", "--network", "tiny", "--ip", "172.29.0.2", *SLEEP], "already in use"),
        (["run", "--network", "calico", "-p", "80:80", *SLEEP], "-p needs a bridge network"),
        (["run", "--network", "tiny", *SLEEP], "no free address"),
    ]
    failures = []
    for argv, expected in cases:
        result = n1.pyctr(*argv, check=False)
        lines = result.stderr.strip().splitlines()
        if not (result.returncode == 125 and len(lines) == 1 and lines[0].startswith("Error:")
                and expected in lines[0]):
            failures.append(f"{argv}: exit {result.returncode}, stderr {result.stderr!r}")
    assert not failures, "\n".join(failures)


# --- --explain ------------------------------------------------------------------------------
def test_explain_prints_each_network_step_as_the_command_a_person_would_type(routed):
    n2 = routed.node2
    lines = n2.pyctr("--explain", "run", "--rm", "alpine", "true").stderr.splitlines()
    veth = next(re.match(r"ip link add (veth\w{8}) type veth peer name eth0 address 02:42:[0-9a-f:]{11} netns (\d+)$", l)
                for l in lines if l.startswith("ip link add veth"))
    host, pid = veth.groups()
    for expected in (f"ip link set {host} master pyctr0 up",
                     f"nsenter -t {pid} -n ip link set eth0 up"):
        assert expected in lines, lines
    assert any(re.fullmatch(rf"nsenter -t {pid} -n ip addr add 172\.\d+\.0\.\d+/16 dev eth0", l) for l in lines)
    assert any(re.fullmatch(rf"nsenter -t {pid} -n ip route add default via 172\.\d+\.0\.1", l) for l in lines)

    lines = n2.pyctr("--explain", "run", "--rm", "--network", "calico", "alpine", "true").stderr.splitlines()
    host = next(l.split()[3] for l in lines if l.startswith("ip link add veth"))
    for expected in (f"sysctl -w net.ipv4.conf.{host}.rp_filter=1",
                     f"sysctl -w net.ipv4.conf.{host}.proxy_arp=1",
                     f"sysctl -w net.ipv4.neigh.{host}.proxy_delay=0",
                     f"ip link set {host} up"):
        assert expected in lines, lines
    assert any(re.fullmatch(rf"ip route add 172\.19\.36\.\d+/32 dev {host} scope link", l) for l in lines)
    assert any(l.endswith("-n ip route add 169.254.1.1 dev eth0 scope link") for l in lines)
    assert any(l.endswith("-n ip route add default via 169.254.1.1 dev eth0") for l in lines)
