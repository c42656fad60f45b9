"""Real clients of a runc-compatible runtime, each private to the tests: podman, containerd (ctr)
and docker. tests/test_oci_clients.py drives them; this module starts and stops them.

    runtime_under_test()  the runtime's path: $PYCTR_CLIENT_RUNTIME, else <repo>/.venv/bin/pyctr-oci.
                          Fails (never skips) when it is not there.
    image_archive(...)    one tar that all three load: an OCI layout (index.json, blobs/) for
                          `ctr image import` and Docker's manifest.json for `docker load` and
                          `podman load`; its one layer is the Alpine minirootfs tarball, as it is.
    ClientSandbox         a work folder, one network namespace per client, the cgroup parent
                          /pyctr-clients-<tag> that every client puts its containers under, and a
                          watch on the host paths the clients create behind our back. close()
                          kills what is left (only processes we started), unmounts, removes the
                          namespaces, the cgroups and those host paths, and raises if anything stays.
    Podman, Containerd, Docker
                          one client each; `client(*args)` runs its CLI inside its namespace.

Network safety: every daemon and every podman command runs inside a network namespace of its
own (nsenter --net), and every container gets --network none (ctr's default: an empty netns).
Nothing can make a bridge, a veth or a firewall rule in the machine's own namespace, and podman
never reaches netavark or CNI at all.

Mounts: containerd and dockerd run in a private mount namespace as well (unshare --mount
--propagation private), so their overlay, shm and netns mounts die with them; there, a tmpfs on
/run/containerd and /run/docker takes the shims' sockets and ctr's runtime root, and dockerd gets
its own /etc/docker. podman has no daemon: its mounts are on the host, under the work folder,
and are undone at close.
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from netsandbox import Sandbox, cgroup_hierarchies, pids_in_cgroups, remove_cgroup_tree, run
from bench.sandbox import remove_seccomp_filters  # netsandbox has put the project on sys.path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNTIME = REPO / ".venv" / "bin" / "pyctr-oci"
RUNTIME_ENV = "PYCTR_CLIENT_RUNTIME"
IMAGE = "docker.io/pyctr-test/alpine:latest"
DOCKER_RUNTIME_NAME = "pyctr"  # dockerd --add-runtime pyctr=RUNTIME, whatever RUNTIME is

# Host paths the clients create when absent. The daemons' private mount namespaces need the first
# three as mount points; containerd's opt plugin, on in the containerd that dockerd starts, makes
# /opt/containerd; podman's image copy would write /var/lib/containers/cache (see Podman.load).
# Whatever of these did not exist before is removed at close (files, and folders once empty),
# and one that stays is reported as a leak.
HOST_PATHS = ("/run/containerd", "/run/docker", "/etc/docker", "/etc/docker/key.json",
              "/opt/containerd", "/var/lib/containerd", "/var/lib/docker", "/run/containers",
              "/run/libpod", "/var/lib/containers", "/dev/shm/libpod_lock")
# podman passes no --root, so the runtime keeps its state in its own default root. Others on
# this machine may use these too: one we made goes when empty, an entry that names our work
# folder is deleted at close and reported, and nothing else there is touched.
RUNTIME_DEFAULT_ROOTS = ("/run/runc", "/run/pyctr-oci")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def runtime_under_test() -> Path:
    path = Path(os.environ.get(RUNTIME_ENV) or DEFAULT_RUNTIME)
    if not (path.is_file() and os.access(path, os.X_OK)):
        how = (f"{RUNTIME_ENV}={path}" if os.environ.get(RUNTIME_ENV)
               else f"the default, {path} (the console script of pyctr-oci; "
                    f"set {RUNTIME_ENV}=/usr/sbin/runc to run these tests against runc)")
        pytest.fail(f"no runtime to test: {how} is not an executable file", pytrace=False)
    return path


# -- the image ------------------------------------------------------------------------------


def image_archive(minirootfs: Path, out: Path, ref: str = IMAGE) -> Path:
    """Write an image archive of the Alpine minirootfs (a .tar.gz) to `out`, tagged `ref`."""
    layer = minirootfs.read_bytes()
    arch = _GOARCH.get(platform.machine(), platform.machine())
    config = _json({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"]},
        # diff_ids name the layers uncompressed; the manifest names the blob as it is stored.
        "rootfs": {"type": "layers", "diff_ids": [_digest(gzip.decompress(layer))]},
        "history": [{"created_by": f"pyctr tests: {minirootfs.name}"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
    })
    index = _json({"schemaVersion": 2, "manifests": [{
        **_descriptor("application/vnd.oci.image.manifest.v1+json", manifest),
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {"io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rpartition(":")[2]},
    }]})
    docker_manifest = _json([{"Config": _blob_path(config), "RepoTags": [ref],
                              "Layers": [_blob_path(layer)]}])
    with tarfile.open(out, "w") as tar:
        for name, data in (("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", index), ("manifest.json", docker_manifest),
                           *((_blob_path(b), b) for b in (config, manifest, layer))):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


def _blob_path(data: bytes) -> str:
    return "blobs/sha256/" + hashlib.sha256(data).hexdigest()


# -- the sandbox ----------------------------------------------------------------------------


class ClientSandbox:
    """What the clients of one test module share; close() undoes it all, whatever happened."""

    def __init__(self):
        self.sandbox = Sandbox()
        self.dir = self.sandbox.dir
        self.cgroup_parent = f"pyctr-clients-{self.sandbox.tag}"
        self._absent_paths = [p for p in HOST_PATHS if not os.path.lexists(p)]
        self._absent_roots = [p for p in RUNTIME_DEFAULT_ROOTS if not os.path.lexists(p)]
        self._started = time.time()
        self._closers = []

    def netns(self, role: str):
        return self.sandbox.netns(role)

    def spawn(self, argv: list, log: Path, env: dict | None = None, **kwargs) -> subprocess.Popen:
        """A daemon in a session of its own, its output to `log`, its temporary files in our
        folder: a Go daemon (containerd, dockerd and the containerd it starts) dumps its stacks
        into $TMPDIR, /tmp by default, when it gets SIGUSR1."""
        tmp = self.dir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {**(env if env is not None else os.environ), "TMPDIR": str(tmp)}
        with open(log, "ab") as out:
            return self.sandbox.spawn(argv, stdout=out, stderr=subprocess.STDOUT, env=env, **kwargs)

    def on_close(self, what: str, step) -> None:
        self._closers.append((what, step))

    def close(self) -> None:
        problems = []
        for what, step in reversed(self._closers):
            try:
                step()
            except Exception as e:  # keep going: one failed step must not leak the rest
                problems.append(f"{what}: {e}")
        # Everything in our namespaces is ours: daemons, their shims and conmons, exec'd helpers;
        # and every process in our cgroup parent, where each client puts its containers.
        for ns in self.sandbox.namespaces:
            _kill_all(_pids_in_netns(ns.name))
        _kill_all(pids_in_cgroups(_cgroup_dirs([self.cgroup_parent])))
        self.sandbox.close()  # container processes, mounts under the folder, namespaces, folder
        for cgroup in _cgroup_dirs([self.cgroup_parent]):
            remove_cgroup_tree(cgroup)
        for top in HOST_PATHS + RUNTIME_DEFAULT_ROOTS:
            remove_seccomp_filters_under(top, made_since=self._started)
        in_use = self._remove_host_paths()
        problems += self.leaks(ignore_paths=in_use)
        if problems:
            raise AssertionError("the client tests left things behind:\n  " + "\n  ".join(problems))

    def leaks(self, ignore_paths=()) -> list[str]:
        """What is still there: mounts (in any mount namespace), cgroups, host paths, processes."""
        found = []
        prefix = str(self.dir) + "/"
        netns_files = {f"/run/netns/{ns.name}" for ns in self.sandbox.namespaces}
        found += [f"mount {m}" for m in sorted(_mount_points_anywhere())
                  if m.startswith(prefix) or m in netns_files]
        found += [f"cgroup {d}" for d in _cgroup_dirs([self.cgroup_parent]) if d.exists()]
        found += [f"host path {p}" for p in self._absent_paths + self._absent_roots
                  if os.path.lexists(p) and p not in ignore_paths]
        found += [f"process {pid}" for pid in pids_in_cgroups(_cgroup_dirs([self.cgroup_parent]))
                  if not _is_zombie(pid)]
        if self.dir.exists():
            found.append(f"folder {self.dir}")
        found += [f"file {p}" for p in Path("/tmp").glob("*.stacks.log")
                  if p.stat().st_mtime >= self._started]
        return found

    def _remove_host_paths(self) -> set[str]:
        """Returns the paths left because another mount namespace (another run of these tests)
        mounts something there now: an rmdir would pull that mount from under it."""
        in_use = _mount_points_anywhere()
        for path in sorted(self._absent_paths + self._absent_roots, key=len, reverse=True):
            p = Path(path)
            if path in in_use:
                continue
            if p.is_symlink() or p.is_file():
                p.unlink(missing_ok=True)
            elif p.is_dir():
                _remove_empty_dirs(p)
        return in_use


def _mount_points_anywhere() -> set[str]:
    """The mount points of every mount namespace on the machine (one process read for each)."""
    points, seen = set(), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns in seen:
                continue
            with open(f"/proc/{pid}/mountinfo") as f:
                points.update(line.split()[4] for line in f)
            seen.add(ns)
    return points


def _cgroup_dirs(names) -> list[Path]:
    """/sys/fs/cgroup/HIERARCHY/NAME for every cgroup hierarchy mounted (v1, hybrid or v2)."""
    return [hierarchy / name for hierarchy in cgroup_hierarchies() for name in names]


def remove_seccomp_filters_under(top: str, made_since: float) -> None:
    """pyctr-oci keeps the seccomp filters it compiles in its root's .seccomp folder (the roots
    the clients give it are under `top`): a cache, whose files made since the tests began go,
    and the folder with its last one."""
    if os.path.isdir(top):
        for folder in Path(top).rglob(".seccomp"):
            remove_seccomp_filters(str(folder), made_since)


def _remove_empty_dirs(top: Path) -> None:
    for path in sorted((p for p in top.rglob("*") if p.is_dir() and not p.is_symlink()),
                       key=lambda p: len(p.parts), reverse=True) + [top]:
        with contextlib.suppress(OSError):
            path.rmdir()


def _pids_in_netns(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def _kill_all(pids: list[int], timeout: float = 5) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(not _is_zombie(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _stop_daemon(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, the daemons' own clean shutdown (dockerd stops its containerd), then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_for(check, what: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            state = f"exited {process.returncode}" if process.poll() is not None else "timed out"
            raise AssertionError(f"{what} {state}; its log ends:\n" + "\n".join(tail))
        time.sleep(0.1)


def _private_mounts(mounts: dict) -> list[str]:
    """An argv prefix: the command runs in a private mount namespace where each mount point of
    `mounts` has a tmpfs (value None) or a bind mount of the value. Mount points absent on the
    host are made there first (ClientSandbox removes them again)."""
    script = []
    for target, source in mounts.items():
        os.makedirs(target, exist_ok=True)
        script.append(f"mount -t tmpfs pyctr-clients {target}" if source is None
                      else f"mount --bind {source} {target}")
    return ["unshare", "--mount", "--propagation", "private",
            "sh", "-c", " && ".join(script) + ' && exec "$@"', "sh"]


# -- the clients ----------------------------------------------------------------------------


class Podman:
    """podman 4.3 with a configuration and storage of its own, in its own network namespace.

    --network none for every container (netns = "none"), cgroupfs with our cgroup parent, file
    locks and a tmp_dir of ours instead of /dev/shm/libpod_lock and /run/libpod, and the
    default_ulimits this VM can grant (it lacks CAP_SYS_RESOURCE, and podman's own defaults
    raise RLIMIT_NOFILE and RLIMIT_NPROC). Storage: overlay, on the work folder (ext4).
    """

    def __init__(self, box: ClientSandbox, runtime: Path):
        self.box = box
        self.runtime = runtime
        self.dir = box.dir / "podman"
        self.netns = box.netns("podman")
        self.cgroup_parent = f"/{box.cgroup_parent}/podman"
        # podman's working folder: conmon inherits it, and on an OOM kill it writes a file
        # named `oom` there (podman 4.3 gives conmon no --persist-dir; see oom_reported()).
        self.cwd = self.dir / "cwd"
        for sub in ("root", "runroot", "tmp", "networks", "volumes", "cwd"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            'netns = "none"\n'
            "[network]\n"
            f'network_config_dir = "{self.dir / "networks"}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            'lock_type = "file"\n'
            f'tmp_dir = "{self.dir / "tmp"}"\n'
            f'volume_path = "{self.dir / "volumes"}"\n')
        (self.dir / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.dir / "root"}"\n'
            f'runroot = "{self.dir / "runroot"}"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf")}
        self.argv = ["podman", "--root", str(self.dir / "root"), "--runroot", str(self.dir / "runroot"),
                     "--runtime", str(runtime), "--cgroup-manager", "cgroupfs"]
        self._entries_before = {root: set(_listdir(root)) for root in RUNTIME_DEFAULT_ROOTS}

    def __call__(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(self.command(*args), check=check, timeout=timeout, env=self.env)

    def command(self, *args) -> list[str]:
        """The full argv: podman in its network namespace and working folder."""
        return [*self._enter, *self.argv, *args]

    @property
    def _enter(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns.name}", f"--wd={self.cwd}", "--"]

    def oom_reported(self) -> bool:
        """Has conmon seen an OOM event in a container's memory cgroup? It watches the cgroup
        the runtime put the container's process in (cgroup v1: memory.oom_control through
        cgroup.event_control). podman 4.3 then looks for the file in the bundle, not where
        conmon wrote it, so `inspect`'s OOMKilled stays false with conmon 2.1.6."""
        return (self.cwd / "oom").exists()

    def forget_oom(self) -> None:
        (self.cwd / "oom").unlink(missing_ok=True)

    def run_args(self, *args) -> list[str]:
        """`run` with what every container here gets: our cgroup parent, no network, no pulls."""
        return ["run", "--cgroup-parent", self.cgroup_parent, "--network", "none", "--pull", "never", *args]

    def load(self, archive: Path) -> None:
        # podman's image copy writes a blob-info cache to the fixed /var/lib/containers/cache:
        # a private mount namespace with a tmpfs on /var/lib keeps it off the machine.
        run([*self._enter, *_private_mounts({"/var/lib": None}), *self.argv, "load", "-i", archive],
            env=self.env, timeout=120)

    def close(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        left = self._forget_runtime_state()
        if left:
            raise AssertionError(f"the runtime kept state after podman deleted: {', '.join(left)}")

    def _forget_runtime_state(self) -> list[str]:
        """Entries of ours that the runtime kept in its default root, though conmon and podman
        called `delete --force` for each: deleted again, by hand if need be, and named."""
        left = []
        ours = str(self.box.dir).encode()
        for root in RUNTIME_DEFAULT_ROOTS:
            for name in sorted(set(_listdir(root)) - self._entries_before[root]):
                entry = Path(root, name)
                files = [p for p in entry.rglob("*") if p.is_file()] if entry.is_dir() else [entry]
                if not any(ours in _read(p) for p in files):
                    continue  # someone else's container
                left.append(str(entry))
                subprocess.run([str(self.runtime), "delete", "--force", name], capture_output=True,
                               timeout=60)
                shutil.rmtree(entry, ignore_errors=True)
        return left


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""


class Containerd:
    """A containerd of our own: its root, state, socket and config (no CRI, no /opt), in its
    own network and mount namespaces; ctr talks to it in a containerd namespace named like our
    cgroup parent, so ctr's default cgroup path /NAMESPACE/ID lands under it."""

    def __init__(self, box: ClientSandbox, runtime: Path):
        self.box = box
        self.runtime = runtime
        self.dir = box.dir / "containerd"
        self.dir.mkdir()
        self.socket = self.dir / "containerd.sock"
        self.namespace = box.cgroup_parent
        # Where the shim tells the runtime to keep its state (ctr run --runc-root would move it),
        # in the tmpfs of containerd's mount namespace: see enter_mounts.
        self.runtime_root = Path("/run/containerd/runc") / self.namespace
        self.fifo_dir = self.dir / "fifo"
        self.log = self.dir / "containerd.log"
        self.netns = box.netns("containerd")
        self.process = None
        config = self.dir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.dir / "root"}"\n'
            f'state = "{self.dir / "state"}"\n'
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\",\n"
            "  \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\",\n"
            "  \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\",\n"
            "  \"io.containerd.tracing.processor.v1.otlp\", \"io.containerd.internal.v1.tracing\"]\n"
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n')
        self.config = config

    def start(self) -> None:
        self.process = self.box.spawn(
            [*self.netns.enter, *_private_mounts({"/run/containerd": None}),
             "containerd", "--config", self.config], self.log)
        self.box.on_close("containerd", self.close)
        _wait_for(lambda: self.ctr("version", check=False).returncode == 0, "containerd",
                  self.process, self.log)

    def ctr(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["ctr", "--address", self.socket, "--namespace", self.namespace, *args],
                   check=check, timeout=timeout)

    def run_args(self, *args) -> list[str]:
        return ["run", "--runc-binary", str(self.runtime), "--fifo-dir", str(self.fifo_dir), *args]

    @property
    def enter_mounts(self) -> list[str]:
        """An argv prefix: into containerd's mount namespace, to see what its shims see. With its
        root folder too: we may be chrooted, and entering a mount namespace leaves the chroot."""
        return ["nsenter", f"--target={self.process.pid}", "--mount", "--root", "--wd", "--"]

    def task_status(self, task: str) -> str | None:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == task:
                return fields[-1]
        return None

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            for task in self.ctr("task", "ls", "-q", check=False).stdout.split():
                self.ctr("task", "kill", "--signal", "SIGKILL", task, check=False)
                self.ctr("task", "delete", "--force", task, check=False)
            for container in self.ctr("container", "ls", "-q", check=False).stdout.split():
                self.ctr("container", "delete", container, check=False)
        _stop_daemon(self.process)


