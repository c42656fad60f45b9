"""`--explain` that a person can replay: the lines `run` prints are pasted into a shell, in a
throw-away mount namespace, and must rebuild the container's mount table, field by field.

The replay runs under the printed `unshare` line, with `--propagation private` (its mounts, and
its network namespace, vanish with it; sysfs differs per network namespace), on a copy
of the container's folder in the test's tmp_path: the printed paths of the container's folder
are rewritten to the copy's, the image's read-only layer is shared as the overlay's lower layer.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

CONTAINER_SIDE = "# --- in the container (after unshare) ---"
REPLAYED = ("mkdir", "chown", "chmod", "printf", "{", ":", "touch", "ln", "mount", "cd")


def _start(run_pyctr, pyctr_env):
    started = run_pyctr("--explain", "run", "-d", "--network", "none", "alpine", "sleep", "60")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.split()[-1]
    pid = json.loads(run_pyctr("inspect", cid).stdout)[0]["State"]["Pid"]
    folder = Path(pyctr_env["PYCTR_ROOT"]) / "containers" / cid
    return started.stderr.splitlines(), cid, pid, folder


def _mounts(mountinfo: str, under: str) -> dict[str, tuple[str, str, str, str]]:
    """Mount point (relative to `under`) -> (root, fstype, mount options, superblock options),
    the top mount of each place."""
    found = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        dash = fields.index("-")
        point = fields[4]
        if point != under and not point.startswith(under.rstrip("/") + "/"):
            continue
        relative = "/" + point[len(under):].lstrip("/")
        found[relative] = (fields[3], fields[dash + 1], fields[5], fields[dash + 3])
    return found


def _within_filesystem(path: str) -> str:
    """`path` as mountinfo's root field shows it: from the top of its filesystem."""
    top = Path(path)
    while not top.is_mount():
        top = top.parent
    return "/" + str(Path(path).relative_to(top)).lstrip(".")


def test_the_printed_start_reads_in_the_real_order(run_pyctr, pyctr_env):
    lines, _, pid, _ = _start(run_pyctr, pyctr_env)
    unshare = next(i for i, l in enumerate(lines) if l.startswith("unshare --pid"))
    assert "--cgroup" not in lines[unshare].split(), lines[unshare]
    joins = [i for i, l in enumerate(lines) if l.startswith(f"echo {pid} > ") and l.endswith("/cgroup.procs")]
    assert joins and min(joins) > unshare, lines
    # the cgroup namespace is entered in the cgroup, after the join, by the container's init
    # itself: its first step, before those it takes inside the container's root
    container_side = lines.index(CONTAINER_SIDE)
    assert lines.index("unshare --cgroup") > max(joins, default=0)
    assert container_side > lines.index("unshare --cgroup")
    assert lines[0] == "# --- on the host ---", lines[:3]
    assert lines.index("pivot_root . .") > container_side


