"""pyctr-oci, runc's command line, driven as containerd, podman and docker drive it: real
containers from the Alpine minirootfs in a temp bundle, each test with its own --root.

Every container a test makes is deleted (`delete --force`) when the test ends, even when it
fails; then the test checks nothing of it is left: no state folder, no cgroup named after it,
no process in its cgroup, no mount of the bundle on the host.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from pyctr.images import unpack

from conftest import SHARED_MIRROR

PYCTR_OCI = Path(sys.executable).parent / "pyctr-oci"
TARBALL = "alpine-minirootfs-3.20.3-x86_64.tar.gz"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SLEEP = ["sleep", "600"]


@pytest.fixture(scope="session")
def alpine_rootfs(tmp_path_factory, request) -> Path:
    """The minirootfs extracted once; each bundle copies it."""
    tarball = SHARED_MIRROR / "alpine" / "v3.20" / "releases" / "x86_64" / TARBALL
    if not tarball.is_file():  # a clone outside the workplace: the tarball `pyctr pull` cached
        tarball = request.getfixturevalue("pyctr_root") / "images" / "_cache" / TARBALL
    rootfs = tmp_path_factory.mktemp("oci-alpine") / "rootfs"
    unpack.unpack(tarball, rootfs)  # pyctr's own safe unpacking (Debian 12's Python 3.11.2 has no tar filters)
    return rootfs


class Oci:
    """One test's runtime root and bundle, and the containers it made."""

    def __init__(self, tmp: Path, rootfs_template: Path):
        self.root = tmp / "state"
        self.bundle = tmp / "bundle"
        self.bundle.mkdir()
        self.rootfs = self.bundle / "rootfs"
        shutil.copytree(rootfs_template, self.rootfs, symlinks=True)
        self.ids: list[str] = []
        self.children: list[subprocess.Popen] = []

    def new_id(self) -> str:
        container_id = f"ocitest-{uuid.uuid4().hex[:10]}"
        self.ids.append(container_id)
        return container_id

    def __call__(self, *args, check: bool = False, input: str | None = None, timeout: float = 30,
                 global_args=()) -> subprocess.CompletedProcess:
        # Files, not pipes: a created container's init keeps the caller's stdio, as with runc,
        # and a pipe would not reach its end until the container does.
        argv = [str(PYCTR_OCI), "--root", str(self.root), *global_args, *map(str, args)]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            returncode = subprocess.run(argv, input=input, stdout=out, stderr=err, text=True, timeout=timeout,
                                        cwd=self.bundle).returncode
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(argv, returncode, out.read().decode(), err.read().decode())
        if check and result.returncode != 0:
            pytest.fail(f"pyctr-oci {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
        return result

    def config(self, args=None, edit=None, **process) -> dict:
        """Write config.json: runc's default from `spec`, a writable root, no terminal."""
        path = self.bundle / "config.json"
        path.unlink(missing_ok=True)
        self("spec", "--bundle", self.bundle, check=True)
        config = json.loads(path.read_text())
        config["root"]["readonly"] = False
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args or SLEEP)
        config["process"].update(process)
        if edit:
            edit(config)
        path.write_text(json.dumps(config))
        return config

    def create(self, container_id: str | None = None, *extra) -> str:
        container_id = container_id or self.new_id()
        self("create", "--bundle", self.bundle, *extra, container_id, check=True)
        return container_id

    def state(self, container_id: str) -> dict:
        return json.loads(self("state", container_id, check=True).stdout)

    def wait_status(self, container_id: str, status: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(container_id)
            if state["status"] == status or time.monotonic() > deadline:
                assert state["status"] == status
                return state
            time.sleep(0.02)

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()
        for container_id in self.ids:
            self("delete", "--force", container_id)

    def leaks(self) -> list[str]:
        found = []
        for container_id in self.ids:
            if (self.root / container_id).exists():
                found.append(f"state folder {self.root / container_id}")
            found += [f"cgroup {p}" for p in CGROUP_ROOT.glob(f"*/pyctr*/{container_id}")]
            found += [f"cgroup {p}" for p in CGROUP_ROOT.glob(f"*/*/pyctr*/{container_id}")]
        for proc in Path("/proc").iterdir():
            try:
                cgroup = (proc / "cgroup").read_text() if proc.name.isdigit() else ""
                if any(f"/{container_id}\n" in cgroup for container_id in self.ids):
                    found.append(f"process {proc.name} ({(proc / 'comm').read_text().strip()})")
            except OSError:
                pass
        found += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if str(self.bundle) in line]
        return found


