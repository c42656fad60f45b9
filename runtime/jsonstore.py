"""State on disk: JSON files written atomically, and file locks around read-modify-write."""

import os

# Paths are pathlib.Path ("Path" below) or str. Neither pathlib nor fcntl is imported up here,
# nor json (see loads): `pyctr ps`, which only reads, would pay for them.

try:  # the C scanner behind json.loads, and the C encoder behind json.dumps
    from _json import encode_basestring_ascii as _encode_string, make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # an interpreter without them: json does it all
    _make_scanner = _make_encoder = None


class _Decoding:
    """What json's C scanner reads from a json.JSONDecoder: json.loads' defaults."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _make_scanner(_Decoding()) if _make_scanner else None
_JSON_SPACE = " \t\n\r"


def loads(document: bytes | str):
    """json.loads, by the very scanner json.loads uses, without importing json: json's decoder
    imports re, and with it enum, functools and collections, about 6 ms of every `pyctr ps`
    (tests/test_cli.py checks). A document it does not take whole (malformed, another encoding,
    a BOM) goes to json.loads, whose error names the fault."""
    if _scan is not None:
        try:
            text = document.decode() if isinstance(document, bytes) else document
            start = len(text) - len(text.lstrip(_JSON_SPACE))
            value, end = _scan(text, start)
            if not text[end:].strip(_JSON_SPACE):
                return value
        except (StopIteration, UnicodeDecodeError):
            pass
    import json

    return json.loads(document)


def _not_serializable(value):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(value, sort_keys: bool = False, separators: tuple[str, str] = (", ", ": ")) -> str:
    """json.dumps(value, sort_keys=..., separators=...), by the C encoder json.dumps uses, without
    importing json (see loads): a create writes its state this way, and imports neither json nor re."""
    if _make_encoder is None:
        import json

        return json.dumps(value, sort_keys=sort_keys, separators=separators)
    item_separator, key_separator = separators
    # markers (for circular references), default, string encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan: the rest as json.JSONEncoder's defaults
    encode = _make_encoder({}, _not_serializable, _encode_string, None, key_separator, item_separator, sort_keys,
                           False, True)
    return "".join(encode(value, 0))


def read_json(path: "Path", default=None):
    """The document at path, or default if there is none. Read with os.read, in four system
    calls where open() makes seven or nine: `pyctr ps` reads two for every container."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return default
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return loads(b"".join(chunks))


def write_json(path: "Path", data, durable: bool = False, compact: bool = False) -> None:
    """Write to a temporary file in the same directory, then rename over the target, so a
    reader sees the old document or the new one, never half of one. `durable` adds an fsync,
    for documents that must survive a power cut rather than a crash of pyctr. `compact`: one
    line, for documents only programs read (json's C encoder writes it; indented, its Python
    one does, ~5x slower: 0.5 ms for a 20 KB spec)."""
    if compact:
        text = dumps(data)
    else:
        import json

        text = json.dumps(data, indent=2)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "w")
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        f = open(tmp, "w")
    with f:
        f.write(text)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class locked:
    """An flock(2) on lock_path, held for a `with` block; released even if the process dies."""

    def __init__(self, lock_path: "Path", shared: bool = False):
        self.lock_path = lock_path
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> None:
        import fcntl

        try:
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


class updating:
    """Read-modify-write a JSON document under its lock: ``with updating(p, l, {}) as doc: ...``;
    the document is written back only if the block succeeds."""

    def __init__(self, path: "Path", lock_path: "Path", default):
        self.path = path
        self.lock = locked(lock_path)
        self.default = default

    def __enter__(self):
        self.lock.__enter__()
        try:
            self.doc = read_json(self.path, self.default)
        except BaseException:
            self.lock.__exit__()
            raise
        return self.doc

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                write_json(self.path, self.doc)
        finally:
            self.lock.__exit__()