def test_the_printed_mount_lines_rebuild_the_containers_mount_table(run_pyctr, pyctr_env, tmp_path):
    lines, cid, pid, folder = _start(run_pyctr, pyctr_env)
    replay = pyctr_env["PYCTR_ROOT"] + "/replay-" + cid[:12]  # the same filesystem as the container's folder
    end = lines.index("pivot_root . .")
    # The printed unshare, with private propagation so nothing of the replay reaches the host:
    # new mount, UTS, IPC, PID and network namespaces of the test's own.
    unshare = next(l for l in lines if l.startswith("unshare --pid")).split()
    assert {"--mount", "--net"} <= set(unshare), unshare
    script = []
    heredoc = False
    for line in lines[:end]:
        if heredoc or line.startswith("cat > "):  # the bundle's config.json, not a mount
            heredoc = line != "EOF"
            continue
        # mkfifo: the engine's exec.fifo, in the real container's state folder
        if line.startswith(("#", "unshare ", "echo ", "mkfifo ")) or "/sys/fs/cgroup" in line:
            continue
        assert line.split()[0] in REPLAYED, f"a line the replay does not know: {line}"
        script.append(line.replace(str(folder), replay))
    assert any(l.startswith("mount -t overlay") for l in script), script
    shell = "set -ex\n" + "\n".join(script) + "\ncat /proc/self/mountinfo\n"
    try:
        replayed = subprocess.run([*unshare, "--propagation", "private", "sh", "-c", shell],
                                  capture_output=True, text=True, timeout=60)
        assert replayed.returncode == 0, f"a printed line failed:\n{replayed.stderr[-3000:]}"

        ours = _mounts(replayed.stdout, replay + "/merged")
        theirs = _mounts(Path(f"/proc/{pid}/mountinfo").read_text(), "/")
        expected = {"/", "/proc", "/dev", "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                    "/dev/urandom", "/dev/tty", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                    "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}
        assert expected <= set(ours), sorted(ours)
        for target, (root, fstype, options, super_options) in ours.items():
            assert target in theirs, f"{target}: mounted by the replay, not in the container"
            for mine, its in ((replay, str(folder)), (_within_filesystem(replay), _within_filesystem(str(folder)))):
                root = root.replace(mine, its)
            replayed_fields = (root, fstype, options, super_options.replace(replay, str(folder)))
            assert replayed_fields == theirs[target], target

        # the bind sources hold what the container sees
        for name in ("hostname", "hosts", "resolv.conf"):
            assert Path(replay, name).read_text() == Path(f"/proc/{pid}/root/etc/{name}").read_text(), name
    finally:
        subprocess.run(["rm", "-rf", replay], check=False)


def test_rm_f_prints_the_kill_and_the_cgroup_removal(run_pyctr, pyctr_env):
    started = run_pyctr("run", "-d", "--network", "none", "alpine", "sleep", "60")
    cid = started.stdout.split()[-1]
    pid = json.loads(run_pyctr("inspect", cid).stdout)[0]["State"]["Pid"]
    cgroups = [Path(p) for p in subprocess.run(["sh", "-c", f"ls -d /sys/fs/cgroup/*/pyctr/{cid} /sys/fs/cgroup/pyctr/{cid}"],
                                               capture_output=True, text=True).stdout.split()]
    assert cgroups, "the container's cgroup folders"
    removed = run_pyctr("--explain", "rm", "-f", cid)
    assert removed.returncode == 0, removed.stderr
    lines = removed.stderr.splitlines()
    assert f"kill -9 {pid}" in lines, lines
    for folder in cgroups:
        assert f"rmdir {folder}" in lines, lines
        assert not folder.exists()
    assert lines.index(f"kill -9 {pid}") < lines.index(f"rmdir {cgroups[0]}") < lines.index(
        f"rm -rf {Path(pyctr_env['PYCTR_ROOT']) / 'containers' / cid}")


