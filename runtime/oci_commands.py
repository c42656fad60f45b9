"""pyctr-oci's commands: each takes the parsed arguments, calls the core, and returns an exit code."""

import os
import sys

from pyctr.runtime import engine, ocistate
from pyctr.runtime.errors import PyctrError

# json is imported where JSON is printed or read: with re, enum and functools, it would be ~5 ms
# of every start and delete, which podman runs for each container.


def _root(args) -> str:
    return os.path.abspath(args.root)


def _need_id(args) -> str:
    if not args.id:
        raise PyctrError(f"{args.command}: a container id is needed")
    ocistate.check_id(args.id)
    return args.id


def _load_spec(args):
    from pyctr.runtime import spec as specs

    bundle = os.path.abspath(args.bundle)
    spec = specs.load(bundle)
    if args.systemd_cgroup:
        spec.linux.cgroups_path = _systemd_path(spec.linux.cgroups_path, args.id)
    return spec


def _systemd_path(cgroups_path: str | None, container_id: str) -> str:
    """--systemd-cgroup: "slice:prefix:name" as runc's systemd driver lays it out. pyctr writes
    cgroupfs itself; without systemd running, such a path names nothing systemd manages."""
    if not os.path.isdir("/run/systemd/system"):
        raise PyctrError("--systemd-cgroup: systemd is not running on this host; use the cgroupfs driver "
                         "(drop --systemd-cgroup, or --cgroup-manager cgroupfs in podman)")
    slice_name, prefix, name = (cgroups_path or f"system.slice:pyctr:{container_id}").split(":")
    slice_name = slice_name or "system.slice"
    parts, path = slice_name.removesuffix(".slice").split("-"), ""
    for i in range(1, len(parts) + 1):
        path += "/" + "-".join(parts[:i]) + ".slice"
    return f"{path}/{prefix}-{name}.scope" if prefix else f"{path}/{name}"


def create(args) -> int:
    container_id = _need_id(args)
    root = _root(args)
    engine.create(_load_spec(args), root, container_id, pid_file=args.pid_file,
                  console_socket=args.console_socket, preserve_fds=args.preserve_fds, no_pivot=args.no_pivot,
                  new_keyring=not args.no_new_keyring, seccomp_cache=ocistate.seccomp_cache(root))
    return 0


def start(args) -> int:
    engine.start(_root(args), _need_id(args))
    return 0


def run(args) -> int:
    """create and start, then wait for the init and give its exit status (runc run)."""
    import _signal  # not signal, whose enums bring enum, functools and collections

    from pyctr.runtime import monitor

    container_id = _need_id(args)
    root = _root(args)
    if not args.detach:
        import prctl

        prctl.set_child_subreaper(True)  # the init is orphaned at create: we adopt it, to wait for it
    spec = _load_spec(args)
    receiver = console_fd = None
    if spec.process is not None and spec.process.terminal and not args.console_socket and not args.detach:
        # As `runc run` in the foreground: the container's pty comes to us, and we relay it.
        from pyctr.runtime import terminal

        receiver, console_fd = terminal.console_pair()
    created = engine.create(spec, root, container_id, pid_file=args.pid_file,
                            console_socket=args.console_socket, console_fd=console_fd,
                            preserve_fds=args.preserve_fds, no_pivot=args.no_pivot,
                            new_keyring=not args.no_new_keyring, seccomp_cache=ocistate.seccomp_cache(root))
    if console_fd is not None:
        os.close(console_fd)
    try:
        engine.start(root, container_id)
    except BaseException:
        engine.delete(root, container_id, force=True)
        raise
    if args.detach:
        return 0
    forward = lambda sig, _frame: os.kill(created.pid, sig)  # noqa: E731
    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2):
        _signal.signal(sig, forward)
    if receiver is not None:
        from pyctr.runtime import terminal

        master = terminal.receive_console(receiver)
        if master is not None:
            terminal.proxy(master, forward_stdin=True)
    status = monitor.wait_for(created.pid)
    if not args.keep:
        engine.delete(root, container_id, force=True)
    return monitor.exit_code_of(status)


def state(args) -> int:
    import json

    print(json.dumps(engine.state(_root(args), _need_id(args)), indent=2))
    return 0


def kill(args) -> int:
    from pyctr.runtime import spec as specs

    engine.kill(_root(args), _need_id(args), specs.signal_number(args.signal), args.all)
    return 0


def delete(args) -> int:
    engine.delete(_root(args), _need_id(args), args.force)
    return 0


def exec(args) -> int:
    from pyctr.runtime import nsenter

    return nsenter.oci_exec(_root(args), _need_id(args), args)


