"""Handlers of the commands that only read containers: ps, inspect, info, logs, stats, top.

None imports lifecycle or what it brings (the engine, ctypes, pathlib), and ps, inspect and logs
import nothing beyond the records and humanize (tests/test_cli.py checks), so that they start
about as fast as Python itself; json only to print JSON (records are read by jsonstore.loads);
info, stats and top import cgroups when they run.
"""

import os
import sys
import time

from pyctr.runtime import container as records
from pyctr.runtime import humanize, jsonstore
from pyctr.runtime.errors import PyctrError


def _json_text(value, indent: int | None = None) -> str:
    import json  # here, not above: its decoder imports re (see jsonstore.loads)

    return json.dumps(value, indent=indent)


# --- listing and inspection ----------------------------------------------------------------
def _status_text(c: records.Container) -> str:
    if c.running:
        return "Up " + humanize.duration(time.time() - humanize.parse_rfc3339(c.state.get("StartedAt", "")))
    if c.status == "exited":
        return f"Exited ({c.state.get('ExitCode', 0)}) " + humanize.ago(c.state.get("FinishedAt", ""))
    return c.status.capitalize()


def _ports_text(c: records.Container) -> str:
    out = []
    for port, bindings in (c.config["HostConfig"].get("PortBindings") or {}).items():
        for b in bindings:
            out.append(f"{b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}->{port}")
    return ", ".join(out)


FILTER_KEYS = ("label", "network")


def _filters(items: list[str]) -> dict[str, list[str]]:
    """`--filter KEY=VALUE`s by key, checked as Docker checks them."""
    found: dict[str, list[str]] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise PyctrError(f"bad format of filter (expected name=value): {item!r}")
        key = key.strip().lower()
        if key not in FILTER_KEYS:
            raise PyctrError(f"invalid filter '{key}' (pyctr knows {', '.join(FILTER_KEYS)})")
        found.setdefault(key, []).append(value)
    return found


def _selected(c: records.Container, filters: dict[str, list[str]]) -> bool:
    """Docker's rules: every label filter must match (label=KEY or label=KEY=VALUE); one of the
    network filters must (the network's name, or a prefix of its ID)."""
    labels = c.config["Config"].get("Labels") or {}
    for wanted in filters.get("label", ()):
        key, equals, value = wanted.partition("=")
        if key not in labels or (equals and labels[key] != value):
            return False
    wanted_networks = filters.get("network")
    if wanted_networks:
        mode = c.config["HostConfig"].get("NetworkMode")
        attached = (c.config.get("NetworkSettings") or {}).get("Networks") or {}
        ids = [n.get("NetworkID") or "" for n in attached.values() if isinstance(n, dict)]
        if not any(name == mode or any(i.startswith(name) for i in ids if name) for name in wanted_networks):
            return False
    return True


def cmd_ps(args) -> int:
    filters = _filters(getattr(args, "filter", None) or [])
    containers = [c for c in records.list_all() if (args.all or c.running) and _selected(c, filters)]
    if args.quiet:
        for c in containers:
            print(c.id if args.no_trunc else c.short_id)
        return 0
    if args.format == "json":
        print(_json_text([_ps_entry(c) for c in containers], indent=2))
        return 0
    rows = []
    for c in containers:
        command = " ".join([c.config["Path"], *c.config["Args"]])
        if not args.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        rows.append([c.id if args.no_trunc else c.short_id, c.config["Image"], f'"{command}"',
                     humanize.ago(c.config["Created"]), _status_text(c), _ports_text(c), c.name])
    print(humanize.table(rows, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]))
    return 0


def _ps_entry(c: records.Container) -> dict:
    """Podman's `ps --format json` keys, which Docker users script against too."""
    return {"Id": c.id, "Names": [c.name], "Image": c.config["Image"], "ImageID": c.config["ImageID"],
            "Command": [c.config["Path"], *c.config["Args"]], "Created": c.config["Created"], "State": c.status,
            "Status": _status_text(c), "Pid": c.pid if c.running else 0,
            "ExitCode": c.state.get("ExitCode", 0), "Ports": _ports_text(c),
            "Labels": c.config["Config"].get("Labels") or {},
            "Networks": [c.config["HostConfig"]["NetworkMode"]]}


def cmd_inspect(args) -> int:
    """Containers first, then images, as `docker inspect` looks NAME up."""
    return inspect_refs(args.containers, args.format)