@pytest.fixture
def oci(tmp_path, alpine_rootfs):
    o = Oci(tmp_path, alpine_rootfs)
    try:
        yield o
    finally:
        o.cleanup()
        leaks = o.leaks()
        assert not leaks, f"left behind: {leaks}"


def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def cgroup_dir(pid: int, controller: str) -> Path:
    """The host folder of `pid`'s cgroup for a v1 controller, from /proc/PID/cgroup."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    pytest.fail(f"process {pid} has no {controller} cgroup")


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


# --- spec, features, --version ---------------------------------------------------------------
def test_spec_writes_runcs_default_and_refuses_to_overwrite(oci):
    assert oci("spec", check=True).stdout == ""
    config = json.loads((oci.bundle / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["process"]["args"] == ["sh"] and config["process"]["terminal"] is True
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert {ns["type"] for ns in config["linux"]["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert [m["destination"] for m in config["mounts"]] == ["/proc", "/dev", "/dev/pts", "/dev/shm",
                                                             "/dev/mqueue", "/sys"]
    assert config["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sys" in config["linux"]["readonlyPaths"]
    before = (oci.bundle / "config.json").read_text()
    one_line_error(oci("spec"), "exists")
    assert (oci.bundle / "config.json").read_text() == before


def test_features_json(oci):
    features = json.loads(oci("features", check=True).stdout)
    assert features["ociVersionMin"].startswith("1.0")
    assert features["ociVersionMax"].startswith("1.")
    assert set(features["hooks"]) == {"prestart", "createRuntime", "createContainer", "startContainer",
                                      "poststart", "poststop"}
    assert {"ro", "rbind", "nosuid", "rprivate"} <= set(features["mountOptions"])
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= set(features["linux"]["namespaces"])


def test_version(oci):
    lines = oci("--version", check=True).stdout.splitlines()
    assert lines[0].startswith("runc version ")
    assert any(line.startswith("spec: 1.") for line in lines)


# --- the lifecycle ---------------------------------------------------------------------------
def test_create_start_kill_delete(oci):
    oci.config(["sh", "-c", "touch /started; exec sleep 600"])
    pid_file = oci.bundle.parent / "init.pid"
    container_id = oci.create(None, "--pid-file", pid_file)
    state = oci.state(container_id)
    assert set(state) >= {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
    assert state["id"] == container_id and state["status"] == "created"
    assert state["bundle"] == str(oci.bundle)
    pid = state["pid"]
    assert pid_file.read_text() == str(pid)  # no newline
    assert alive(pid)
    time.sleep(0.2)
    assert not (oci.rootfs / "started").exists()  # the program has not run yet

    oci("start", container_id, check=True)
    wait_for_file_exists(oci.rootfs / "started")
    assert oci.state(container_id)["status"] == "running"

    oci("kill", container_id, "KILL", check=True)
    state = oci.wait_status(container_id, "stopped")
    assert "pid" not in state or not alive(state["pid"])
    oci("delete", container_id, check=True)
    assert not alive(pid)
    one_line_error(oci("state", container_id), container_id)


# What `pyctr-oci ARGS` imports, by a probe that runs its main in a fresh interpreter.
IMPORTS_PROBE = """
import sys
before = set(sys.modules)
from pyctr.runtime import oci_cli
try:
    oci_cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stderr.write(" ".join(sorted(set(sys.modules) - before)) + " " + str(code))
