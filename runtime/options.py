"""Parsing of `run`/`create` flags into Docker-shaped config, with Docker's error messages."""

import os
import re

from pyctr.runtime.errors import PyctrError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 6 << 20  # Docker's floor: below it the runtime itself cannot start


def parse_memory(value: str | None) -> int:
    if value is None:
        return 0
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", value.lower())
    if not match:
        raise PyctrError(f'invalid argument "{value}" for "-m, --memory" flag: invalid size: \'{value}\'')
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size < MIN_MEMORY:
        raise PyctrError("Minimum memory limit allowed is 6MB")
    return size


def parse_cpus(value: str | None) -> int:
    """--cpus as NanoCpus (CPUs * 1e9), Docker's unit."""
    if value is None:
        return 0
    try:
        cpus = float(value)
    except ValueError:
        raise PyctrError(f'invalid argument "{value}" for "--cpus" flag: failed to parse {value} as a rational number')
    available = os.cpu_count() or 1
    if not 0.01 <= cpus <= available:
        raise PyctrError(f"range of CPUs is from 0.01 to {available:.2f}, as there are only {available} CPUs available")
    return int(round(cpus * 1e9))


def parse_env(items: list[str], files: list[str]) -> list[str]:
    """KEY=VALUE pairs; a bare KEY takes the value from pyctr's own environment, as Docker does."""
    pairs: list[str] = []
    for path in files:
        lines = [line.strip() for line in _file_lines(path, "an env file")]
        items_from_file = [line for line in lines if line and not line.startswith("#")]
        pairs += _env_pairs(items_from_file)
    return pairs + _env_pairs(items)


def _file_lines(path: str, kind: str, encoding: str | None = None) -> list[str]:
    """The lines of an --env-file or --label-file, without their line ends; one line if it
    cannot be read."""
    try:
        with open(path, encoding=encoding) as f:
            return [line.rstrip("\r\n") for line in f]
    except OSError as e:
        raise PyctrError(f"open {path}: {e.strerror}")
    except UnicodeDecodeError:
        raise PyctrError(f"{path}: invalid utf8 bytes in {kind}")


def _env_pairs(items: list[str]) -> list[str]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key or " " in key:
            raise PyctrError(f"invalid environment variable: {item!r}")
        if sep:
            out.append(item)
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return out


def parse_labels(items: list[str], files: list[str]) -> dict[str, str]:
    """--label-file then --label, as Docker reads them: KEY=VALUE, or KEY for an empty value; in
    a file, one a line, blank lines and lines starting with # skipped. A later KEY wins."""
    pairs: list[str] = []
    for path in files:
        # utf-8-sig: a BOM is not part of the first key.
        lines = [line.lstrip() for line in _file_lines(path, "a label file", encoding="utf-8-sig")]
        pairs += [line for line in lines if line and not line.startswith("#")]
    labels = {}
    for item in pairs + list(items):
        key, _, value = item.partition("=")
        if not key.strip():
            raise PyctrError(f"invalid label '{item}': empty name")
        if any(c.isspace() for c in key):
            raise PyctrError(f"invalid label '{item}': the name contains whitespace")
        labels[key] = value
    return labels


def parse_volumes(specs: list[str]) -> list[dict]:
    """Every -v, checked now rather than at start: one destination each, as Docker requires."""
    binds = [parse_volume(spec) for spec in specs]
    seen = set()
    for bind in binds:
        if bind["Destination"] in seen:
            raise PyctrError(f"Duplicate mount point: {bind['Destination']}")
        seen.add(bind["Destination"])
    return binds


def parse_volume(spec: str) -> dict:
    """HOST:CONTAINER[:ro|rw], both absolute; the host path must exist; not on the root itself."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise PyctrError(f"invalid volume specification: '{spec}'")
    host, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise PyctrError(f"invalid volume specification: '{spec}': invalid mode: {mode}")
    if not host.startswith("/"):
        raise PyctrError(f"invalid volume specification: '{spec}': the host path must be absolute "
                         "(named volumes are not supported)")
    if not target.startswith("/") or ".." in target.split("/"):
        raise PyctrError(f"invalid volume specification: '{spec}': the container path must be absolute")
    target = os.path.normpath(target).replace("//", "/")
    if target == "/":
        raise PyctrError(f"invalid volume specification: '{spec}': destination can't be '/'")
    if not os.path.exists(host):
        raise PyctrError(f"invalid volume specification: '{spec}': bind source path does not exist: {host}")
    return {"Source": os.path.realpath(host), "Destination": target, "RW": mode == "rw"}


HOST_NAME_MAX = 64  # the kernel's limit for sethostname(2)


def check_hostname(name: str) -> str:
    """RFC 1123: dot-separated labels of letters, digits and inner hyphens, as a resolver expects."""
    label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if len(name) > HOST_NAME_MAX or not re.fullmatch(rf"{label}(?:\.{label})*", name):
        raise PyctrError(f"invalid hostname format: {name!r} (letters, digits and inner '-', in "
                         f"'.'-separated labels of at most 63, {HOST_NAME_MAX} characters in all)")
    return name


def check_workdir(path: str | None) -> str:
    if path and not path.startswith("/"):
        raise PyctrError(f"the working directory '{path}' is invalid, it needs to be an absolute path")
    return path or ""


def parse_publish(specs: list[str]) -> dict:
    """-p [IP:]HOSTPORT:CONTAINERPORT[/PROTO] into Docker's PortBindings."""
    bindings: dict[str, list[dict]] = {}
    for spec in specs:
        ports, _, proto = spec.partition("/")
        proto = proto or "tcp"
        parts = ports.split(":")
        if proto not in ("tcp", "udp") or len(parts) not in (2, 3):
            raise PyctrError(f"invalid publish specification {spec!r}: want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")
        host_ip = parts[0] if len(parts) == 3 else ""
        host_port, container_port = parts[-2], parts[-1]
        for port in (host_port, container_port):
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise PyctrError(f"invalid publish specification {spec!r}: invalid port {port!r}")
        bindings.setdefault(f"{int(container_port)}/{proto}", []).append(
            {"HostIp": host_ip, "HostPort": str(int(host_port))})
    return bindings