def inspect_refs(refs: list[str], template: str | None, containers: bool = True) -> int:
    """Inspect each ref: a container (when `containers`), else an image (Docker's image keys)."""
    results, missing = [], []
    for ref in refs:
        error = None
        if containers:
            try:
                results.append(records.find(ref).inspect())
                continue
            except PyctrError as e:
                error = e
        image = _local_image(ref)
        if image is not None:
            results.append(image)
        elif error is not None and "No such container" not in str(error):
            missing.append(str(error))
        else:
            missing.append(f"No such object: {ref}" if containers else f"No such image: {ref}")
    if template:
        for item in results:
            print(_render_template(template, item))
    else:
        print(_json_text(results, indent=4))
    for message in missing:
        print(f"Error: {message}", file=sys.stderr)
    return 125 if missing else 0


def _local_image(ref: str) -> dict | None:
    from pyctr.images import store

    try:
        return store.inspect_image(ref)
    except PyctrError:
        return None  # not even a valid image reference


def _render_template(template: str, data: dict) -> str:
    """The common subset of Go templates: {{.A.B}} and {{json .A}}."""
    import re

    def field(path: str):
        value = data
        for key in filter(None, path.split(".")):
            if not isinstance(value, dict) or key not in value:
                raise PyctrError(f"template: no field {key!r} in {path!r}")
            value = value[key]
        return value

    def replace(match):
        expr = match.group(1).strip()
        if expr.startswith("json "):
            return _json_text(field(expr[5:].strip()))
        value = field(expr)
        if isinstance(value, bool):
            return str(value).lower()
        return _json_text(value) if isinstance(value, (dict, list)) else str(value)

    return re.sub(r"\{\{(.*?)\}\}", replace, template)


def cmd_info(args) -> int:
    """`docker info`'s system-wide facts, with the cgroup backend made explicit."""
    info = system_info()
    if args.format:
        print(_json_text(info) if args.format == "json" else _render_template(args.format, info))
        return 0
    lines = [
        f"Containers: {info['Containers']}",
        f" Running: {info['ContainersRunning']}",
        f" Stopped: {info['ContainersStopped']}",
        f"Images: {info['Images']}",
        f"Server Version: {info['ServerVersion']}",
        f"Storage Driver: {info['Driver']}",
        f"Logging Driver: {info['LoggingDriver']}",
        f"Cgroup Driver: {info['CgroupDriver']}",
        f"Cgroup Version: {info['CgroupVersion']}",
        f"Cgroup Backend: {info['CgroupBackend']}",
        f" Controllers: {' '.join(info['CgroupControllers']) or 'none'}",
        f"Kernel Version: {info['KernelVersion']}",
        f"Operating System: {info['OperatingSystem']}",
        f"Architecture: {info['Architecture']}",
        f"CPUs: {info['NCPU']}",
        f"Total Memory: {humanize.binary_size(info['MemTotal'])}",
        f"Pyctr Root Dir: {info['PyctrRootDir']}",
    ]
    print("\n".join(lines))
    return 0


def system_info() -> dict:
    from pyctr.images import store
    from pyctr.runtime import cgroups, cli, settings

    containers = records.list_all()
    running = sum(1 for c in containers if c.running)
    layout = cgroups.detect()
    return {
        "Containers": len(containers), "ContainersRunning": running,
        "ContainersStopped": len(containers) - running, "Images": len(store.list_images()),
        "ServerVersion": cli.VERSION, "Driver": "overlay", "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs", "CgroupVersion": layout.version,
        "CgroupBackend": describe_cgroups(layout), "CgroupControllers": _cgroup_controllers(layout),
        "KernelVersion": os.uname().release, "OperatingSystem": _os_name(),
        "Architecture": os.uname().machine, "NCPU": os.cpu_count(), "MemTotal": _host_memory(),
        "PyctrRootDir": str(settings.current().root),
    }


def describe_cgroups(layout) -> str:
    forced = f", forced by PYCTR_CGROUP_VERSION={layout.forced}" if layout.forced else ""
    if layout.mode == "v1":
        return f"v1 (controllers under {layout.v1_root}{forced})"
    if layout.mode == "hybrid":
        return f"hybrid (limits through v1 under {layout.v1_root}, membership in cgroup2 at {layout.unified})"
    if layout.mode == "v2":
        return f"v2 (cgroup2 at {layout.unified}{forced})"
    return f"none: {layout.reason}; containers cannot start"