"""


def imported_by(oci: Oci, *args) -> set[str]:
    result = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, "--root", str(oci.root), *args],
                            capture_output=True, text=True, timeout=60, cwd=oci.bundle)
    *modules, code = result.stderr.split()
    assert code == "0", result.stderr
    return set(modules)


def test_start_and_delete_import_little(oci, tmp_path):
    """podman runs create, start and delete for each container, each a fresh pyctr-oci: argparse,
    json (re, enum) and the spec (ctypes) are left out where they are not needed. Its specs bind
    a file and a folder (/etc/hosts, a volume), which leave both in the staging folder: delete
    removes them without shutil (which brings re, enum, bz2 and lzma: ~7 ms of each delete)."""
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    (tmp_path / "volume").mkdir()
    binds = [{"destination": "/etc/hosts", "type": "bind", "source": str(tmp_path / "hosts"), "options": ["bind"]},
             {"destination": "/volume", "type": "bind", "source": str(tmp_path / "volume"), "options": ["rbind"]}]
    oci.config(edit=lambda config: config["mounts"].extend(binds))
    container_id = oci.create()
    started = imported_by(oci, "start", container_id)
    assert not started & {"argparse", "json", "re", "enum", "ctypes", "pathlib", "pyctr.runtime.spec"}, started
    assert "json" in imported_by(oci, "state", container_id)  # it prints the state as runc does
    deleted = imported_by(oci, "delete", "--force", container_id)
    heavy = {"argparse", "json", "re", "enum", "pathlib", "signal", "ctypes", "pyctr.runtime.spec", "shutil"}
    assert not deleted & heavy, deleted
    one_line_error(oci("state", container_id), container_id)
    assert "argparse" in imported_by(oci, "list")  # not a quick command: argparse reads it


@pytest.mark.parametrize("command", ["create", "run"])
def test_create_and_run_import_little_in_any_of_their_processes(oci, tmp_path, command):
    """Nor do create and run (runc run, which also waits for the container and deletes it), in
    their own process, the monitor they fork, or the container's init: not json's decoder (with
    re and enum), pathlib, or the enums of signal and socket, ~20 ms of each create before (run
    imported signal, for its forwarding, until this version). -X importtime, which the forks
    inherit, lists what each of them imports."""
    oci.config(args=["/bin/true"])
    container_id = oci.new_id()
    log = tmp_path / "importtime"
    with open(log, "w") as err:
        subprocess.run([str(PYCTR_OCI), "--root", str(oci.root), command, "--bundle", str(oci.bundle), container_id],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60, cwd=oci.bundle,
                       env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"), check=True)
    if command == "create":
        assert oci.state(container_id)["status"] == "created"
    else:
        one_line_error(oci("state", container_id), container_id)  # ran, and was deleted
    imported = {line.rpartition("|")[2].strip() for line in log.read_text().splitlines()
                if line.startswith("import time:")}
    assert {"pyctr.runtime.cgroups", "pyctr.runtime.process"} <= imported  # the monitor's, the init's
    assert not imported & {"argparse", "json", "re", "enum", "pathlib", "signal", "socket"}, imported


def test_create_run_and_exec_warm_the_cgroup_lock_at_their_first_step(monkeypatch, tmp_path):
    """PID 1's cgroup move (and an exec'd process's) waits ~10 ms for a lock unless it is warm
    (runtime/cgroups/warm.py). create, run and exec begin that wait before their imports and the
    spec's reading (~8 ms of a fresh process), not when they reach engine.create; the other
    commands move no process."""
    from pyctr.runtime import log, oci_cli, oci_commands
    from pyctr.runtime.cgroups import warm

    calls = []
    monkeypatch.setattr(warm, "keep", lambda *_: calls.append("keep"))
    monkeypatch.setattr(log, "_also", None)  # main() sends the log to its --log too: undone after
    for command, argv in (("create", []), ("run", []), ("start", []), ("exec", ["/bin/true"])):
        monkeypatch.setattr(oci_commands, command, lambda _args, command=command: calls.append(command) or 0)
        with pytest.raises(SystemExit) as exited:
            oci_cli.main(["--root", str(tmp_path), command, "some-id", *argv])
        assert exited.value.code == 0
    assert calls == ["keep", "create", "keep", "run", "start", "keep", "exec"]


def test_a_compiled_seccomp_filter_is_kept_under_the_root_and_used_again(oci, tmp_path):
    """Compiling a profile such as podman's takes ~20 ms, and every container of a client has
    the same one: the first create compiles it and keeps it under ROOT/.seccomp (root's alone);
    the next one loads it without pyseccomp, and the filter still holds."""
    deny_mkdir = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    oci.config(args=["/bin/mkdir", "/made"], edit=lambda c: c["linux"].update(seccomp=deny_mkdir))

    def run_once(log_name: str) -> tuple[int, set[str]]:
        log = tmp_path / log_name
        with open(log, "w") as err:
            argv = [str(PYCTR_OCI), "--root", str(oci.root), "run", "--bundle", str(oci.bundle), oci.new_id()]
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60,
                                  cwd=oci.bundle, env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1")).returncode
        lines = log.read_text().splitlines()
        assert any("Operation not permitted" in line for line in lines), lines  # mkdir denied by the filter
        return code, {line.rpartition("|")[2].strip() for line in lines if line.startswith("import time:")}

    code, imported = run_once("first")
    assert code == 1 and "pyseccomp" in imported
    cache = oci.root / ".seccomp"
    kept = list(cache.iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".bpf"
    assert cache.stat().st_mode & 0o777 == 0o700 and kept[0].stat().st_mode & 0o777 == 0o600
    code, imported = run_once("again")
    assert code == 1 and "pyseccomp" not in imported and list(cache.iterdir()) == kept
    assert oci("list", "-q", check=True).stdout == ""  # the cache is no container


def wait_for_file_exists(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("started", [False, True], ids=["created", "running"])
def test_delete_needs_force_unless_stopped(oci, started):
    oci.config()
    container_id = oci.create()
    if started:
        oci("start", container_id, check=True)
    pid = oci.state(container_id)["pid"]
    one_line_error(oci("delete", container_id), container_id)
    assert oci.state(container_id)["status"] == ("running" if started else "created")
    oci("delete", "--force", container_id, check=True)
    assert not alive(pid)
    assert oci("state", container_id).returncode == 1


def test_unknown_id_errors(oci):
    for command in (["state"], ["start"], ["kill"], ["delete"], ["exec"], ["pause"], ["ps"]):
        result = oci(*command, "no-such-container", *(["true"] if command == ["exec"] else []))
        one_line_error(result, "no-such-container")
    assert oci("delete", "--force", "no-such-container").returncode == 0  # as runc


@pytest.mark.parametrize("bad_id", ["c1\n", "-c1", ".c1", "c/1", "c 1", "c\u00e91", "c" * 1025])
def test_a_malformed_id_is_refused_before_anything_is_made(oci, bad_id):
    oci.config()
    one_line_error(oci("create", "--bundle", oci.bundle, "--", bad_id), "invalid container id")
    assert not oci.root.exists() or not any(oci.root.iterdir())


def test_duplicate_id_refused(oci):
    oci.config()
    container_id = oci.create()
    pid = oci.state(container_id)["pid"]
    one_line_error(oci("create", "--bundle", oci.bundle, container_id), "exists")
    state = oci.state(container_id)
    assert state["status"] == "created" and state["pid"] == pid


def test_run_in_the_foreground_with_a_terminal_relays_its_pty(oci):
    """`pyctr-oci spec && pyctr-oci run ID`, as the README shows: runc's default spec asks for a
    terminal, and with no --console-socket `run` relays the container's pty itself, as runc does."""
    import pexpect

    oci.config(["sh"], terminal=True)
    container_id = oci.new_id()
    child = pexpect.spawn(str(PYCTR_OCI), ["--root", str(oci.root), "run", container_id], cwd=str(oci.bundle),
                          timeout=20)
    child.expect("# ")
    child.sendline("tty; echo PID=$$; exit 7")
    child.expect(pexpect.EOF)
    child.close()
    out = child.before.decode()
    assert "/dev/pts/0" in out and "PID=1" in out, out
    assert child.exitstatus == 7
    assert oci("state", container_id).returncode == 1  # run deleted it


def test_run_passes_the_exit_status(oci):
    oci.config(["sh", "-c", "echo out; echo err >&2; exit 3"])
    result = oci("run", "--bundle", oci.bundle, oci.new_id())
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert oci("list", "-q", check=True).stdout == ""  # run deletes what it made


def test_a_cgroup_mount_shows_the_containers_own_cgroups_also_in_a_cgroup_namespace(oci):
    """runc's default spec makes a cgroup namespace and mounts /sys/fs/cgroup (pyctr-oci's, and
    podman's, make the namespace; docker's and podman's mount it too). The container
    sees its own cgroups there, never a hierarchy's root (cgroup.sane_behavior, on v1) nor
    anyone else's cgroups: inside the namespace /proc/self/cgroup says "/", and a bind of that
    path from the host's hierarchy would show all of it (the host's slices, other containers)."""
    from pyctr.runtime import cgroups

    depth = 1 if cgroups.detect().mode == "v2" else 2  # v1: one folder per hierarchy first
    cgroup_mount = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}  # runc's
    config = oci.config(["sh", "-c", f"find /sys/fs/cgroup -mindepth {depth} -type d; "
                                     "ls /sys/fs/cgroup/*/cgroup.sane_behavior /sys/fs/cgroup/cgroup.sane_behavior "
                                     "2>/dev/null; grep -c . /proc/self/cgroup"],
                        edit=lambda c: c["mounts"].append(cgroup_mount))
    assert {"type": "cgroup"} in config["linux"]["namespaces"]
    result = oci("run", "--bundle", oci.bundle, oci.new_id(), check=True)
    *seen, count = result.stdout.split("\n")[:-1]
    assert seen == [] and int(count) > 0, result.stdout


