"""Issue 4 end to end: the walk-through's three scenarios (same host, another host, the
internet) for the bridge and the routed driver, with real containers and real packets, on a
cluster of network namespaces (see netsandbox.py). Nothing runs in this machine's own netns."""

import ipaddress
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import needs_userns
from netsandbox import (CONTAINER_PEER_SERVER, HEAD_UNDERLAY_IP, HEAD_UPSTREAM_IP, PYTHON, UPSTREAM_IP, Sandbox,
                        add_watch_counters, build_cluster, eventually, not_one_line_errors, peers_in_log,
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


@needs_userns
def test_a_remapped_container_on_a_bridge_reaches_its_neighbour_and_the_gateway(cluster, tmp_path, monkeypatch):
    """--userns=auto: the container's network namespace belongs to its user namespace; the driver,
    host root, still puts the veth in it, and root in the container may ping (CAP_NET_RAW there)."""
    etc = tmp_path / "etc-root" / "etc"
    etc.mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy2(f"/etc/{name}", etc / name)
    for name in ("subuid", "subgid"):
        (etc / name).write_text("containers:300000:200000\n")
    monkeypatch.setenv("PYCTR_ETC_ROOT", str(etc.parent))  # the node's pyctr reads our environment
    n1 = cluster.node1
    n1.start("--name", "uns-b1", "--userns=auto", *SLEEP)
    n1.start("--name", "uns-b2", *SLEEP)
    assert n1.exec("uns-b1", "cat /proc/self/uid_map").stdout.split()[:2] == ["0", "300000"]
    n1.exec("uns-b1", f"ping -c1 -W2 {n1.ip_of('uns-b2')}")
    n1.exec("uns-b1", "ping -c1 -W2 172.17.0.1")
    n1.pyctr("rm", "-f", "uns-b1", "uns-b2")


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


def nc_fails(node, container: str, address: str, port: int) -> bool:
    """True when `nc` from the container gets no answer (a dropped SYN times out after 2 s)."""
    return "pong" not in node.exec(container, f"nc -w2 {address} {port} </dev/null", check=False).stdout


# --- isolation (issue 8) --------------------------------------------------------------------
def test_bridge_networks_are_isolated_from_each_other_unless_no_isolate(cluster):
    n1 = cluster.node1
    n1.pyctr("network", "create", "--subnet", "172.23.0.0/24", "iso-a")
    n1.pyctr("network", "create", "--subnet", "172.24.0.0/24", "iso-b")
    n1.pyctr("network", "create", "--subnet", "172.25.0.0/24", "--no-isolate", "open-c")
    ip_b = server_container(n1, "iso-srv-b", 7100, "--network", "iso-b", "-p", "8090:7100")
    ip_default = server_container(n1, "iso-srv-default", 7101)  # on `bridge`
    ip_c = server_container(n1, "iso-srv-c", 7102, "--network", "open-c")
    for name, network in (("iso-cli-a", "iso-a"), ("iso-cli-b", "iso-b"), ("iso-cli-default", "bridge")):
        n1.start("--name", name, "--network", network, *SLEEP)
    add_watch_counters(n1, {"pre_iso_a_to_b": f"ip saddr 172.23.0.0/24 ip daddr {ip_b} tcp dport 7100 tcp flags syn"})

    nc_from(n1, "iso-cli-b", ip_b, 7100)  # the server answers its own network ...
    nc_from(n1, "iso-cli-default", ip_default, 7101)
    assert nc_fails(n1, "iso-cli-a", ip_b, 7100)  # ... but not another network's containers
    assert n1.counter("pre_iso_a_to_b") > 0  # (the SYNs did reach the node: it dropped them)
    assert nc_fails(n1, "iso-cli-a", ip_default, 7101)
    assert nc_fails(n1, "iso-cli-default", ip_b, 7100)
    assert nc_fails(n1, "iso-cli-b", ip_default, 7101)
    # A published port is open to everyone, other networks included (through the node's address).
    nc_from(n1, "iso-cli-a", "10.141.0.1", 8090)
    # --no-isolate: other networks reach every port of its containers.
    nc_from(n1, "iso-cli-a", ip_c, 7102)
    inspected = json.loads(n1.pyctr("network", "inspect", "iso-a", "open-c").stdout)
    assert [n["Options"]["pyctr.isolate"] for n in inspected] == ["true", "false"]


@pytest.fixture
def lan_routes(routed):
    """head, the LAN's router, sends the containers' subnets of node1 to node1."""
    head = routed.head
    subnets = ("172.17.0.0/16", "172.19.35.0/24")
    for subnet in subnets:
        head.run("ip", "route", "add", subnet, "via", "10.141.0.1")
    yield routed
    for subnet in subnets:
        head.run("ip", "route", "del", subnet, "via", "10.141.0.1", check=False)


def test_the_lan_reaches_bridge_containers_only_on_published_ports_and_routed_ones_on_all(lan_routes):
    n1, head = lan_routes.node1, lan_routes.head
    hidden_ip = server_container(n1, "lan-hidden", 7200)  # on `bridge`, nothing published
    routed_ip = server_container(n1, "lan-routed", 7201, "--network", "calico")
    server_container(n1, "lan-published", 7202, "-p", "8091:7202")
    add_watch_counters(n1, {"pre_lan_hidden": f"ip saddr {HEAD_UNDERLAY_IP} ip daddr {hidden_ip} tcp dport 7200"})

    assert eventually(lambda: tcp_read(n1, hidden_ip, 7200).stdout).strip() == "pong"  # it listens
    assert tcp_read(head, hidden_ip, 7200, check=False).returncode != 0  # but not for the LAN
    assert n1.counter("pre_lan_hidden") > 0  # (head's SYNs reached node1, which dropped them)
    assert eventually(lambda: tcp_read(head, "10.141.0.1", 8091).stdout).strip() == "pong"
    # routed networks are plain layer 3, as Calico's: every port answers whoever routes there
    assert eventually(lambda: tcp_read(head, routed_ip, 7201).stdout).strip() == "pong"


def test_under_dockers_forward_drop_a_bridge_forwards_once_docker_user_accepts_it(cluster):
    """The README's word on living beside Docker, checked with the table Docker leaves."""
    n1 = cluster.node1
    start_peer_server(cluster.upstream, UPSTREAM_IP, 8003)
    n1.start("--name", "under-docker", *SLEEP)
    wget = f"wget -T2 -qO- http://{UPSTREAM_IP}:8003/"
    assert n1.exec("under-docker", wget).stdout.strip() == HEAD_UPSTREAM_IP
    # What Docker's iptables-nft makes: FORWARD with policy drop, which jumps to DOCKER-USER first.
    n1.nft("add table ip filter\n"
           "add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }\n"
           "add chain ip filter DOCKER-USER\n"
           "add rule ip filter FORWARD jump DOCKER-USER\n")
    try:
        assert n1.exec("under-docker", wget, check=False).returncode != 0
        # the README's two `iptables -I DOCKER-USER` lines, spelled for nft
        n1.nft('insert rule ip filter DOCKER-USER iifname "pyctr0" accept\n'
               'insert rule ip filter DOCKER-USER oifname "pyctr0" accept\n')
        assert n1.exec("under-docker", wget).stdout.strip() == HEAD_UPSTREAM_IP
    finally:
        n1.nft("delete table ip filter\n")


# --- published ports (issue 9) --------------------------------------------------------------
def test_p_with_a_host_ip_publishes_on_that_address_only(cluster):
    n1, upstream = cluster.node1, cluster.upstream
    n1.run("ip", "addr", "add", "10.141.0.11/16", "dev", "eth0")
    try:
        for name, address in (("ip-one", "10.141.0.1"), ("ip-eleven", "10.141.0.11")):
            # the same host port on two addresses: no conflict
            n1.start("--name", name, "-p", f"{address}:8092:7300", "alpine", "sh", "-c",
                     f"while true; do nc -lvn -p 7300 -e echo {name}; done")
        assert eventually(lambda: tcp_read(upstream, "10.141.0.1", 8092).stdout).strip() == "ip-one"
        assert eventually(lambda: tcp_read(upstream, "10.141.0.11", 8092).stdout).strip() == "ip-eleven"
        ports = json.loads(n1.inspect("ip-one", "{{json .NetworkSettings.Ports}}"))
        assert ports == {"7300/tcp": [{"HostIp": "10.141.0.1", "HostPort": "8092"}]}
        n1.pyctr("rm", "-f", "ip-eleven")
        assert tcp_read(upstream, "10.141.0.11", 8092, check=False).returncode != 0
        assert tcp_read(upstream, "10.141.0.1", 8092).stdout.strip() == "ip-one"
    finally:
        n1.pyctr("rm", "-f", "ip-one", "ip-eleven", check=False)
        n1.run("ip", "addr", "del", "10.141.0.11/16", "dev", "eth0", check=False)


UDP_ASK = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(1)\n"
           "s.sendto(b'ping\\n', (sys.argv[1], int(sys.argv[2])))\nprint(s.recvfrom(100)[0].decode())")


