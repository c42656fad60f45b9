"""HTTP downloads with timeouts and retries, shared by the Alpine mirror and the registry client.

    PYCTR_PULL_TIMEOUT  seconds, for connecting and for each read (default 30)
    PYCTR_PULL_RETRIES  more tries after the first, on connection errors, 5xx answers and
                        bodies cut short (default 3)
    PYCTR_PULL_BACKOFF  seconds before the first retry; doubles with each (default 0.5)

requests and urllib3 are imported inside the functions: the CLI must start fast for every
command that does not download anything.
"""

import os
import re
from dataclasses import dataclass

from pyctr.runtime.errors import PyctrError


@dataclass(frozen=True)
class Transfer:
    """How patient to be with a server; the environment can shorten it (the tests do)."""

    timeout: float = 30.0  # seconds, for connecting and for each read
    retries: int = 3  # more tries after the first, on connection errors and 5xx
    backoff: float = 0.5  # seconds; doubles with each retry

    @classmethod
    def from_env(cls) -> "Transfer":
        return cls(
            timeout=env_number("PYCTR_PULL_TIMEOUT", cls.timeout, float),
            retries=env_number("PYCTR_PULL_RETRIES", cls.retries, int),
            backoff=env_number("PYCTR_PULL_BACKOFF", cls.backoff, float),
        )

    @property
    def tries(self) -> int:
        return self.retries + 1


class CutShort(Exception):
    """The connection broke while the body was coming (the caller retries the whole request)."""


def open_session(transfer: Transfer):
    """A requests session that retries connection errors and 5xx answers with backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=transfer.retries, connect=transfer.retries, read=transfer.retries,
        status=transfer.retries, other=0, backoff_factor=transfer.backoff,
        status_forcelist=(500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # hand back the last 5xx, so the error can name it
        respect_retry_after_header=False,  # keep the wait bounded by our own backoff
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.headers["User-Agent"] = "pyctr"
    return session


def http_get(session, transfer: Transfer, url: str, stream: bool = False, **kwargs):
    """session.get with the transfer's timeouts; a failure to get an answer is one PyctrError line."""
    import requests

    try:
        return session.get(url, timeout=(transfer.timeout, transfer.timeout), stream=stream, **kwargs)
    except requests.ConnectTimeout:
        raise PyctrError(f"cannot reach {url}: no answer within {transfer.timeout:g}s "
                         f"({transfer.tries} tries)") from None
    except (requests.Timeout, requests.ConnectionError) as e:
        # urllib3 reports read timeouts it gave up retrying as connection errors: look inside.
        if isinstance(e, requests.Timeout) or "timed out" in reason(e).lower():
            raise PyctrError(f"{url} did not answer within {transfer.timeout:g}s "
                             f"({transfer.tries} tries)") from None
        raise PyctrError(f"cannot reach {url}: {reason(e)} ({transfer.tries} tries)") from None
    except requests.RequestException as e:
        raise PyctrError(f"cannot fetch {url}: {reason(e)}") from None


def stream_errors() -> tuple:
    """The exceptions that mean a body was cut short while it was being read."""
    import requests
    import urllib3

    return (urllib3.exceptions.HTTPError, requests.RequestException, ConnectionError, TimeoutError)


def reason(error: BaseException) -> str:
    """The root cause of a requests/urllib3 error, without their object reprs."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException) and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = str(error)
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno_text:
        return errno_text.group(1).strip()
    # Drop urllib3's "HTTPConnectionPool(host=..., port=...): " and "<object at 0x...>: " prefixes.
    return re.sub(r"^(\w+\([^)]*\)|<[^>]+>): ", "", text) or type(error).__name__


def env_number(name: str, default, kind):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise PyctrError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise PyctrError(f"{name} must not be negative")
    return value
