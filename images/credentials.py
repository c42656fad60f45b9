"""Registry credentials in Docker's config file, so that `docker login` and `pyctr login` share them.

    $DOCKER_CONFIG/config.json (default ~/.docker/config.json), mode 0600, its folder 0700:
    {"auths": {"127.0.0.1:5000": {"auth": base64("user:password")},
               "https://index.docker.io/v1/": {...}}}     <- Docker Hub's key, as Docker writes it

Every other key of the file (credsStore, proxies, ...) is kept as it is. Credential helpers
(credsStore, credHelpers) are not run: pyctr reads and writes only `auths`.
"""

import base64
import json
import os
from pathlib import Path

from pyctr.images import reference
from pyctr.runtime.errors import PyctrError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(folder) / "config.json"


def config_key(registry: str) -> str:
    """The key of `auths` Docker uses for a registry (host[:port] as reference.normalize_registry gives)."""
    return DOCKER_HUB_KEY if registry == reference.DEFAULT_REGISTRY else registry


def lookup(registry: str) -> tuple[str, str] | None:
    """(username, password) stored for `registry`, or None. Keys written as URLs count too."""
    auths = _read().get("auths") or {}
    for key, entry in auths.items():
        if _names(key, registry) and isinstance(entry, dict):
            found = _decode(entry, key)
            if found:
                return found
    return None


def store(registry: str, username: str, password: str) -> Path:
    """Save the credentials for `registry`, replacing any it had; returns the file's path."""
    config = _read()
    auths = config.setdefault("auths", {})
    for key in [k for k in auths if _names(k, registry)]:
        del auths[key]  # one entry per registry, under Docker's key
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[config_key(registry)] = {"auth": token}
    return _write(config)


def remove(registry: str) -> bool:
    """Forget the credentials for `registry`; False when there were none."""
    config = _read()
    auths = config.get("auths") or {}
    keys = [k for k in auths if _names(k, registry)]
    if not keys:
        return False
    for key in keys:
        del auths[key]
    _write(config)
    return True


def _names(key: str, registry: str) -> bool:
    try:
        return reference.normalize_registry(key) == registry
    except PyctrError:
        return False


def _decode(entry: dict, key: str) -> tuple[str, str] | None:
    if entry.get("username") and entry.get("password"):
        return str(entry["username"]), str(entry["password"])
    auth = entry.get("auth")
    if not auth:
        return None
    try:
        username, colon, password = base64.b64decode(auth, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise PyctrError(f"{config_path()}: the auth of {key!r} is not base64 of user:password") from None
    if not colon or not username:
        raise PyctrError(f"{config_path()}: the auth of {key!r} is not base64 of user:password")
    return username, password


def _read() -> dict:
    path = config_path()
    try:
        config = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as e:
        raise PyctrError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise PyctrError(f"{path} is not a JSON object")
    return config


def _write(config: dict) -> Path:
    """Written aside with mode 0600, then renamed over the file: a reader sees the old or the new."""
    import tempfile

    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A new file of a random name (O_EXCL, mode 0600): a predictable name in a folder another
    # user may write to ($HOME/.docker under sudo) could be a symlink planted to /etc/shadow.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(config, indent="\t") + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