def test_p_udp_forwards_datagrams_both_ways(cluster):
    n1, upstream = cluster.node1, cluster.upstream
    n1.start("--name", "udp-echo", "-p", "5353:53/udp", "alpine", "sh", "-c",
             "while true; do nc -lu -p 53 -e echo pong; done")
    answer = eventually(lambda: upstream.run(PYTHON, "-c", UDP_ASK, "10.141.0.1", 5353).stdout)
    assert answer.strip() == "pong"
    # ... and only UDP: nothing answers TCP on that port
    assert tcp_read(upstream, "10.141.0.1", 5353, check=False).returncode != 0


def test_two_containers_asking_for_one_host_port_the_second_is_refused_leaving_nothing(cluster):
    n1 = cluster.node1
    n1.start("--name", "port-first", "-p", "8093:80", *SLEEP)
    def kernel_state():
        snapshot = n1.snapshot()
        snapshot["nft"] = n1.run("nft", "list", "table", "ip", "pyctr").stdout  # not the counters
        return snapshot

    before, files_before = kernel_state(), n1.pyctr_files()
    names_before = n1.pyctr("ps", "-aq", "--no-trunc").stdout
    for argv in (["-p", "8093:81"], ["-p", "10.141.0.1:8093:80"]):
        result = n1.pyctr("run", "-d", "--name", "port-second", *argv, *SLEEP, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 125 and len(lines) == 1, result
        assert "8093/tcp is already published by container" in lines[0], lines
        assert kernel_state() == before and n1.pyctr_files() == files_before
        assert n1.pyctr("ps", "-aq", "--no-trunc").stdout == names_before
    # Another protocol, or the port once free again, is fine.
    n1.start("--name", "port-udp", "-p", "8093:80/udp", *SLEEP)
    n1.pyctr("rm", "-f", "port-first", "port-udp")
    n1.start("--name", "port-second", "-p", "8093:81", *SLEEP)
    n1.pyctr("rm", "-f", "port-second")


# --- a reboot -------------------------------------------------------------------------------
def test_a_run_after_a_reboot_rebuilds_the_bridge_network(cluster):
    node = cluster.sandbox.node("node5", cluster.images)
    node.run("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0-peer")  # an address of its own
    node.run("ip", "addr", "add", "10.98.0.1/24", "dev", "d0")
    node.run("ip", "link", "set", "d0", "up")
    node.run("ip", "link", "set", "d0-peer", "up")
    node.pyctr("run", "--rm", *SLEEP[:1], "true")  # defines and builds `bridge`
    assert node.run("ip", "link", "show", "pyctr0", check=False).returncode == 0
    # What a reboot does to the kernel; pyctr's records (under --root) say the network exists.
    node.run("ip", "link", "del", "pyctr0")
    node.nft("delete table ip pyctr\n")
    node.write_sysctl("net.ipv4.ip_forward", 0)
    assert "bridge" in node.pyctr("network", "ls", "-q").stdout.split()

    server_container(node, "after-boot", 80, "-p", "8094:80")
    assert eventually(lambda: tcp_read(node, "10.98.0.1", 8094).stdout).strip() == "pong"
    node.exec("after-boot", "ping -c1 -W2 172.17.0.1")
    assert node.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert 'comment "pyctr network bridge"' in node.run("nft", "list", "table", "ip", "pyctr").stdout


# --- network ls, inspect, route ls/rm -------------------------------------------------------
def test_network_ls_inspect_and_route_ls_rm_show_and_change_what_is_there(routed):
    n1 = routed.node1
    n1.pyctr("network", "create", "--subnet", "172.26.0.0/24", "--gateway", "172.26.0.254",
             "--bridge", "br-lsi", "lsi")
    cid = n1.start("--name", "lsi-1", "--network", "lsi", *SLEEP)

    rows = [line.split() for line in n1.pyctr("network", "ls").stdout.splitlines()]
    assert rows[0] == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]
    by_name = {row[1]: row for row in rows[1:]}
    assert by_name["lsi"][2:] == ["bridge", "local", "172.26.0.0/24"]
    assert by_name["calico"][2:] == ["routed", "local", "172.19.35.0/24"]
    assert by_name["host"][2:] == ["host", "local"] and by_name["none"][2:] == ["none", "local"]
    assert set(n1.pyctr("network", "ls", "-q").stdout.split()) == set(by_name)

    lsi, calico = json.loads(n1.pyctr("network", "inspect", "lsi", "calico").stdout)
    assert (lsi["Name"], lsi["Driver"], lsi["Id"][:12]) == ("lsi", "bridge", by_name["lsi"][0])
    assert lsi["IPAM"]["Config"] == [{"Subnet": "172.26.0.0/24", "Gateway": "172.26.0.254"}]
    assert lsi["Options"]["com.docker.network.bridge.name"] == "br-lsi"
    assert lsi["Containers"] == {cid: {"Name": "lsi-1", "IPv4Address": f"{n1.ip_of(cid)}/24"}}
    assert calico["Driver"] == "routed"
    assert {"Destination": "172.19.36.0/24", "Via": "10.141.0.2"} in calico["Routes"]

    n1.pyctr("network", "route", "add", "calico", "172.19.50.0/24", "via", "10.141.0.2")
    assert n1.run("ip", "route", "show", "172.19.50.0/24").stdout.split()[:3] == ["172.19.50.0/24", "via", "10.141.0.2"]
    listed = [line.split() for line in n1.pyctr("network", "route", "ls", "calico").stdout.splitlines()]
    assert listed[0] == ["DESTINATION", "VIA"]
    assert ["172.19.36.0/24", "10.141.0.2"] in listed[1:] and ["172.19.50.0/24", "10.141.0.2"] in listed[1:]
    n1.pyctr("network", "route", "rm", "calico", "172.19.50.0/24", "via", "10.141.0.2")
    assert n1.run("ip", "route", "show", "172.19.50.0/24").stdout.strip() == ""
    listed = [line.split() for line in n1.pyctr("network", "route", "ls", "calico").stdout.splitlines()]
    assert listed[1:] == [["172.19.36.0/24", "10.141.0.2"]]
    assert "172.19.50.0/24" not in n1.pyctr("network", "inspect", "calico").stdout
    n1.pyctr("rm", "-f", cid)
    n1.pyctr("network", "rm", "lsi")
    assert n1.run("ip", "link", "show", "br-lsi", check=False).returncode != 0


