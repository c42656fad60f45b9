"""The Docker-shaped container record and its image, as an OCI bundle: the config.json that
pyctr's core (runtime/engine.py) makes the container from, as `pyctr-oci create` does.

    write(c)        at create: c.dir/bundle/config.json (`pyctr create --explain` shows it)
    load(c)         at start: the spec from that file (written again if it is missing)
    limits(c)       the flags as cgroups.Limits: the same values as linux.resources, applied so
                    that an error names the flag (--memory ...) and only needed controllers exist
    state_root()    where the engine keeps the OCI state of pyctr's own containers

What Docker adds to runc's defaults is here: its capability set (as CAP_ names), its seccomp
profile resolved for those capabilities, the /etc/hostname, /etc/hosts and /etc/resolv.conf
binds, the -v volumes, and annotations of pyctr's (spec.py): the overlay of the image and the
container's layer, mounted inside the container's mount namespace; -u USER[:GROUP], resolved
in the container's own /etc/passwd; and --privileged, which leaves nodev off that overlay.

With --userns=auto or --userns-remap (HostConfig.IDMappings), a user namespace and its maps. The
image's files belong to host root: the engine idmaps each of the overlay's lower layers where
the kernel and the image's filesystem allow it; elsewhere (or with PYCTR_USERNS_NO_IDMAP=1, see
userns.py) each lower layer is a copy with every owner shifted, made once per layer (an Alpine
image's rootfs, or one layer of a layered image) and mapping, beside it (so `rmi` removes it
with the image or the layer).
"""

import os
from pathlib import Path

from pyctr.runtime import explain, jsonstore, security
from pyctr.runtime import spec as specs
from pyctr.runtime.container import Container
from pyctr.runtime.errors import PyctrError


def path(c: Container) -> Path:
    return c.dir / "bundle" / "config.json"


def state_root() -> str:
    from pyctr.runtime import settings

    return str(settings.current().state / "oci")


def write(c: Container) -> dict:
    config = build(c)
    target = path(c)
    if explain.enabled:
        import json

        explain.comment("the container as an OCI runtime spec, which pyctr's core makes it from (as runc would)")
        explain.step("mkdir", "-p", target.parent)
        explain.shell(f"cat > {target} <<'EOF'\n{json.dumps(config, indent=2)}\nEOF")
    jsonstore.write_json(target, config, compact=True)  # --explain shows it indented
    return config


def load(c: Container) -> specs.Spec:
    data = jsonstore.read_json(path(c))
    if data is None:  # a container of an older pyctr
        data = write(c)
    return specs.Spec(data, str(path(c).parent))


def container_caps(c: Container, privileged: bool | None = None) -> list[str]:
    """Docker's capability set (names without CAP_), only those pyctr holds itself: a capability
    this kernel lacks, or that our bounding set lacks (pyctr in a container), cannot be given."""
    import prctl

    hc = c.config["HostConfig"]
    held = [name for name in security.kernel_cap_names() if prctl.capbset_read(security.CAP_NUMBERS[name])]
    if hc["Privileged"] if privileged is None else privileged:
        return held  # all of them, also those newer than python-prctl's list
    caps = set(security.effective_caps(hc["CapAdd"], hc["CapDrop"], False))
    return [cap for cap in held if cap in caps]


def process_capabilities(caps: list[str]) -> dict[str, list[str]]:
    names = ["CAP_" + cap for cap in caps]
    return {"bounding": names, "effective": list(names), "permitted": list(names), "inheritable": [], "ambient": []}


def docker_user(c: Container, user: str | None = None) -> str:
    """USER[:GROUP] for the user annotation; root by number when none is set, so that root gets
    its supplementary groups from the image's /etc/group, as with Docker."""
    return user or c.config["Config"]["User"] or "0"


def limits(c: Container):
    from pyctr.runtime import cgroups

    hc = c.config["HostConfig"]
    return cgroups.Limits(memory=hc["Memory"] or None, nano_cpus=hc["NanoCpus"] or None,
                          cpu_shares=hc["CpuShares"] or None,
                          pids=hc["PidsLimit"] if hc["PidsLimit"] and hc["PidsLimit"] > 0 else None,
                          restrict_devices=not hc["Privileged"])