def test_run_detached(oci):
    oci.config()
    container_id = oci.new_id()
    result = oci("run", "-d", "--bundle", oci.bundle, container_id, check=True)
    assert result.stdout == ""
    state = oci.state(container_id)
    assert state["status"] == "running" and alive(state["pid"])


# --- errors at create --------------------------------------------------------------------------
def test_missing_program_fails_at_create(oci):
    oci.config(["/no/such/program"])
    container_id = oci.new_id()
    one_line_error(oci("create", "--bundle", oci.bundle, container_id), "/no/such/program")
    assert oci("state", container_id).returncode == 1


def test_bad_field_refused_with_its_name(oci):
    oci.config(edit=lambda c: c["linux"]["namespaces"].insert(0, {"type": "bogus"}))
    container_id = oci.new_id()
    one_line_error(oci("create", "--bundle", oci.bundle, container_id),
                   "linux.namespaces[0].type", "unknown namespace type")
    assert oci("list", "-q", check=True).stdout == ""


def test_unknown_property_is_only_a_warning(oci):
    oci.config(edit=lambda c: c.update(someFutureField={"x": 1}))
    container_id = oci.new_id()
    result = oci("create", "--bundle", oci.bundle, container_id)
    assert result.returncode == 0, result.stderr
    assert "someFutureField" in result.stderr and "warning" in result.stderr
    assert oci.state(container_id)["status"] == "created"