# --- debug ----------------------------------------------------------------------------------
def test_debug_pid_runs_host_tools_on_the_containers_processes(cluster):
    n1 = cluster.node1
    n1.start("--name", "dbg", *SLEEP)
    ps = n1.pyctr("debug", "--pid", "dbg", "ps", "-o", "pid=,comm=").stdout.split()
    assert ps[:2] == ["1", "sleep"] and ps[2:][1::2] == ["ps"], ps  # the container's, and ps itself
    assert n1.pyctr("debug", "--pid", "dbg", "cat", "/proc/1/cmdline").stdout == "sleep\x00600\x00"
    assert n1.pyctr("debug", "--pid", "dbg", "readlink", "/proc/self").stdout.strip().isdigit()
    # the container's network, with the host's `ip`
    assert f"inet {n1.ip_of('dbg')}/" in n1.pyctr("debug", "dbg", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    # the /proc it mounted stayed in a mount namespace of its own
    assert "sleep" not in Path("/proc/1/cmdline").read_text()


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
    unused = "172.19.35.250"
    add_watch_counters(head, {"pre_to_block35": "ip daddr 172.19.35.0/24"})
    # On node1, before routing: proof that the pings left both containers and reached the node
    # that owns the block (from its own container through the veth, from node2 over the fabric).
    add_watch_counters(n1, {"pre_bh_local": f"iifname != \"eth0\" ip daddr {unused} icmp type echo-request",
                            "pre_bh_node2": f"iifname \"eth0\" ip daddr {unused} icmp type echo-request"})
    before = head.counter("pre_to_block35")
    n1.start("--network", "calico", "--name", "r-bh1", *SLEEP)
    n2.start("--network", "calico", "--name", "r-bh2", *SLEEP)
    assert n1.exec("r-bh1", f"ping -c2 -W1 {unused}", check=False).returncode != 0
    assert n2.exec("r-bh2", f"ping -c2 -W1 {unused}", check=False).returncode != 0
    assert n1.counter("pre_bh_local") >= 2 and n1.counter("pre_bh_node2") >= 2
    assert head.counter("pre_to_block35") == before  # node1's blackhole stopped them all


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
    # busybox ping from one of them (a minimal Debian host has no ping of its own)
    silent = n2.exec(ids[0], f"for ip in {' '.join(addresses)}; do ping -c1 -W2 $ip >/dev/null || echo $ip; done")
    assert silent.stdout.split() == []
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


def test_run_rm_leaves_no_veth_even_when_another_process_holds_the_containers_netns(cluster):
    node = cluster.node2
    # The usual case: the kernel takes the pair with the container's netns, and pyctr waits for it.
    lines = node.pyctr("--explain", "run", "--rm", "alpine", "true").stderr.splitlines()
    host = next(l.split()[3] for l in lines if l.startswith("ip link add veth"))
    assert node.run("ip", "link", "show", host, check=False).returncode != 0
    # A process that holds the netns keeps the pair alive past PID 1: pyctr deletes it itself.
    run = node.pyctr_spawn("run", "--rm", "--name", "held", "alpine", "sleep", "2")
    pid = eventually(lambda: node.pyctr("inspect", "-f", "{{.State.Pid}}", "held", check=False).stdout.strip()
                     not in ("", "0") and node.inspect("held", "{{.State.Pid}}"), timeout=30)
    host = "veth" + node.inspect("held", "{{.Id}}")[:8]
    holder = node.sandbox.spawn(["nsenter", f"--net=/proc/{pid}/ns/net", "sleep", "60"])
    eventually(lambda: "eth0" in node.run("nsenter", f"--net=/proc/{holder.pid}/ns/net", "ip", "-o", "link",
                                          check=False).stdout)
    assert read_output(run)[0] == 0
    assert node.run("ip", "link", "show", host, check=False).returncode != 0
    assert "eth0" not in node.run("nsenter", f"--net=/proc/{holder.pid}/ns/net", "ip", "-o", "link").stdout
    holder.kill()
    holder.wait()


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
    failures = not_one_line_errors(n1, cases)
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
    for expected in (f"echo 1 > /proc/sys/net/ipv4/conf/{host}/rp_filter",
                     f"echo 1 > /proc/sys/net/ipv4/conf/{host}/proxy_arp",
                     f"echo 0 > /proc/sys/net/ipv4/neigh/{host}/proxy_delay",
                     f"ip link set {host} up"):
        assert expected in lines, lines
    # what runs is `replace` (a leftover /32 of an earlier run must not fail the start)
    assert any(re.fullmatch(rf"ip route replace 172\.19\.36\.\d+/32 dev {host} scope link", l) for l in lines)
    assert any(l.endswith("-n ip route add 169.254.1.1 dev eth0 scope link") for l in lines)
    assert any(l.endswith("-n ip route add default via 169.254.1.1 dev eth0") for l in lines)


def test_explain_prints_a_sysctl_write_only_when_it_writes(cluster):
    node = cluster.sandbox.node("node6", cluster.images)
    assert node.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"
    first = node.pyctr("--explain", "network", "create", "--subnet", "172.30.0.0/24", "x1").stderr.splitlines()
    assert "echo 1 > /proc/sys/net/ipv4/ip_forward" in first, first
    assert node.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    second = node.pyctr("--explain", "network", "create", "--subnet", "172.30.1.0/24", "x2").stderr.splitlines()
    assert "# net.ipv4.ip_forward is 1 already" in second, second
    assert not [l for l in second if "ip_forward" in l and not l.startswith("#")], second
    node.pyctr("network", "rm", "x1", "x2")


def test_explain_shows_the_deletion_of_a_leftover_veth(cluster):
    node = cluster.node2
    cid = node.pyctr("create", "--name", "leftover", *SLEEP).stdout.strip().splitlines()[-1]
    host = "veth" + cid[:8]
    node.run("ip", "link", "add", host, "type", "veth", "peer", "name", "leftover-peer")
    lines = node.pyctr("--explain", "start", "leftover").stderr.splitlines()
    delete = lines.index(f"ip link del {host}")
    assert lines[delete + 1].startswith(f"ip link add {host} type veth peer name eth0"), lines
    assert node.run("ip", "link", "show", "leftover-peer", check=False).returncode != 0  # it went
    node.exec("leftover", f"ping -c1 -W2 {node.inspect('leftover', '{{.NetworkSettings.Gateway}}')}")  # the new pair works
    node.pyctr("rm", "-f", "leftover")


def test_explain_of_rm_f_prints_the_network_teardown(cluster):
    node = cluster.node2
    cid = node.start("--name", "torn", "-p", "8095:80", *SLEEP)
    host = "veth" + cid[:8]
    chain = node.run("nft", "-a", "list", "chain", "ip", "pyctr", "prerouting").stdout
    handle = re.search(rf'comment "pyctr container {cid}" # handle (\d+)', chain).group(1)
    lines = node.pyctr("--explain", "rm", "-f", "torn").stderr.splitlines()
    assert f"delete rule ip pyctr prerouting handle {handle}" in lines, lines
    assert f"ip link del {host}" in lines, lines
    assert node.run("ip", "link", "show", host, check=False).returncode != 0
    assert f"pyctr container {cid}" not in node.run("nft", "list", "table", "ip", "pyctr").stdout