def build(c: Container) -> dict:
    hc = c.config["HostConfig"]
    cfg = c.config["Config"]
    privileged = hc["Privileged"]
    readonly = hc["ReadonlyRootfs"]
    caps = container_caps(c)
    namespaces = ["pid", "mount", "uts", "ipc"]
    if hc["NetworkMode"] != "host":
        namespaces.append("network")
    if os.path.exists("/proc/self/ns/cgroup"):
        namespaces.append("cgroup")
    maps = id_maps(c)
    if maps:
        namespaces.append("user")
    annotations = {
        specs.OVERLAY_ANNOTATION: f"lowerdir={lower_layer(c, maps)},upperdir={c.dir / 'upper'},workdir={c.dir / 'work'}",
        specs.USER_ANNOTATION: docker_user(c),
    }
    if privileged:
        annotations[specs.PRIVILEGED_ANNOTATION] = "true"
    linux = {
        "namespaces": [{"type": kind} for kind in namespaces],
        "resources": limits(c).resources(),
        "maskedPaths": [] if privileged else list(specs.DEFAULT_MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(specs.DEFAULT_READONLY_PATHS),
    }
    if maps:
        linux["uidMappings"] = [m.to_spec() for m in maps[0]]
        linux["gidMappings"] = [m.to_spec() for m in maps[1]]
    seccomp = _seccomp(hc, caps)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {
        "ociVersion": specs.SPEC_VERSION,
        "process": {
            "terminal": cfg["Tty"],
            "user": {"uid": 0, "gid": 0},
            "args": [c.config["Path"], *c.config["Args"]],  # Entrypoint + Cmd, resolved at create
            "env": list(cfg["Env"]),
            "cwd": cfg["WorkingDir"] or "/",
            "capabilities": process_capabilities(caps),
            "noNewPrivileges": not privileged,
        },
        "root": {"path": str(c.dir / "merged"), "readonly": readonly},
        "hostname": cfg["Hostname"],
        "mounts": _mounts(c, privileged, readonly),
        "annotations": annotations,
        "linux": linux,
    }


def id_maps(c: Container) -> tuple[list, list] | None:
    """HostConfig.IDMappings ("CONTAINER:HOST:SIZE" lines) as (uid maps, gid maps) of
    userns.IdMap; None for a container without a user namespace."""
    mappings = c.config["HostConfig"].get("IDMappings")
    if not mappings:
        return None
    from pyctr.runtime import userns

    def parse(lines: list[str]) -> list:
        return [userns.IdMap(*map(int, line.split(":"))) for line in lines]

    return parse(mappings["UidMap"]), parse(mappings["GidMap"])


MAX_MOUNT_OPTIONS = 4095  # mount(2) takes its options in one page


def lower_layer(c: Container, maps: tuple[list, list] | None) -> str:
    """The overlay's lowerdir: the image's folders, top first (an Alpine image has one, its
    rootfs; a layered image one per layer), ':'-separated. In a user namespace on a kernel or
    filesystem without idmapped mounts, each is a chowned copy (Docker's way), made once per
    layer and mapping beside it: every owner shifted by the host id of the container's root.
    The copy is right for ids in the first range of the maps, which holds every id of an
    Alpine image (0..65535 with the default size)."""
    folders = c.lower_dirs
    if maps:
        folders = [_for_user_namespace(folder, maps) for folder in folders]
    lowerdir = ":".join(folders)
    if len(lowerdir) > MAX_MOUNT_OPTIONS - 1024:  # and upperdir, workdir, options
        raise PyctrError(f"image {c.config['Image']} has too many layers ({len(folders)}) for the "
                         "options of one overlay mount")
    return lowerdir


def _for_user_namespace(folder: str, maps: tuple[list, list]) -> str:
    from pyctr.runtime import userns

    if userns.supports_idmapped_mounts(folder):
        return folder
    uid, gid = userns.host_id(maps[0], 0), userns.host_id(maps[1], 0)
    copy = userns.chowned_copy_path(folder, uid, gid)
    if not copy.is_dir():
        explain.comment(f"no idmapped mounts for {folder}: a copy with every owner shifted by {uid}:{gid}")
    return str(userns.chowned_copy(folder, str(copy), uid, gid))


def _mounts(c: Container, privileged: bool, readonly: bool) -> list[dict]:
    mounts = specs.default_mounts()
    for m in mounts:
        if m["destination"] == "/dev":
            m["options"].insert(1, "nodev")  # device nodes made there give no access; ours are binds
    ro = ["ro"] if readonly else []
    for name in ("hostname", "resolv.conf", "hosts"):  # written at each start (etcfiles)
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(c.dir / name),
                       "options": ["bind", *ro]})
    nodev = [] if privileged else ["nodev"]
    for bind in c.config["HostConfig"]["Binds"]:
        source, target, *mode = bind.split(":")
        mounts.append({"destination": target, "type": "bind", "source": source,
                       "options": ["rbind", *nodev, *(["ro"] if mode == ["ro"] else [])]})
    return mounts


def _seccomp(hc: dict, caps: list[str]) -> dict | None:
    """linux.seccomp: Docker's profile (or --security-opt's) for these capabilities; none with
    --privileged or seccomp=unconfined."""
    if hc["Privileged"]:
        return None
    from pyctr.runtime import seccomp

    profile = seccomp.profile_for(hc.get("SecurityOpt"))
    return None if profile is None else seccomp.to_oci(profile, caps)
