"""Fixtures shared by pyctr's tests. The tests run as root.

    no_host_paths_left  session, autouse: fails the session's end if a tool the tests ran left one of
                      ociclients.HOST_PATHS (e.g. skopeo's /var/lib/containers) that was absent.
    alpine_mirror     session, autouse: the URL of ../shared/alpine-mirror/alpine, served on
                      127.0.0.1 (a free port) by a thread, and set as PYCTR_ALPINE_MIRROR for the
                      whole session, so no test reaches the internet by accident. When the folder is
                      absent (a clone outside the workplace), PYCTR_ALPINE_MIRROR must name a mirror.
    local_mirror_dir  the Path of ../shared/alpine-mirror; skips the test when the folder is absent.
    serve_directory   serve_directory(folder, handler=None) -> "http://127.0.0.1:PORT": serves a
                      folder until the test ends; `handler` is a SimpleHTTPRequestHandler subclass
                      (for faults: errors, slow or cut-off answers).
    pyctr_root        session: a PYCTR_ROOT where alpine:latest is already pulled, once per session.
    pyctr_env         an environment (dict) for running pyctr: a fresh PYCTR_ROOT and PYCTR_STATE in
                      tmp, whose images/ is a symlink to pyctr_root's, so alpine is there and nothing
                      else (containers, networks, state) is shared between tests. Do not rmi in it.
    fresh_env         like pyctr_env, but with an empty image store.
    run_pyctr         run_pyctr(*args, env=None, input=None, timeout=120) -> CompletedProcess (text):
                      `python -m pyctr.runtime ARGS`; env defaults to pyctr_env.
    pyctr_env's containers are removed (`rm -f`) when the test ends, even when it fails.

A test reads PYCTR_ROOT from the env it uses: `Path(pyctr_env["PYCTR_ROOT"]) / "containers"`.
"""

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SHARED_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "alpine-mirror"
REAL_MIRROR = "https://dl-cdn.alpinelinux.org/alpine"

# Short waits and few retries keep failure tests fast; the defaults are for real mirrors.
# The kernel refuses new user namespaces to a chrooted caller (a debootstrap chroot, such as
# ../shared/tools/fresh-machine.sh's) and where user.max_user_namespaces is 0. Tests that make one
# need this; where it fails, a test checks instead that pyctr says so in one line.
USERNS_POSSIBLE = subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode == 0
needs_userns = pytest.mark.skipif(not USERNS_POSSIBLE, reason="this machine cannot create user namespaces "
                                  "(a chroot?): `unshare -U true` fails")

NO_REGISTRY = "http://127.0.0.1:9"  # the discard port: closed on a machine without inetd
QUICK_PULLS = {"PYCTR_PULL_TIMEOUT": "5", "PYCTR_PULL_RETRIES": "2", "PYCTR_PULL_BACKOFF": "0.05"}
# util-linux's mount makes this folder for its utab when absent (a host without systemd has none);
# any test that runs `mount` may, so the session takes it away at its end if it was absent.
MOUNT_UTAB_DIR = "/run/mount"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output clean
        pass


def _serve(folder: Path, handler=QuietHandler):
    """Start a threaded HTTP server for `folder` on a free loopback port; return (server, url)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def pytest_unconfigure(config):
    """pytest removes the session's tmp_path folders (pyproject.toml: tmp_path_retention_policy),
    but leaves the folder that holds them: removed too when empty (another session may be using
    it)."""
    import getpass
    import tempfile

    with contextlib.suppress(OSError):
        os.rmdir(Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}")


@pytest.fixture(scope="session", autouse=True)
def no_host_paths_left():
    """The tools the tests start as root (skopeo, podman, docker, containerd) write to fixed host
    paths unless kept off them. One of those that was absent when the session began must be absent
    at its end: a fresh machine has none of them, and a leak shows there first."""
    from ociclients import HOST_PATHS

    absent = [path for path in (*HOST_PATHS, MOUNT_UTAB_DIR) if not os.path.lexists(path)]
    yield
    if MOUNT_UTAB_DIR in absent:
        with contextlib.suppress(OSError):
            os.rmdir(MOUNT_UTAB_DIR)  # only when empty, as util-linux left it
    left = [path for path in absent if os.path.lexists(path)]
    assert not left, f"the tests left host paths behind: {', '.join(left)}"


@pytest.fixture(scope="session", autouse=True)
def alpine_mirror():
    if not SHARED_MIRROR.is_dir():
        # Never the real mirror by accident: a test run stays off the internet unless told.
        url, server = os.environ.get("PYCTR_ALPINE_MIRROR"), None
        if not url:
            pytest.exit(f"no local Alpine mirror at {SHARED_MIRROR}: set PYCTR_ALPINE_MIRROR "
                        f"(e.g. {REAL_MIRROR}) to test against another one", returncode=4)
    else:
        server, base = _serve(SHARED_MIRROR)
        url = f"{base}/alpine"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYCTR_ALPINE_MIRROR", url)
        # Docker Hub's names (busybox, nginx) go to a loopback port where nothing listens, unless
        # a test gives its own registry: no test reaches Docker Hub by accident.
        patch.setenv("PYCTR_REGISTRY_MIRROR", NO_REGISTRY)
        yield url
    if server:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local_mirror_dir() -> Path:
    if not SHARED_MIRROR.is_dir():
        pytest.skip(f"needs the local Alpine mirror at {SHARED_MIRROR}")
    return SHARED_MIRROR


@pytest.fixture
def serve_directory():
    servers = []

    def serve(folder: Path, handler=QuietHandler) -> str:
        server, url = _serve(folder, handler)
        servers.append(server)
        return url

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _env(root: Path, state: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYCTR_EXPLAIN", "PYCTR_LOG_LEVEL")}
    env.update(QUICK_PULLS, PYCTR_ROOT=str(root), PYCTR_STATE=str(state))
    return env


def _run(args, env: dict, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyctr.runtime", *map(str, args)], env=env,
                          input=input, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def pyctr_root(tmp_path_factory, alpine_mirror) -> Path:
    root = tmp_path_factory.mktemp("pyctr-root")
    state = tmp_path_factory.mktemp("pyctr-state")
    pulled = _run(["pull", "alpine"], _env(root, state))
    if pulled.returncode != 0:
        pytest.fail(f"pyctr pull alpine failed ({pulled.returncode}):\n{pulled.stderr}")
    return root


@pytest.fixture
def pyctr_env(pyctr_root, tmp_path) -> dict:
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / "images").symlink_to(pyctr_root / "images")
    env = _env(root, state)
    yield env
    remove_all_containers(env)


def remove_all_containers(env: dict) -> None:
    """A test's containers go with it, even when it fails: processes, cgroups, state."""
    ids = _run(["ps", "-aq", "--no-trunc"], env).stdout.split()
    if ids:
        _run(["rm", "-f", *ids], env)


@pytest.fixture
def fresh_env(tmp_path) -> dict:
    return _env(tmp_path / "fresh-root", tmp_path / "fresh-state")


@pytest.fixture
def run_pyctr(request):
    def run(*args, env: dict | None = None, input: str | None = None, timeout: float = 120):
        return _run(args, env if env is not None else request.getfixturevalue("pyctr_env"),
                    input=input, timeout=timeout)

    return run