def parse_security_opts(items: list[str]) -> list[str]:
    """--security-opt as Docker's CLI reads it: a seccomp profile's file becomes `seccomp=` and the
    file's JSON, checked now, so the container keeps its profile whatever becomes of the file."""
    from pyctr.runtime import seccomp

    opts = []
    for item in items:
        key, value = seccomp.split_security_opt(item)
        if key == "no-new-privileges" and value in (None, "true"):
            opts.append(item)  # pyctr always sets it
        elif key == "seccomp" and value in ("unconfined", "builtin"):
            opts.append(f"seccomp={value}")
        elif key == "seccomp" and value:
            opts.append("seccomp=" + seccomp.load_profile_file(value))
        elif key in ("seccomp", "no-new-privileges"):
            raise PyctrError(f"invalid --security-opt: {item!r}")
        else:
            raise PyctrError(f"--security-opt {item!r}: pyctr supports seccomp=unconfined|PROFILE.json "
                             "and no-new-privileges")
    return opts


def parse_signal(value: str) -> int:
    import signal

    text = value.upper()
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text if text.startswith("SIG") else "SIG" + text
        if hasattr(signal.Signals, name):
            return int(signal.Signals[name])
    raise PyctrError(f"invalid signal: {value}")


AUTO_SIZE_MAX = 1 << 31  # ids a user namespace of --userns=auto may span; podman's pool is this big


def parse_userns(userns: str | None, remap: str | None, privileged: bool, network: str) -> dict:
    """--userns=auto[:size=N]|host (podman's) and --userns-remap=default|USER[:GROUP] (dockerd's
    daemon flag, here per container) as the record's HostConfig keys: UsernsMode ("" for none,
    "host", "auto", "auto:size=N", "private" with --userns-remap) and UsernsRemap. The maps are
    chosen later (lifecycle.create), once the container has an id to own an auto range."""
    mode = userns or ""
    if mode not in ("", "host", "auto") and not mode.startswith("auto:"):
        raise PyctrError(f"invalid --userns {userns!r}: pyctr supports auto[:size=N] and host")
    if mode.startswith("auto:"):
        for option in mode[5:].split(","):
            key, _, value = option.partition("=")
            if key != "size":
                raise PyctrError(f"invalid --userns {userns!r}: the only option of auto is size=N")
            if not value.isdigit() or not 0 < int(value) <= AUTO_SIZE_MAX:
                raise PyctrError(f"invalid --userns {userns!r}: size must be a number from 1 to {AUTO_SIZE_MAX}")
    if remap is not None:
        user, _, group = remap.partition(":")
        name = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
        if not re.fullmatch(name, user) or (group and not re.fullmatch(name, group)) or remap.endswith(":"):
            raise PyctrError(f"invalid --userns-remap {remap!r}: expected default or USER[:GROUP]")
        if mode:
            raise PyctrError("--userns-remap and --userns cannot be used together")
        mode = "private"
    if mode in ("", "host"):
        return {"UsernsMode": mode, "UsernsRemap": ""}
    # Docker's checks, and its words: neither can be given to a root that is not the host's.
    if privileged:
        raise PyctrError("privileged mode is incompatible with user namespaces. You must run the "
                         "container in the host namespace (--userns=host) when running privileged mode")
    if network == "host":
        raise PyctrError("cannot share the host's network namespace when user namespaces are enabled")
    return {"UsernsMode": mode, "UsernsRemap": remap or ""}


def auto_size(mode: str) -> int | None:
    """N of "auto:size=N"; None for plain "auto" (the userns module's default)."""
    _, _, size = mode.partition(":size=")
    return int(size) if size else None
