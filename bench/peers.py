"""The peers: runc on an OCI bundle, podman (with runc) on private storage, the floor and the
Python floor; and pyctr-oci, pyctr's runc-compatible runtime, on runc's bundle and under podman.

All start the same Alpine rootfs with the same namespaces (pid, mount, net, uts, ipc).
Nothing here reads or writes the machine's own podman, runc or pyctr-oci state: podman gets a
containers.conf and a storage.conf of the bench's own, runc and pyctr-oci a state root each in
the work directory.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.measure import removal_timeout, run

NAMESPACES = ["pid", "mount", "network", "uts", "ipc"]
PODMAN_IMAGE = "localhost/pyctr-bench-alpine:latest"


def missing(tool: str) -> str | None:
    """None when `tool` is on PATH, else the reason the rows that need it will show."""
    return None if shutil.which(tool) else f"failed: {tool} not installed (apt-get install -y {tool})"


def floor_argv(rootfs: Path, command: list[str]) -> list[str]:
    """The least a container start can cost: the same namespaces, a chroot, and exec."""
    return ["unshare", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork",
            "chroot", str(rootfs), *command]


def python_floor_argv(python: Path, rootfs: Path, command: list[str]) -> list[str]:
    """The least a container start can cost from Python: python_floor.py, run by the Python that
    runs pyctr (the venv's, with its site), so that both pay the same interpreter start-up."""
    return [str(python), str(Path(__file__).resolve().parent / "python_floor.py"), str(rootfs), *command]


class OciRuntime:
    """A runtime with runc's command line (runc, pyctr-oci), with a state root of its own."""

    def __init__(self, name: str, binary: str, state: Path, bundle: Path, tag: str):
        self.name = name
        self.binary = binary
        self.state = state
        self.bundle = bundle
        self.tag = tag

    def run_argv(self, i: int) -> list[str]:
        # A fresh ID per run: a run that failed half-way cannot block the next.
        return [self.binary, "--root", str(self.state), "run", "--bundle", str(self.bundle),
                f"pyctr-bench-{self.name}-{self.tag}-{i}"]

    def cleanup(self) -> None:
        for cid in self.left():
            subprocess.run([self.binary, "--root", str(self.state), "delete", "--force", cid],
                           capture_output=True, timeout=60)

    def left(self) -> list[str]:
        """Containers still in its state root."""
        return os.listdir(self.state) if self.state.is_dir() else []


class Runc(OciRuntime):
    def __init__(self, workdir: Path, rootfs: Path, tag: str):
        super().__init__("runc", "runc", workdir / "runc-state", workdir / "runc-bundle", tag)
        self.rootfs = rootfs

    def setup(self) -> None:
        """`runc spec`, then the differences: no terminal, /bin/true, our rootfs, writable
        like pyctr's and podman's overlay, exactly the five namespaces."""
        self.bundle.mkdir(parents=True, exist_ok=True)
        run(["runc", "spec", "--bundle", str(self.bundle)])
        config_path = self.bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/true"]
        config["root"] = {"path": str(self.rootfs), "readonly": False}
        config["linux"]["namespaces"] = [{"type": t} for t in NAMESPACES]
        # (runc's spec asks for ambient capabilities without inheritable ones, which the kernel
        # refuses: both runtimes skip them with a warning, as the spec is left as runc wrote it.)
        config_path.write_text(json.dumps(config, indent=2))


def pyctr_oci_binary() -> str:
    """pyctr-oci beside this Python, as an absolute path (podman's --runtime needs one)."""
    return str(Path(sys.executable).parent / "pyctr-oci")


class PyctrOci(OciRuntime):
    """pyctr-oci on runc's bundle, with a state root of its own in the work directory."""

    def __init__(self, workdir: Path, bundle: Path, tag: str, binary: str | None = None):
        binary = binary or pyctr_oci_binary()
        super().__init__("pyctr-oci", binary, workdir / "pyctr-oci-state", bundle, tag)

    def podman_argv(self, *args: str) -> list[str]:
        """A podman command with pyctr-oci as its runtime: an absolute path (podman looks a bare
        name up in containers.conf only). Its state goes to pyctr-oci's default root, as runc's
        goes to /run/runc: podman's exit command (`podman container cleanup`, which deletes the
        container) is not given --runtime-flag, so a root of our own would keep every container."""
        return ["podman", "--runtime", self.binary, *args]

    def missing(self) -> str | None:
        return None if os.access(self.binary, os.X_OK) else f"failed: {self.binary} not installed"


class Podman:
    """podman --runtime runc with a configuration and storage of the bench's own."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "podman"
        self.env = dict(os.environ,
                        CONTAINERS_CONF=str(self.dir / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(self.dir / "storage.conf"))
        self.argv = ["podman", "--runtime", "runc"]

    def setup(self, tarball: Path) -> None:
        for sub in ("root", "runroot", "tmp", "networks"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "containers.conf").write_text(self._containers_conf())
        (self.dir / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.dir / "root"}"\n'
            f'runroot = "{self.dir / "runroot"}"\n')
        self._import(tarball)

    def _containers_conf(self) -> str:
        # default_ulimits: this VM cannot raise RLIMIT_NOFILE/NPROC, podman's default does.
        # cgroupfs: no systemd here. lock_type file and tmp_dir keep podman's locks and
        # per-boot state in our directory instead of /dev/shm and /run/libpod.
        return (
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[network]\n"
            'network_backend = "netavark"\n'
            f'network_config_dir = "{self.dir / "networks"}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            'runtime = "runc"\n'
            'lock_type = "file"\n'
            f'tmp_dir = "{self.dir / "tmp"}"\n'
        )

    def _import(self, tarball: Path) -> None:
        """`podman import` the tarball. Its image copy writes a blob-info cache at the fixed path
        /var/lib/containers/cache; a private mount namespace with a tmpfs on /var/lib keeps that
        write (and everything else under /var/lib) away from the machine."""
        script = 'mount -t tmpfs pyctr-bench /var/lib && exec "$@"'
        run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             *self.argv, "import", str(tarball), PODMAN_IMAGE], env=self.env)

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def pid_of(self, cid: str) -> int:
        return int(run(self.cmd("inspect", "--format", "{{.State.Pid}}", cid), self.env).stdout)

    def conmon_pids(self) -> list[int]:
        """conmon processes that serve containers of our storage (found by their -b bundle path)."""
        root = str(self.dir / "root")
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"conmon" and any(root.encode() in a for a in argv):
                pids.append(int(entry.name))
        return pids

    def remove_all(self) -> None:
        subprocess.run(self.cmd("rm", "--all", "--force", "--time", "0"), env=self.env,
                       capture_output=True, timeout=removal_timeout(len(self.container_ids())))

    def container_ids(self) -> list[str]:
        p = subprocess.run(self.cmd("ps", "--all", "--quiet"), env=self.env, capture_output=True,
                           text=True, timeout=120)
        return p.stdout.split()

    def cleanup(self) -> None:
        if not (self.dir / "storage.conf").exists():
            return
        self.remove_all()
        subprocess.run(self.cmd("rmi", "--all", "--force"), env=self.env, capture_output=True,
                       timeout=120)