class Docker:
    """A dockerd of our own, with the runtime under test added as `pyctr`, and the containerd
    dockerd starts and stops itself (under our exec-root), both in our network and mount
    namespaces: no bridge, no iptables, no IP forwarding, our data-root, exec-root, pidfile,
    socket and cgroup parent, and a client config folder of ours."""

    def __init__(self, box: ClientSandbox, runtime: Path):
        self.box = box
        self.runtime = runtime
        self.dir = box.dir / "docker"
        for sub in ("data", "exec", "client", "etc"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "daemon.json").write_text("{}\n")
        self.socket = self.dir / "docker.sock"
        self.log = self.dir / "dockerd.log"
        self.netns = box.netns("docker")
        self.process = None
        self.env = {**os.environ, "DOCKER_CONFIG": str(self.dir / "client")}

    def start(self) -> None:
        dockerd = ["dockerd", "--data-root", self.dir / "data", "--exec-root", self.dir / "exec",
                   "--pidfile", self.dir / "dockerd.pid", "--host", f"unix://{self.socket}",
                   "--config-file", self.dir / "daemon.json",
                   "--bridge", "none", "--iptables=false", "--ip6tables=false",
                   "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
                   "--exec-opt", "native.cgroupdriver=cgroupfs",
                   "--cgroup-parent", f"/{self.box.cgroup_parent}/docker",
                   "--storage-driver", "overlay2",
                   "--add-runtime", f"{DOCKER_RUNTIME_NAME}={self.runtime}"]
        # dockerd writes its key to /etc/docker/key.json, and its plugin sockets to /run/docker;
        # the containerd it starts puts its shims' sockets in /run/containerd/s.
        mounts = {"/run/containerd": None, "/run/docker": None, "/etc/docker": self.dir / "etc"}
        self.process = self.box.spawn([*self.netns.enter, *_private_mounts(mounts), *dockerd],
                                      self.log, env=self.env)
        self.box.on_close("dockerd", self.close)
        _wait_for(lambda: self("version", check=False).returncode == 0, "dockerd",
                  self.process, self.log)

    def __call__(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["docker", "--host", f"unix://{self.socket}", *args], check=check,
                   timeout=timeout, env=self.env)

    def run_args(self, *args) -> list[str]:
        return ["run", "--runtime", DOCKER_RUNTIME_NAME, "--network", "none", *args]

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            ids = self("ps", "-aq", check=False).stdout.split()
            if ids:
                self("rm", "--force", *ids, check=False, timeout=120)
        _stop_daemon(self.process)