def list(args) -> int:  # noqa: A001  (runc's command name)
    import json

    found = engine.list_all(_root(args))
    if args.quiet:
        for sd in found:
            print(sd.id)
        return 0
    rows = [{"ociVersion": sd.record.get("ociVersion", ""), "id": sd.id, "pid": sd.pid if sd.status() != "stopped"
             else 0, "status": sd.status(), "bundle": sd.record.get("bundle", ""), "rootfs": sd.record.get("rootfs", ""),
             "created": sd.record.get("created", ""), "annotations": sd.record.get("annotations", {}),
             "owner": sd.record.get("owner", "root")} for sd in found]
    if args.format == "json":
        print(json.dumps(rows))
        return 0
    table = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    table += [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def ps(args) -> int:
    import json

    pids = engine.processes(_root(args), _need_id(args))
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    import subprocess

    from pyctr.runtime import hosttools

    ps_args = args.ps_args or ["-ef"]
    result = subprocess.run([hosttools.tool("ps"), *ps_args], capture_output=True, text=True)
    if result.returncode != 0:
        raise PyctrError(f"ps {' '.join(ps_args)}: {result.stderr.strip()}")
    lines = result.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise PyctrError("ps: its output has no PID column")
    column = header.index("PID")
    print(lines[0])
    for line in lines[1:]:
        fields = line.split(None, len(header) - 1)
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in pids:
            print(line)
    return 0


def pause(args) -> int:
    engine.pause(_root(args), _need_id(args))
    return 0


def resume(args) -> int:
    engine.resume(_root(args), _need_id(args))
    return 0


def update(args) -> int:
    engine.update(_root(args), _need_id(args), _resources_from_args(args))
    return 0


def _resources_from_args(args) -> dict:
    """--resources JSON (or -, stdin) and runc's flags for memory, cpu, pids and blkio."""
    import json

    resources: dict = {}
    if args.resources:
        try:
            text = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
        except OSError as e:
            raise PyctrError(f"--resources {args.resources}: {e.strerror}") from None
        try:
            resources = json.loads(text)
        except json.JSONDecodeError as e:
            raise PyctrError(f"--resources: not valid JSON: {e}") from None
    from pyctr.runtime import options

    def number(flag: str, value: str | None, memory: bool = False) -> int | None:
        if value is None:
            return None
        if memory:
            return -1 if value == "-1" else options.parse_memory(value)
        try:
            return int(value)
        except ValueError:
            raise PyctrError(f"{flag}: {value!r} is not a number") from None

    memory = {k: v for k, v in {"limit": number("--memory", args.memory, True),
                                "reservation": number("--memory-reservation", args.memory_reservation, True),
                                "swap": number("--memory-swap", args.memory_swap, True),
                                "kernel": number("--kernel-memory", args.kernel_memory, True)}.items() if v is not None}
    cpu = {k: v for k, v in {"shares": number("--cpu-shares", args.cpu_shares),
                             "quota": number("--cpu-quota", args.cpu_quota),
                             "period": number("--cpu-period", args.cpu_period),
                             "realtimePeriod": number("--cpu-rt-period", args.cpu_rt_period),
                             "realtimeRuntime": number("--cpu-rt-runtime", args.cpu_rt_runtime),
                             "cpus": args.cpuset_cpus, "mems": args.cpuset_mems}.items() if v is not None}
    if memory:
        resources.setdefault("memory", {}).update(memory)
    if cpu:
        resources.setdefault("cpu", {}).update(cpu)
    if args.pids_limit is not None:
        resources.setdefault("pids", {})["limit"] = number("--pids-limit", args.pids_limit)
    if args.blkio_weight is not None:
        resources.setdefault("blockIO", {})["weight"] = number("--blkio-weight", args.blkio_weight)
    return resources


def events(args) -> int:
    """--stats: one stats event; else one every --interval until the container stops (runc's shape)."""
    import json
    import time

    root, container_id = _root(args), _need_id(args)
    interval = _seconds(args.interval)
    while True:
        event = {"type": "stats", "id": container_id, "data": engine.stats(root, container_id)}
        print(json.dumps(event), flush=True)
        if args.stats:
            return 0
        time.sleep(interval)
        if engine.state(root, container_id)["status"] == "stopped":
            return 0


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[:-len(suffix)].replace(".", "", 1).isdigit():
            return float(text[:-len(suffix)]) * units[suffix]
    raise PyctrError(f"--interval {text!r}: use a duration such as 5s or 500ms")


def features(args) -> int:
    import json

    from pyctr.runtime import spec as specs

    print(json.dumps(specs.features(), indent=2))
    return 0


def spec(args) -> int:
    import json

    from pyctr.runtime import spec as specs

    if args.rootless:
        raise PyctrError("--rootless: pyctr-oci runs containers as root only")
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise PyctrError(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        json.dump(specs.default_spec(), f, indent=2)
        f.write("\n")
    return 0