def test_log_json_on_error(oci):
    log = oci.bundle.parent / "runtime.log"
    oci.config(["/no/such/program"])
    result = oci("create", "--bundle", oci.bundle, oci.new_id(),
                 global_args=("--log", log, "--log-format", "json"))
    assert result.returncode == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [e for e in entries if e["level"] == "error"]
    assert errors and "/no/such/program" in errors[-1]["msg"]
    assert errors[-1]["time"][:4].isdigit() and "T" in errors[-1]["time"]


def test_systemd_cgroup_without_systemd(oci):
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs on this host")
    oci.config(edit=lambda c: c["linux"].update(cgroupsPath="system.slice:pyctr:x"))
    container_id = oci.new_id()
    one_line_error(oci("create", "--bundle", oci.bundle, container_id, global_args=("--systemd-cgroup",)),
                   "systemd")
    assert oci("state", container_id).returncode == 1


def test_create_pid_file_in_a_missing_folder(oci):
    oci.config()
    container_id = oci.new_id()
    one_line_error(oci("create", "--bundle", oci.bundle, "--pid-file", "/nonexistent/init.pid", container_id),
                   "/nonexistent/init.pid")
    assert oci("list", "-q", check=True).stdout == ""  # undone


# --- exec --------------------------------------------------------------------------------------
@pytest.fixture
def running(oci) -> str:
    oci.config()
    container_id = oci.create()
    oci("start", container_id, check=True)
    return container_id


def test_an_exec_into_a_created_container_cannot_reach_the_inits_host_descriptors(oci):
    """Until it execs, the init holds the host's state folder (to open exec.fifo). A process
    exec'd into the created container, root there, tries every fd of it: the init is
    non-dumpable, so none opens (runc CVE-2016-9962)."""
    oci.config()
    container_id = oci.create()
    probe = ("for f in /proc/1/fd/*; do ls $f/ 2>&1; cat $f/state.json $f/config.json 2>&1; done; "
             "cat /proc/1/environ 2>&1; ls /proc/1/cwd/ 2>&1; true")
    out = oci("exec", container_id, "sh", "-c", probe, check=True).stdout
    assert "Permission denied" in out
    assert "exec.fifo" not in out and "pidStartTime" not in out and "ociVersion" not in out, out


def test_exec_output_and_exit_code(oci, running):
    assert oci("exec", running, "cat", "/etc/hostname", check=True).stdout == "localhost\n"  # the rootfs's file
    assert oci("exec", running, "hostname", check=True).stdout == "pyctr\n"  # the spec's, in its uts namespace
    assert oci("exec", running, "sh", "-c", "exit 7").returncode == 7
    # the container's pid namespace: the shell is a low pid there, and /proc shows its init as 1
    result = oci("exec", running, "sh", "-c", "echo $$; ls /proc", check=True)
    own_pid, *entries = result.stdout.split()
    assert int(own_pid) < 20 and "1" in entries
    assert [e for e in entries if e.isdigit()] and max(int(e) for e in entries if e.isdigit()) < 50