def _cgroup_controllers(layout) -> list[str]:
    """The controllers pyctr can use for limits."""
    from pyctr.runtime import cgroups

    if layout.mode in ("v1", "hybrid"):
        return sorted(set(cgroups.CgroupV1.CONTROLLERS) & layout.v1_controllers)
    if layout.mode == "v2":
        return sorted({"memory", "cpu", "pids"} & cgroups.CgroupV2("", layout.unified).controllers())
    return []


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "unknown"


# --- logs, stats, top ------------------------------------------------------------------------
def cmd_logs(args) -> int:
    c = records.find(args.container)
    tail = None
    if args.tail != "all":
        if not args.tail.isdigit():
            raise PyctrError(f"invalid --tail value {args.tail!r}: a number or 'all'")
        tail = int(args.tail)
    try:
        log = open(c.log_file, "rb")
    except FileNotFoundError:
        return 0  # never started detached: nothing was captured
    with log:
        # Line by line: a log may hold more than the memory of the machine.
        if tail is None:
            lines = log
        else:
            from collections import deque

            lines = deque(log, maxlen=tail) if tail else []
        for line in lines:
            _print_log_line(line, args.timestamps)
        while args.follow:
            line = log.readline()
            if line:
                _print_log_line(line, args.timestamps)
                continue
            if not records.load(c.id).refresh().running:
                for line in log.readlines():
                    _print_log_line(line, args.timestamps)
                break
            time.sleep(0.1)
    return 0


def _print_log_line(raw: bytes, timestamps: bool) -> None:
    try:
        entry = jsonstore.loads(raw)
    except ValueError:
        return  # a line the monitor was writing when it was killed
    stream = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
    text = entry.get("log", "")
    if timestamps:
        text = f"{entry.get('time', '')} {text}"
    # The log's UTF-8 bytes, whatever the caller's locale, as Docker writes them.
    stream.buffer.write(text.encode("utf-8", "replace"))
    stream.buffer.flush()


def cmd_stats(args) -> int:
    from pyctr.runtime import cgroups

    containers = [records.find(r) for r in args.containers] if args.containers else \
        [c for c in records.list_all() if c.running]
    while True:
        first = {}
        for c in containers:
            try:
                first[c.id] = (cgroups.for_container(c.id).usage(), time.monotonic())
            except OSError:
                pass
        time.sleep(0.5)  # cpu % needs two samples, as docker stats takes
        rows, entries = [], []
        for c in containers:
            if c.id not in first:
                continue
            try:
                now = cgroups.for_container(c.id).usage()
            except OSError:
                continue
            before, t0 = first[c.id]
            cpu = 100.0 * (now.cpu_ns - before.cpu_ns) / ((time.monotonic() - t0) * 1e9)
            limit = now.memory_limit or _host_memory()
            entries.append({"ID": c.short_id, "Name": c.name, "CPUPerc": f"{cpu:.2f}%",
                            "MemUsage": f"{humanize.binary_size(now.memory)} / {humanize.binary_size(limit)}",
                            "MemPerc": f"{100.0 * now.memory / limit:.2f}%", "PIDs": str(now.pids)})
            rows.append(list(entries[-1].values()))
        if not args.no_stream and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")  # redraw in place, as docker stats does
        if args.format == "json":
            print(_json_text(entries, indent=2))
        else:
            print(humanize.table(rows, ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]))
        if args.no_stream:
            return 0
        sys.stdout.flush()


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 1


def cmd_top(args) -> int:
    from pyctr.runtime import cgroups

    c = records.find(args.container)
    if not c.running:
        raise PyctrError(f"container {c.name} is not running")
    rows = []
    for pid in sorted(cgroups.for_container(c.id).pids()):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").strip()
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        ticks = (int(fields[11]) + int(fields[12])) // os.sysconf("SC_CLK_TCK")
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode()
        rows.append([str(uid), str(pid), fields[1].decode(),
                     time.strftime("%H:%M:%S", time.gmtime(ticks)), cmdline.decode() or f"[{comm}]"])
    print(humanize.table(rows, ["UID", "PID", "PPID", "TIME", "CMD"]))
    return 0
