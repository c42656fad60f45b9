"""The cluster's datastore: etcd v3, through its JSON gateway (etcd3gw, over requests).

Keys, each holding a JSON document:
    /pyctr/pools/NET            {"subnet": "172.19.0.0/16", "block_size": 24, "masquerade": false}
    /pyctr/members/NET/NODE     {}                      the nodes that defined NET
    /pyctr/blocks/NET/CIDR      {"node": NODE}          a block affine to NODE
    /pyctr/ipam/NET/IP          {"container": ID, "node": NODE}
    /pyctr/endpoints/NET/IP     {"container": ID, "node": NODE, "labels": {...}}   written with the
                                address claim, deleted with its release (network policies' sets)
    /pyctr/policies/NET/NAME    a network policy, as `network policy inspect` shows it
    /pyctr/nodes/NODE           {"address": IP, "asn": N, "gateway": bool, "masquerade": CIDR or
                                null, "out": IFACE or null}, under a lease its node agent keeps
                                alive (`pyctr node start`)

A claim (of a block or an address) is one transaction: create the key if its create_revision is
0, so two nodes never get the same one.
"""

import base64
import contextlib
import json
import os
import re

from pyctr.runtime.errors import PyctrError

PREFIX = "/pyctr/"
# Short: a `run` or `network create` against an etcd that is down must fail at once.
TIMEOUT = 2.0
# etcd 3.4 and newer serve the gateway at /v3/; naming it saves etcd3gw's /version request.
API_PATH = "/v3/"
# etcd refuses a transaction of more than 128 operations (its --max-txn-ops).
MAX_TXN_OPS = 128

_URL = re.compile(r"^etcd://(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})/?$")


def url_from(given: str | None) -> str | None:
    """--datastore, else $PYCTR_DATASTORE, else None (a node-local network)."""
    url = given or os.environ.get("PYCTR_DATASTORE") or None
    if url is not None:
        _parse(url)
    return url


def node_name() -> str:
    """This node's name in the datastore: $PYCTR_NODE_NAME, else the host name."""
    return os.environ.get("PYCTR_NODE_NAME") or os.uname().nodename


def not_valid(key: str, kind: str, reason) -> PyctrError:
    """What a command or the node agent says of a key it will not use: what etcd holds becomes
    configuration run as root (nft, BIRD), so it is checked as the command that writes it checks."""
    return PyctrError(f"the datastore's {key} is not a valid {kind} ({reason}); remove it with `etcdctl del {key}`")


def pool_key(net: str) -> str:
    return f"{PREFIX}pools/{net}"


def member_key(net: str, node: str) -> str:
    return f"{PREFIX}members/{net}/{node}"


def blocks_prefix(net: str) -> str:
    return f"{PREFIX}blocks/{net}/"


def ipam_prefix(net: str) -> str:
    return f"{PREFIX}ipam/{net}/"


def endpoints_prefix(net: str) -> str:
    return f"{PREFIX}endpoints/{net}/"


def all_endpoints_prefix() -> str:
    """The endpoints of every network: /pyctr/endpoints/NET/IP."""
    return f"{PREFIX}endpoints/"


def policies_prefix(net: str) -> str:
    return f"{PREFIX}policies/{net}/"


def all_policies_prefix() -> str:
    """The policies of every network: /pyctr/policies/NET/NAME."""
    return f"{PREFIX}policies/"


def nodes_prefix() -> str:
    return f"{PREFIX}nodes/"


def node_key(node: str) -> str:
    return f"{nodes_prefix()}{node}"


def all_blocks_prefix() -> str:
    """The blocks of every network: /pyctr/blocks/NET/CIDR."""
    return f"{PREFIX}blocks/"