def test_a_detached_containers_teardown_lines_go_to_its_explain_log(run_pyctr, pyctr_env):
    started = run_pyctr("--explain", "run", "-d", "--network", "none", "alpine", "sh", "-c", "exit 3")
    cid = started.stdout.split()[-1]
    assert run_pyctr("wait", cid).stdout.strip() == "3"
    log = Path(json.loads(run_pyctr("inspect", cid).stdout)[0]["ExplainLog"])
    # `wait` returns once the exit is recorded; the monitor removes the cgroup right after.
    deadline = time.monotonic() + 10
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(l.startswith("rmdir ") and l.endswith(f"/pyctr/{cid}") for l in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines[:1] == ["# --- on the host ---"], lines
    assert any(l.startswith("rmdir ") and l.endswith(f"/pyctr/{cid}") for l in lines), lines


# --- the network lines, replayed in namespaces of the test's own ---------------------------
def _network_lines(stderr: str) -> list[str]:
    """The host's network steps of a trace: ip, /proc/sys writes, nft scripts, nsenter."""
    kept, lines, heredoc = [], stderr.splitlines(), False
    for line in lines:
        if heredoc:
            kept.append(line)
            heredoc = line != "EOF"
        elif line.startswith("nft -f - <<"):
            kept.append(line)
            heredoc = True
        elif line.startswith(("ip ", "nsenter -t ")) or (line.startswith("echo ") and " > /proc/sys/" in line):
            kept.append(line)
    return kept


def _network_state(node, pid: int | None) -> dict:
    """What the network lines build: the node's links, addresses, routes, nftables and the
    /proc/sys values they name, and the container's (PID's) links, addresses and routes."""
    state = {
        "links": node.sh("ip -o link show | awk -F': ' '{print $2, $3}' | sed 's/@[^ ]*//; s/<\\([^>]*\\)>.*/\\1/'"),
        "addresses": node.sh("ip -o -4 addr show | awk '{print $2, $4}'"),
        "routes": sorted(node.run("ip", "-4", "route", "show", "table", "all").stdout.splitlines()),
        "nft": node.run("nft", "list", "ruleset").stdout,
        "sysctl": node.sh("for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/veth*/* "
                          "/proc/sys/net/ipv4/neigh/veth*/proxy_delay; do if [ -f $f ]; then echo $f $(cat $f); fi; done"),
    }
    if pid is not None:  # the peer's namespace has another name in each: not compared
        deadline = time.monotonic() + 5
        while True:  # the kernel reports a veth's carrier a moment after both ends are up
            state["container"] = node.run("nsenter", "-t", pid, "-n", "sh", "-c",
                                          "ip -o link show | sed 's/^[0-9]*: //; s/@[^:]*//; s/ link-netns.*//'; "
                                          "ip -o -4 addr show | awk '{print $2, $4}'; ip route show").stdout
            if "NO-CARRIER" not in state["container"] or time.monotonic() > deadline:
                return state
            time.sleep(0.05)
    return state


def _same(replayed: dict, real: dict) -> None:
    for key in real:
        assert replayed[key] == real[key], f"{key}: replayed\n{replayed[key]}\nreal\n{real[key]}"


def _replay_network(pyctr_root, network_args: list[str]):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from netsandbox import Sandbox

    sandbox = Sandbox()
    try:
        real = sandbox.node("real", pyctr_root / "images")
        replay = sandbox.node("replay")
        created = real.pyctr("--explain", "network", "create", *network_args, "net1")
        started = real.pyctr("--explain", "run", "-d", "--network", "net1", "alpine", "sleep", "60")
        cid = started.stdout.split()[-1]
        pid = int(real.inspect(cid, "{{.State.Pid}}"))

        # A stand-in for the container: a process in a network namespace of its own, made inside
        # the replay namespace.
        stand_in = replay.spawn("unshare", "--net", "sleep", "60")
        host_netns = os.readlink(f"/proc/{stand_in.pid}/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{stand_in.pid}/ns/net") == host_netns and time.monotonic() < deadline:
            time.sleep(0.02)
        script = _network_lines(created.stderr) + _network_lines(started.stderr)
        assert any(l.startswith("nsenter -t") for l in script), script
        script = [re.sub(rf"(netns|-t) {pid}\b", rf"\1 {stand_in.pid}", l) for l in script]
        replay.run("nsenter", "-t", stand_in.pid, "-n", "ip", "link", "set", "lo", "up")  # the container's own line
        replayed = replay.run("sh", "-ec", "\n".join(script), check=False)
        assert replayed.returncode == 0, (replayed.stderr, script)
        _same(_network_state(replay, stand_in.pid), _network_state(real, pid))

        # the teardown too: rm -f and network rm, replayed, leave the same (empty) state
        removed = real.pyctr("--explain", "rm", "-f", cid)
        dropped = real.pyctr("--explain", "network", "rm", "net1")
        script = _network_lines(removed.stderr) + _network_lines(dropped.stderr)
        replayed = replay.run("sh", "-ec", "\n".join(script), check=False)
        assert replayed.returncode == 0, (replayed.stderr, script)
        _same(_network_state(replay, None), _network_state(real, None))
    finally:
        sandbox.close()


def test_the_printed_network_lines_rebuild_a_routed_container(pyctr_root):
    _replay_network(pyctr_root, ["--driver", "routed", "--subnet", "172.19.35.0/24"])


def test_the_printed_network_lines_rebuild_a_bridge_container(pyctr_root):
    _replay_network(pyctr_root, ["--subnet", "172.30.9.0/24"])
