"""Issue 4, piece by piece: IPAM, port bindings, the driver registry, host routes, pyctr's
nftables table, `ip -batch` and its errors, and what the CLI's start-up and the network path import."""

import ipaddress
import json
import subprocess
import textwrap

import pytest

from pyctr.network import driver, hostroutes, ipam, networks, ports
from pyctr.network.driver import Endpoint, NetworkDriver, PortMapping
from pyctr.runtime import jsonstore, settings
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError

from netsandbox import PYTHON, Sandbox


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "_current", None)
    settings.configure(str(tmp_path / "root"), str(tmp_path / "state"))
    yield tmp_path
    monkeypatch.setattr(settings, "_current", None)


def a_network(subnet="10.77.0.0/29", gateway="10.77.0.1", name="n1", driver_name="bridge"):
    net = networks.Network(name=name, driver=driver_name, subnet=subnet, gateway=gateway, bridge="br-t")
    networks.save(net)
    return net


def record_containers(*ids):
    for cid in ids:
        jsonstore.write_json(settings.current().containers_dir / cid / "config.json", {"Id": cid})


# --- IPAM -----------------------------------------------------------------------------------
def test_ipam_hands_out_the_lowest_free_host_never_the_gateway_network_or_broadcast(root):
    net = a_network()  # 10.77.0.0/29: .1 is the gateway, .7 the broadcast
    got = [str(ipam.allocate(net, f"c{i}")) for i in range(5)]
    assert got == ["10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5", "10.77.0.6"]


def test_ipam_gives_a_container_the_same_address_again(root):
    net = a_network()
    first = ipam.allocate(net, "c1")
    assert ipam.allocate(net, "c1") == first


def test_ipam_exhaustion_is_a_clear_error(root):
    net = a_network()
    record_containers(*(f"c{i}" for i in range(5)))
    for i in range(5):
        ipam.allocate(net, f"c{i}")
    with pytest.raises(PyctrError, match=r"network n1 has no free address left in 10.77.0.0/29"):
        ipam.allocate(net, "c9")


def test_ipam_reclaims_addresses_of_containers_that_no_longer_exist(root):
    net = a_network()
    record_containers("alive")
    for i in range(4):
        ipam.allocate(net, f"gone{i}")
    ipam.allocate(net, "alive")
    assert str(ipam.allocate(net, "new")) == "10.77.0.2"


def test_ipam_reserves_a_requested_address_and_refuses_bad_ones(root):
    net = a_network()
    assert str(ipam.allocate(net, "c1", ipaddress.IPv4Address("10.77.0.5"))) == "10.77.0.5"
    assert str(ipam.allocate(net, "c2")) == "10.77.0.2"
    with pytest.raises(ConflictError, match="already in use"):
        ipam.allocate(net, "c3", ipaddress.IPv4Address("10.77.0.5"))
    with pytest.raises(ConflictError, match="gateway"):
        ipam.allocate(net, "c3", ipaddress.IPv4Address("10.77.0.1"))
    with pytest.raises(ConflictError, match="broadcast"):
        ipam.allocate(net, "c3", ipaddress.IPv4Address("10.77.0.7"))
    with pytest.raises(PyctrError, match="outside"):
        ipam.allocate(net, "c3", ipaddress.IPv4Address("10.78.0.5"))


def test_ipam_release_frees_and_allocations_survive_a_restart(root):
    net = a_network()
    ipam.allocate(net, "c1")
    ipam.allocate(net, "c2")
    ipam.release(net, "c1")
    ipam.release(net, "c1")  # idempotent
    on_disk = json.loads((net.dir / "ipam.json").read_text())
    assert on_disk["allocations"] == {"10.77.0.3": "c2"}
    reloaded = networks.load("n1")  # what a new pyctr process sees
    assert ipam.allocations(reloaded) == {"10.77.0.3": "c2"}
    assert str(ipam.allocate(reloaded, "c3")) == "10.77.0.2"


# --- port bindings --------------------------------------------------------------------------
def test_port_bindings_become_mappings_and_back():
    bindings = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostPort": "5353"}]}
    mappings = ports.from_bindings(bindings)
    assert mappings == [PortMapping(8080, 80, "tcp"), PortMapping(5353, 53, "udp")]
    assert ports.to_docker(mappings) == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                                         "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}]}