def _parse(url: str) -> tuple[str, int]:
    match = _URL.match(url)
    if not match or not 0 < int(match["port"]) < 65536:
        raise PyctrError(f"invalid datastore {url!r}: expected etcd://HOST:PORT")
    return match["host"].strip("[]"), int(match["port"])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Datastore:
    """One etcd, through etcd3gw's calls. Every call raises a one-line PyctrError when etcd
    cannot be reached. Values are JSON documents."""

    def __init__(self, url: str):
        # Imported here: only cluster networks need etcd3gw (and the modules it pulls in).
        import etcd3gw

        self.url = url
        host, port = _parse(url)
        self._client = etcd3gw.client(host=host, port=port, timeout=TIMEOUT, api_path=API_PATH)

    @contextlib.contextmanager
    def _reaching(self):
        from etcd3gw import exceptions

        try:
            yield
        except exceptions.ConnectionTimeoutError:
            raise PyctrError(f"datastore {self.url} cannot be reached: no answer in {TIMEOUT:g} s") from None
        except exceptions.ConnectionFailedError:
            raise PyctrError(f"datastore {self.url} cannot be reached: connection failed") from None
        except exceptions.Etcd3Exception as e:
            detail = " ".join(str(e).split())[:200]
            raise PyctrError(f"datastore {self.url}: {detail}") from None

    def get(self, key: str) -> dict | None:
        with self._reaching():
            values = self._client.get(key)
        return _document(key, values[0]) if values else None

    def get_prefix(self, prefix: str) -> dict[str, dict]:
        """{key: document} of every key that starts with `prefix`."""
        return {key: document for key, (document, _) in self.get_prefix_with_revisions(prefix).items()}

    def get_prefix_with_revisions(self, prefix: str) -> dict[str, tuple[dict, int]]:
        """{key: (document, the revision of its last change)} of every key that starts with
        `prefix`. A key deleted and put again, even with the same document, has a new revision."""
        with self._reaching():
            found = self._client.get_prefix(prefix)
        return {key: (_document(key, value), int(meta.get("mod_revision", 0)))
                for value, meta in found for key in [meta["key"].decode()]}

    def create(self, key: str, value: dict, also: dict[str, dict] | None = None,
               lease: int | None = None) -> tuple[bool, dict | None]:
        """Put `key` (and the keys of `also`) only if `key` does not exist yet, in one
        transaction (etcd3gw's create, with more puts); `key` under `lease` when given. Returns
        (created, the document that was there when it was not)."""
        puts = [{"key": _b64(key), "value": _b64(_json(value)), **({"lease": lease} if lease else {})}]
        puts += [{"key": _b64(k), "value": _b64(_json(v))} for k, v in (also or {}).items()]
        with self._reaching():
            reply = self._client.transaction({
                "compare": [{"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
                "success": [{"request_put": put} for put in puts],
                "failure": [{"request_range": {"key": _b64(key)}}],
            })
        if reply.get("succeeded"):
            return True, None
        kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs", [])
        return False, _document(key, base64.b64decode(kvs[0]["value"])) if kvs else None

    def put(self, key: str, value: dict, lease: int | None = None) -> None:
        """Put `key`; with `lease` (an ID), the key goes when the lease expires or is revoked."""
        with self._reaching():
            self._client.put(key, _json(value), lease=self._lease(lease) if lease else None)

    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds: its ID."""
        with self._reaching():
            return self._client.lease(ttl).id

    def keep_alive(self, lease: int) -> int:
        """Renew the lease: its TTL in seconds, or -1 when it has expired (or was revoked)."""
        with self._reaching():
            return self._lease(lease).refresh()

    def revoke(self, lease: int) -> None:
        """End the lease now: its keys go with it. A lease that expired already is no error."""
        from etcd3gw import exceptions

        with self._reaching():
            try:
                self._lease(lease).revoke()
            except exceptions.Etcd3Exception as e:
                if "not found" not in str(e):
                    raise

    def _lease(self, lease: int):
        import etcd3gw.lease

        return etcd3gw.lease.Lease(lease, client=self._client)

    def put_and_delete(self, puts: dict[str, dict], deletes: list[str]) -> None:
        """Put and delete keys in one transaction: another node sees all of it or none."""
        if len(puts) + len(deletes) > MAX_TXN_OPS:
            raise PyctrError(f"datastore {self.url}: more than {MAX_TXN_OPS} changes in one transaction")
        success = [{"request_put": {"key": _b64(k), "value": _b64(_json(v))}} for k, v in puts.items()]
        success += [{"request_delete_range": {"key": _b64(k)}} for k in deletes]
        if success:
            with self._reaching():
                self._client.transaction({"compare": [], "failure": [], "success": success})

    def delete(self, *keys: str) -> None:
        """Delete the keys, in transactions of at most MAX_TXN_OPS."""
        for start in range(0, len(keys), MAX_TXN_OPS):
            with self._reaching():
                self._client.transaction({"compare": [], "failure": [], "success": [
                    {"request_delete_range": {"key": _b64(k)}} for k in keys[start:start + MAX_TXN_OPS]]})


JSON_KINDS = {list: "array", str: "string", bool: "boolean"}  # what else json.loads gives: a number, or None


def _document(key: str, value: bytes) -> dict:
    """A key's value, a JSON object as pyctr writes every one: anything else (etcdctl can put
    anything) is a one-line error naming the key, for a command and for the node agent, which
    says it and lives on."""
    try:
        document = json.loads(value)
    except ValueError as e:
        raise not_valid(key, "JSON document", e) from None
    if not isinstance(document, dict):
        kind = "null" if document is None else JSON_KINDS.get(type(document), "number")
        raise not_valid(key, "JSON document", f"a JSON {kind}, not an object")
    return document


def _json(value: dict) -> str:
    return json.dumps(value, sort_keys=True)