def test_exec_flags(oci, running):
    result = oci("exec", "-e", "GREETING=hello", "--cwd", "/tmp", "-u", "1000:1000", running,
                 "sh", "-c", 'echo "$GREETING $(pwd) $(id -u) $(id -g)"', check=True)
    assert result.stdout == "hello /tmp 1000 1000\n"


def test_exec_process_json(oci, running):
    process = {"args": ["sh", "-c", 'echo "$A $(pwd) $(id -u)"; exit 4'], "env": ["A=from-json", "PATH=/bin:/usr/bin"],
               "cwd": "/etc", "user": {"uid": 65534, "gid": 65534}}
    path = oci.bundle.parent / "process.json"
    path.write_text(json.dumps(process))
    result = oci("exec", "--process", path, running)
    assert (result.returncode, result.stdout) == (4, "from-json /etc 65534\n")


def test_exec_detach_pid_file(oci, running):
    pid_file = oci.bundle.parent / "exec.pid"
    oci("exec", "--detach", "--pid-file", pid_file, running, "sleep", "600", check=True)
    pid = int(pid_file.read_text())
    assert alive(pid)
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00600\x00"
    init = oci.state(running)["pid"]
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat(f"/proc/{init}/ns/pid").st_ino
    assert pid in json.loads(oci("ps", "--format", "json", running, check=True).stdout)


def test_exec_bad_arguments_are_one_line_errors(oci, running):
    not_json = oci.bundle.parent / "not.json"
    not_json.write_text("{nope")
    for args, word in ((["--process", "/nonexistent.json"], "/nonexistent.json"),
                       (["--process", not_json], "JSON"),
                       (["-u", "nobody"], "nobody"),
                       (["--additional-gids", "wheel"], "wheel"),
                       (["--cwd", "relative"], "cwd")):
        one_line_error(oci("exec", *args, running, "true"), word)
    pids = json.loads(oci("ps", "--format", "json", running, check=True).stdout)
    one_line_error(oci("exec", "--detach", "--pid-file", "/nonexistent/exec.pid", running, "sleep", "600"),
                   "/nonexistent/exec.pid")
    time.sleep(0.1)
    assert json.loads(oci("ps", "--format", "json", running, check=True).stdout) == pids  # not left running


# --- list, ps, pause/resume, update, events ----------------------------------------------------
def test_list(oci, running):
    table = oci("list", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    pid = oci.state(running)["pid"]
    assert table[1].split()[:4] == [running, str(pid), "running", str(oci.bundle)]
    rows = json.loads(oci("list", "--format", "json", check=True).stdout)
    assert [(r["id"], r["pid"], r["status"], r["bundle"]) for r in rows] == [(running, pid, "running", str(oci.bundle))]


def test_ps(oci, running):
    pid = oci.state(running)["pid"]
    assert json.loads(oci("ps", "--format", "json", running, check=True).stdout) == [pid]
    table = oci("ps", running, check=True).stdout.splitlines()
    column = table[0].split().index("PID")
    assert [int(line.split()[column]) for line in table[1:]] == [pid]


def test_pause_resume(oci):
    # Written aside, then renamed: a pause between `>`'s truncation and the write would leave
    # the counter empty for as long as the container is frozen.
    oci.config(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /counter.new; mv /counter.new /counter; "
                            "sleep 0.02; done"])
    container_id = oci.create()
    oci("start", container_id, check=True)
    counter = oci.rootfs / "counter"
    wait_for_file(counter)
    oci("pause", container_id, check=True)
    assert oci.state(container_id)["status"] == "paused"
    assert "paused" in oci("list", check=True).stdout
    frozen = wait_for_file(counter)
    time.sleep(0.3)
    assert wait_for_file(counter) == frozen
    one_line_error(oci("pause", container_id), "paused")
    oci("resume", container_id, check=True)
    assert oci.state(container_id)["status"] == "running"
    deadline = time.monotonic() + 5
    while counter.read_text() in ("", frozen):
        assert time.monotonic() < deadline, "the counter did not go on after resume"
        time.sleep(0.02)
    # a paused container is still deleted with --force (thawed, so SIGKILL lands)
    oci("pause", container_id, check=True)