@pytest.mark.parametrize("bindings, message", [
    ({"80/sctp": [{"HostPort": "80"}]}, "invalid protocol"),
    ({"80/tcp": [{"HostPort": "70000"}]}, "invalid host port"),
    ({"0/tcp": [{"HostPort": "80"}]}, "invalid container port"),
    ({"80/tcp": [{"HostPort": ""}]}, "needs a host port"),
    ({"80/tcp": [{"HostPort": "80"}], "81/tcp": [{"HostPort": "80"}]}, "published twice"),
    ({"80/tcp": [{"HostIp": "nope", "HostPort": "80"}]}, "invalid host IP"),
])
def test_bad_port_bindings_are_refused(bindings, message):
    with pytest.raises(PyctrError, match=message):
        ports.from_bindings(bindings)


def test_a_host_port_is_free_unless_the_same_port_and_protocol_share_an_address():
    published = [("pyctr container aaaaaaaaaaaaffff", "tcp", 8080, ""),
                 ("pyctr container bbbbbbbbbbbbffff", "udp", 53, "10.0.0.1")]
    ports.check_free([PortMapping(8080, 80, "udp"), PortMapping(53, 53, "udp", "10.0.0.2"),
                      PortMapping(8081, 80, "tcp"), PortMapping(53, 53, "tcp", "10.0.0.1")], published)
    for taken, holder in ((PortMapping(8080, 81, "tcp"), "aaaaaaaaaaaa"),
                          (PortMapping(8080, 81, "tcp", "10.0.0.7"), "aaaaaaaaaaaa"),
                          (PortMapping(53, 53, "udp"), "bbbbbbbbbbbb"),
                          (PortMapping(53, 54, "udp", "10.0.0.1"), "bbbbbbbbbbbb")):
        with pytest.raises(ConflictError, match=f"already published by container {holder}$"):
            ports.check_free([taken], published)


# --- driver registry ------------------------------------------------------------------------
class PluginDriver(NetworkDriver):
    """A third-party driver, as a package would declare it under pyctr.network_drivers."""

    def create(self, net): pass
    def remove(self, net): pass
    def attach(self, net, container_id, pid, address, ports): return Endpoint(interface="eth0")
    def detach(self, net, container_id, ports): pass


def test_registry_finds_the_built_in_drivers():
    assert [type(driver.get_driver(n)).__name__ for n in ("none", "host", "bridge", "routed")] == [
        "NoneDriver", "HostDriver", "BridgeDriver", "RoutedDriver"]


def test_built_in_drivers_are_also_declared_as_entry_points():
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group=driver.ENTRY_POINT_GROUP)}
    assert {name: declared.get(name) for name in driver.BUILTIN_DRIVERS} == driver.BUILTIN_DRIVERS


def test_registry_loads_a_third_party_driver_from_its_entry_point(monkeypatch):
    monkeypatch.setattr(driver, "_entry_points", lambda: {"plugin": f"{__name__}:PluginDriver"})
    found = driver.get_driver("plugin")
    assert isinstance(found, PluginDriver) and found.name == "plugin"
    assert "plugin" in driver.driver_names()


def test_an_unknown_driver_is_a_clear_error():
    with pytest.raises(NotFoundError, match="network driver 'nosuch' not found"):
        driver.get_driver("nosuch")


# --- host routes ----------------------------------------------------------------------------
PROC_NET_ROUTE = textwrap.dedent("""\
    Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
    eth0\t00000000\t01028DC0\t0003\t0\t0\t0\t00000000\t0\t0\t0
    eth0\t00008D0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
    *\t002313AC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
    """)


def test_host_routes_are_read_as_ip_route_prints_them(tmp_path):
    path = tmp_path / "route"
    path.write_text(PROC_NET_ROUTE)
    assert [str(r) for r in hostroutes.routes(str(path))] == [
        "0.0.0.0/0 via 192.141.2.1 dev eth0", "10.141.0.0/16 dev eth0", "blackhole 172.19.35.0/24"]


def test_a_subnet_overlapping_a_host_route_is_refused_naming_the_route(root, tmp_path, monkeypatch):
    path = tmp_path / "route"
    path.write_text(PROC_NET_ROUTE)
    read_proc = hostroutes.routes
    monkeypatch.setattr(hostroutes, "routes", lambda: read_proc(str(path)))
    with pytest.raises(ConflictError, match=r"overlaps the host route '10.141.0.0/16 dev eth0'"):
        networks.check_free_subnet(ipaddress.IPv4Network("10.141.7.0/24"))
    with pytest.raises(ConflictError, match=r"overlaps the host route 'blackhole 172.19.35.0/24'"):
        networks.check_free_subnet(ipaddress.IPv4Network("172.19.0.0/16"))
    networks.check_free_subnet(ipaddress.IPv4Network("172.17.0.0/16"))  # the default route is ignored
    a_network(subnet="172.17.0.0/16", gateway="172.17.0.1", name="bridge")
    with pytest.raises(ConflictError, match=r"overlaps network bridge \(172.17.0.0/16\)"):
        networks.check_free_subnet(ipaddress.IPv4Network("172.17.5.0/24"))
    assert str(networks.pick_subnet()) == "172.18.0.0/16"


# --- start-up cost --------------------------------------------------------------------------
# Each of these costs milliseconds of every start on a network (asyncio about 40, dataclasses 8,
# subprocess 4); pyctr's network code needs none of them.
HEAVY = {"pyroute2", "asyncio", "dataclasses", "subprocess", "uuid", "shutil"}


def test_cli_start_up_and_network_ls_import_nothing_heavy(tmp_path):
    code = ("import sys; from pyctr.runtime import cli; cli.build_parser(); "
            f"rc = cli.main(['network', 'ls']); print(sorted({HEAVY!r} & set(sys.modules)), rc)")
    env = {"PYCTR_ROOT": str(tmp_path / "root"), "PYCTR_STATE": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "[] 0"


def test_the_network_drivers_import_nothing_heavy():
    code = ("import sys; from pyctr.network import api, bridge, routed, iproute, nft; "
            f"print(sorted({HEAVY!r} & set(sys.modules)))")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


IPROUTE_SCRIPT = """
import sys
from pyctr.network import iproute
from pyctr.runtime.errors import PyctrError
iproute.run([["link", "add", "d0", "type", "bridge"], ["addr", "add", "10.3.0.1/24", "dev", "d0"]])
print(iproute.link_exists("d0"), iproute.link("d0")["linkinfo"]["info_kind"],
      [a["local"] for a in iproute.link("d0")["addr_info"]], iproute.link("nosuch"))
try:  # stops at the failing command, and names it
    iproute.run([["link", "set", "d0", "up"], ["link", "add", "d0", "type", "bridge"], ["link", "del", "d0"]])
except PyctrError as e:
    print(e)
print(iproute.link_exists("d0"))
iproute.run([["route", "del", "10.9.0.0/24", "via", "10.3.0.2"], ["link", "del", "d0"],
             ["link", "del", "d0"]], missing_ok=True)  # what is gone already is not an error
print(iproute.link_exists("d0"))
"""


def test_ip_batches_run_in_order_stop_at_a_failure_and_name_the_failed_command():
    sandbox = Sandbox()
    try:
        ns = sandbox.netns("iproute")
        out = ns.run(PYTHON, "-c", IPROUTE_SCRIPT).stdout.splitlines()
        assert out == ["True bridge ['10.3.0.1'] None",
                       "ip link add d0 type bridge: RTNETLINK answers: File exists",
                       "True", "False"]
    finally:
        sandbox.close()


# --- pyctr's nftables table (in a namespace of its own) -------------------------------------
NFT_SCRIPT = """
import json, sys
from pyctr.runtime import settings
settings.configure(sys.argv[1], sys.argv[2])
from pyctr.network import nft
nft.replace_rules("pyctr network a", [nft.Rule("postrouting", "ip saddr 10.1.0.0/16 masquerade")])
nft.replace_rules("pyctr network a", [nft.Rule("postrouting", "ip saddr 10.1.0.0/16 masquerade")])
nft.replace_rules("pyctr container c1", [nft.Rule("prerouting", "tcp dport 8080 dnat to 10.1.0.2:80")])
nft.replace_rules("pyctr container c2", [nft.Rule("prerouting", "ip daddr 10.9.0.1 udp dport 53 dnat to 10.1.0.3:53")])
print(json.dumps(sorted(nft.published_ports("pyctr container c1"))))
nft.delete_rules("pyctr container c2")
print(json.dumps(sorted(nft.owners())))
nft.delete_rules("pyctr container c1")
print(json.dumps(sorted(nft.owners())))
nft.delete_rules("pyctr network a")
print(nft.table_exists())
"""


def test_nft_rules_are_found_by_owner_and_the_table_goes_whole_leaving_others(tmp_path):
    sandbox = Sandbox()
    try:
        ns = sandbox.netns("nft")
        ns.nft("add table ip other\nadd chain ip other keep { type filter hook forward priority 0; }\n")
        out = ns.run(PYTHON, "-c", NFT_SCRIPT, tmp_path / "root", tmp_path / "state").stdout.splitlines()
        assert out == ['[["pyctr container c2", "udp", 53, "10.9.0.1"]]',
                       '["pyctr container c1", "pyctr network a"]', '["pyctr network a"]', "False"]
        assert "table ip other" in ns.run("nft", "list", "tables").stdout
    finally:
        sandbox.close()