def test_update(oci, running):
    pid = oci.state(running)["pid"]
    memory, pids = cgroup_dir(pid, "memory"), cgroup_dir(pid, "pids")
    assert running in str(memory)
    oci("update", "--memory", "64M", running, check=True)
    assert int((memory / "memory.limit_in_bytes").read_text()) == 64 << 20
    oci("update", "--pids-limit", "10", running, check=True)
    assert (pids / "pids.max").read_text().strip() == "10"
    resources = oci.bundle.parent / "resources.json"
    resources.write_text(json.dumps({"memory": {"limit": 96 << 20}, "pids": {"limit": 20}}))
    oci("update", "-r", resources, running, check=True)
    assert int((memory / "memory.limit_in_bytes").read_text()) == 96 << 20
    assert (pids / "pids.max").read_text().strip() == "20"
    saved = json.loads((oci.root / running / "config.json").read_text())["linux"]["resources"]
    assert saved["memory"]["limit"] == 96 << 20 and saved["pids"]["limit"] == 20


def test_update_bad_arguments_are_one_line_errors(oci, running):
    not_json = oci.bundle.parent / "not.json"
    not_json.write_text("{nope")
    one_line_error(oci("update", "-r", "/nonexistent.json", running), "/nonexistent.json")
    one_line_error(oci("update", "-r", not_json, running), "JSON")
    one_line_error(oci("update", "--memory", "lots", running), "lots")
    one_line_error(oci("update", "--pids-limit", "many", running), "many")


def test_events_stats(oci, running):
    lines = oci("events", "--stats", running, check=True).stdout.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "stats" and event["id"] == running
    assert isinstance(event["data"], dict) and event["data"]


# --- hooks -------------------------------------------------------------------------------------
def test_hooks_see_the_state_in_order(oci):
    hooks_dir = oci.rootfs / "hooks"
    hooks_dir.mkdir()

    def on_host(name: str) -> dict:  # the state to a file, its name to the shared order log
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {hooks_dir}/{name}.json; echo {name} >> {hooks_dir}/order"]}

    def in_container(name: str) -> dict:  # past pivot_root: the container's /bin/sh and /hooks
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > /hooks/{name}.json; echo {name} >> /hooks/order"]}

    hooks = {"createRuntime": [on_host("createRuntime")], "createContainer": [on_host("createContainer")],
             "prestart": [on_host("prestart")], "startContainer": [in_container("startContainer")],
             "poststart": [on_host("poststart")], "poststop": [on_host("poststop")]}
    oci.config(["sh", "-c", "echo process >> /hooks/order; exec sleep 600"], edit=lambda c: c.update(hooks=hooks))
    container_id = oci.create()
    order = hooks_dir / "order"
    assert order.read_text().split() == ["createRuntime", "createContainer"]
    oci("start", container_id, check=True)
    assert (hooks_dir / "poststart.json").exists()  # before start returns
    deadline = time.monotonic() + 10
    while "process" not in order.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    seen = order.read_text().split()
    assert seen[:4] == ["createRuntime", "createContainer", "prestart", "startContainer"]
    assert sorted(seen[4:]) == ["poststart", "process"]  # poststart runs once the program does
    oci("kill", container_id, "KILL", check=True)
    oci.wait_status(container_id, "stopped")
    oci("delete", container_id, check=True)
    assert order.read_text().split()[-1] == "poststop"

    expected = {"createRuntime": "creating", "createContainer": "creating", "prestart": "created",
                "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    for name, status in expected.items():
        state = json.loads((hooks_dir / f"{name}.json").read_text())
        assert (name, state["status"]) == (name, status)
        assert state["id"] == container_id and state["bundle"] == str(oci.bundle)
        if status != "stopped":
            assert state["pid"] > 0


def test_a_hook_on_the_host_runs_in_the_hosts_pid_namespace(oci):
    # Without a stage 1, create forks PID 1 after unshare(CLONE_NEWPID), which changes where its
    # own later children go: it must take its own PID namespace back, or its createRuntime hook
    # (a host process) would run inside the container's.
    seen = oci.rootfs / "hook-pid-namespace"
    hooks = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", f"readlink /proc/self/ns/pid > {seen}"]}]}
    oci.config(edit=lambda c: c.update(hooks=hooks))
    container_id = oci.create()
    assert seen.read_text().strip() == os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{oci.state(container_id)['pid']}/ns/pid") != os.readlink("/proc/self/ns/pid")


def test_failing_poststart_hook_is_a_warning(oci):
    hooks = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 2"]}]}
    oci.config(edit=lambda c: c.update(hooks=hooks))
    container_id = oci.create()
    result = oci("start", container_id)
    assert result.returncode == 0, result.stderr
    assert "poststart" in result.stderr and "warning" in result.stderr
    assert oci.state(container_id)["status"] == "running"


def test_failing_prestart_hook_fails_start(oci):
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 2"]}]}
    oci.config(edit=lambda c: c.update(hooks=hooks))
    container_id = oci.create()
    pid = oci.state(container_id)["pid"]
    one_line_error(oci("start", container_id), "prestart")
    assert not alive(pid)


def test_failing_create_runtime_hook_fails_create(oci):
    hooks = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}]}
    oci.config(edit=lambda c: c.update(hooks=hooks))
    container_id = oci.new_id()
    one_line_error(oci("create", "--bundle", oci.bundle, container_id), "createRuntime", "broken")
    assert oci("list", "-q", check=True).stdout == ""  # undone; the fixture checks its cgroup is gone


def test_failing_poststop_hook_is_a_warning(oci):
    hooks = {"poststop": [{"path": "/bin/false"}]}
    oci.config(edit=lambda c: c.update(hooks=hooks))
    container_id = oci.create()
    result = oci("delete", "--force", container_id)
    assert result.returncode == 0 and "poststop" in result.stderr and "warning" in result.stderr
    assert oci("state", container_id).returncode == 1


# --- terminal ----------------------------------------------------------------------------------
class ConsoleSocket:
    """What containerd's shim and conmon do: listen on a unix socket, receive the pty master
    (SCM_RIGHTS), read the container's output from it."""

    def __init__(self, path: Path):
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(10)
        self.fds: list[int] = []
        self.thread = threading.Thread(target=self._accept)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            _, self.fds, _, _ = socket.recv_fds(conn, 1024, 4)

    def master(self) -> int:
        self.thread.join(10)
        assert len(self.fds) == 1, f"received {self.fds}"
        return self.fds[0]

    def read_all(self, timeout: float = 10) -> str:
        master, output = self.master(), b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the container closed its side
                break
            if not chunk:
                break
            output += chunk
        return output.decode().replace("\r", "")

    def close(self) -> None:
        self.server.close()
        self.thread.join(1)
        for fd in self.fds:
            os.close(fd)


def test_terminal_through_console_socket(oci):
    oci.config(["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty-ok"], terminal=True)
    console = ConsoleSocket(oci.bundle.parent / "console.sock")
    try:
        container_id = oci.new_id()
        oci("create", "--bundle", oci.bundle, "--console-socket", console.path, container_id, check=True)
        console.master()  # create has passed it on already
        oci("start", container_id, check=True)
        assert console.read_all().splitlines() == ["tty-ok"]
    finally:
        console.close()


def test_exec_tty_through_console_socket(oci, running):
    console = ConsoleSocket(oci.bundle.parent / "exec-console.sock")
    try:
        result = oci("exec", "-t", "--console-socket", console.path, running, "sh", "-c", "tty; exit 6")
        assert result.returncode == 6, result.stderr
        assert console.read_all().splitlines()[0].startswith("/dev/pts/")
    finally:
        console.close()


def test_terminal_needs_a_console_socket(oci):
    oci.config(terminal=True)
    one_line_error(oci("create", "--bundle", oci.bundle, oci.new_id()), "console-socket")


# --- resources ---------------------------------------------------------------------------------
def test_memory_limit_read_back(oci):
    oci.config(edit=lambda c: c["linux"]["resources"].update(memory={"limit": 48 << 20}, pids={"limit": 32}))
    container_id = oci.create()
    pid = oci.state(container_id)["pid"]
    assert int((cgroup_dir(pid, "memory") / "memory.limit_in_bytes").read_text()) == 48 << 20
    assert (cgroup_dir(pid, "pids") / "pids.max").read_text().strip() == "32"


def test_oom_ends_with_sigkill(oci):
    limit = 32 << 20
    # busybox tail keeps /dev/zero's one endless line in memory
    oci.config(["tail", "/dev/zero"],
               edit=lambda c: c["linux"]["resources"].update(memory={"limit": limit, "swap": limit}))
    result = oci("run", "--bundle", oci.bundle, oci.new_id(), timeout=60)
    assert result.returncode == 128 + signal.SIGKILL, result.stderr
