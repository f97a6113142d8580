"""A small JSON API client for the import sources, on ``requests``.

- Every call has ``ctx.timeout`` and counts in ``ctx.calls``.
- Connection errors, timeouts, 5xx and 429 are retried, at most ``max_attempts``
  tries a call, with exponential backoff and full jitter between them; a 429 or
  a 503 waits what ``Retry-After`` (seconds or an HTTP date) or Pingdom's
  ``Req-Limit-Short``/``Req-Limit-Long`` headers ask. A wait longer than
  ``max_wait``, or a call's waits adding up past ``max_total_wait``, fails the
  call at once rather than stall the worker.
- When Pingdom says a limit is spent (``Remaining: 0``), the next call (a retry
  too, whatever its status) first waits until it resets (same bounds).
- Failures no other call of the run would escape raise ``SourceWideError`` (a
  ``SourceError``), so that a kind stops instead of going on with the next app
  or check: credentials or token refused (a 401 after a renewal, the token call
  failing), the rate limit (a 429 after the last try, a wait asked by the API
  beyond the bounds) and connection failures after the last try. Timeouts, 5xx
  and other 4xx may concern one app or check only: plain ``SourceError``.
- Apteligent: an OAuth password-grant token, cached in Django's cache (shared
  between workers) under ``ctx.token_cache_key`` until shortly before it
  expires; a 401 drops it, gets a new one and retries once. Pingdom: a static
  Bearer token.
- Anything else (4xx, an answer that is not JSON) raises ``SourceError``. No
  secret (credential or token) is ever logged or put in an error.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, quote_plus

import requests
from django.core.cache import cache

from importers.sources.base import FetchContext, SourceError, SourceWideError

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
BACKOFF = 0.5  # seconds; the n-th retry waits up to BACKOFF * 2**(n-1)
BACKOFF_MAX = 8.0
MAX_WAIT = 60.0  # the longest single wait a server may ask for
MAX_TOTAL_WAIT = 120.0  # the longest a call may spend waiting, all tries together
TOKEN_MARGIN = 60  # seconds before its expiry that a cached token is dropped
TRANSIENT_ERRORS = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)
_RATE_LIMIT = re.compile(
    r"Remaining:\s*(\d+)\W+Time\s+until\s+reset:\s*(\d+)", re.IGNORECASE
)
_SNIPPET = 120
# The statuses whose Retry-After (and Pingdom's limit headers) say when to retry.
RETRY_AFTER_STATUSES = (429, 503)


class Auth:
    """How a client authenticates its calls."""

    def header(self, client: ApiClient) -> str:
        raise NotImplementedError

    def renew(self, client: ApiClient) -> bool:
        """After a 401: get fresh credentials; False when there is nothing to renew."""
        return False


class StaticBearer(Auth):
    """A fixed API token (Pingdom)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def header(self, client: ApiClient) -> str:
        return f"Bearer {self._token}"


class PasswordGrantToken(Auth):
    """Apteligent's OAuth password grant: ``POST /token`` with HTTP basic auth
    ``(client_id, "")``, then ``Authorization: Bearer <access_token>``."""

    def __init__(self, username: str, password: str, client_id: str) -> None:
        self._username = username
        self._password = password
        self._client_id = client_id
        self._token = ""
        self._expires_at = 0.0

    def header(self, client: ApiClient) -> str:
        if not self._token or client.clock() >= self._expires_at:
            self._load(client)
        return f"Bearer {self._token}"

    def renew(self, client: ApiClient) -> bool:
        key = client.ctx.token_cache_key
        if key:
            cache.delete(key)
        self._token = ""
        self._request(client)
        return True

    def _load(self, client: ApiClient) -> None:
        key = client.ctx.token_cache_key
        cached = cache.get(key) if key else None
        if (
            isinstance(cached, dict)
            and isinstance(cached.get("access_token"), str)
            and cached["access_token"]
            and isinstance(cached.get("expires_at"), int | float)
            # The cache backend may keep an entry a little past its timeout.
            and cached["expires_at"] - TOKEN_MARGIN > client.clock()
        ):
            self._use(client, cached["access_token"], cached["expires_at"])
            return
        self._request(client)

    def _request(self, client: ApiClient) -> None:
        try:
            self._grant(client)
        except SourceWideError:
            raise
        except SourceError as exc:
            # Without a token no call of the run can succeed.
            raise SourceWideError(str(exc)) from None

    def _grant(self, client: ApiClient) -> None:
        where = "POST /token"
        answer = client.call(
            "POST",
            "/token",
            data={
                "grant_type": "password",
                "username": self._username,
                "password": self._password,
            },
            basic_auth=(self._client_id, ""),
            authenticate=False,
        )
        if not isinstance(answer, dict):
            raise SourceError(f"unrecognised answer from {where}: not an object")
        token = answer.get("access_token")
        expires_in = answer.get("expires_in")
        if not isinstance(token, str) or not token:
            raise SourceError(f"unrecognised answer from {where}: no access_token")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or expires_in <= 0
        ):
            raise SourceError(
                f"unrecognised answer from {where}: expires_in is not a positive number"
            )
        expires_at = client.clock() + expires_in
        self._use(client, token, expires_at)
        # Half the lifetime for short-lived tokens, else all of it but the margin.
        lifetime = int(expires_in - min(TOKEN_MARGIN, expires_in / 2))
        key = client.ctx.token_cache_key
        if key and lifetime >= 1:
            cache.set(key, {"access_token": token, "expires_at": expires_at}, lifetime)

    def _use(self, client: ApiClient, token: str, expires_at: float) -> None:
        self._token = token
        self._expires_at = expires_at - min(
            TOKEN_MARGIN, max(0.0, expires_at - client.clock()) / 2
        )
        client.add_secret(token)


class ApiClient:
    """JSON calls to one API for one fetch: ``get()`` and ``post()`` return the
    decoded answer or raise ``SourceError``. Use it as a context manager (it
    keeps one HTTP session).

    ``sleep``, ``rand`` and ``clock`` are injectable so tests need not wait.
    """

    def __init__(
        self,
        ctx: FetchContext,
        auth: Auth,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: float = BACKOFF,
        backoff_max: float = BACKOFF_MAX,
        max_wait: float = MAX_WAIT,
        max_total_wait: float = MAX_TOTAL_WAIT,
    ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.sleep = sleep
        self.rand = rand
        self.clock = clock
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_wait = max_wait
        self.max_total_wait = max_total_wait
        self.base_url = ctx.base_url.rstrip("/")
        self.session = requests.Session()
        # Until when the API said its rate limit is spent (Unix seconds).
        self._blocked_until = 0.0
        self._secrets = {value for value in ctx.credentials.values() if value}

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def add_secret(self, value: str) -> None:
        """Never let ``value`` appear in an error or a log line of this client."""
        if value:
            self._secrets.add(value)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        return self.call("POST", path, params=params, json_body=json_body)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        authenticate: bool = True,
    ) -> Any:
        """One API call, retried as the module docstring says; its JSON answer."""
        where = f"{method} {path}"
        try:
            return self._call(
                method, path, where, params, json_body, data, basic_auth, authenticate
            )
        except SourceError as exc:
            # Belt and braces: whatever built the message, no secret leaves (and
            # a SourceWideError stays one).
            raise type(exc)(self.redact(str(exc))) from None

    def _call(
        self,
        method: str,
        path: str,
        where: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        data: Mapping[str, str] | None,
        basic_auth: tuple[str, str] | None,
        authenticate: bool,
    ) -> Any:
        url = self.base_url + path
        renewed = False
        attempt = 0
        waited = 0.0
        while True:
            waited += self._wait_for_rate_limit(where, waited)
            attempt += 1
            # Whether the failure concerns the whole source, and whether its
            # wait is the API's own (Retry-After, a spent limit).
            wide = hinted = False
            headers = {"Accept": "application/json"}
            if authenticate:
                headers["Authorization"] = self.auth.header(self)
            self.ctx.calls += 1
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    data=data,
                    auth=basic_auth,
                    headers=headers,
                    timeout=self.ctx.timeout,
                    allow_redirects=False,
                )
            except TRANSIENT_ERRORS as exc:
                if isinstance(exc, requests.Timeout):
                    problem = f"timed out after {self.ctx.timeout:g} s"
                else:
                    problem = f"connection failed ({type(exc).__name__})"
                    wide = True  # the API is unreachable, not one app's call
                delay = self._backoff(attempt)
            except requests.RequestException as exc:
                raise SourceError(f"{where}: {type(exc).__name__}") from None
            else:
                status = response.status_code
                self._note_rate_limit(response)
                if 200 <= status < 300:
                    return self._decode(response, where)
                if status == 401 and authenticate and not renewed:
                    renewed = True
                    if self.auth.renew(self):
                        logger.info(
                            "%s: %s answered 401, retrying with a new token",
                            self.ctx.name,
                            where,
                        )
                        attempt -= 1  # the retry after a renewal is not a failure
                        continue
                if status == 401:
                    raise SourceWideError(
                        f"{where}: unauthorized (HTTP 401): check the credentials"
                    )
                if status == 429:
                    problem = "rate limited (HTTP 429)"
                    wide = True
                elif status >= 500:
                    problem = f"HTTP {status}"
                else:
                    raise SourceError(f"{where}: HTTP {status}{self._body(response)}")
                if status in RETRY_AFTER_STATUSES:
                    delay, hinted = self._rate_limit_delay(response, attempt)
                else:
                    delay = self._backoff(attempt)
            # A retry never goes before a spent limit resets (whatever failed).
            reset = self._blocked_until - self.clock()
            if reset > delay:
                delay, hinted = reset, True
            if attempt >= self.max_attempts:
                error = SourceWideError if wide else SourceError
                raise error(f"{where}: {problem}; gave up after {attempt} tries")
            if delay > self.max_wait or waited + delay > self.max_total_wait:
                # The API asked for a wait this importer will not make: so would
                # every other call of the run.
                error = SourceWideError if wide or hinted else SourceError
                raise error(
                    f"{where}: {problem}; the next try would be in {delay:.0f} s, "
                    f"beyond the {self.max_wait:.0f} s this importer waits"
                )
            logger.warning(
                "%s: %s %s (try %d of %d), retrying in %.1f s",
                self.ctx.name,
                where,
                problem,
                attempt,
                self.max_attempts,
                delay,
            )
            self.sleep(delay)
            waited += delay
            # The wait asked for has been waited (even with a fake sleep).
            self._blocked_until = 0.0

    # --- Waiting ----------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1)))."""
        return self.rand() * min(self.backoff_max, self.backoff * 2 ** (attempt - 1))

    def _rate_limit_delay(
        self, response: requests.Response, attempt: int
    ) -> tuple[float, bool]:
        """The wait before retrying a 429 or 503, and whether the API asked for
        it (``Retry-After``, a spent limit) rather than it being our backoff."""
        asked = _retry_after(response.headers.get("Retry-After"), self.clock())
        reset = self._blocked_until - self.clock()
        if asked is None and reset <= 0:
            return self._backoff(attempt), False
        return max(asked or 0.0, reset, 0.0), True

    def _note_rate_limit(self, response: requests.Response) -> None:
        for header in ("Req-Limit-Short", "Req-Limit-Long"):
            match = _RATE_LIMIT.search(response.headers.get(header, ""))
            if match and int(match.group(1)) == 0:
                self._blocked_until = max(
                    self._blocked_until, self.clock() + int(match.group(2))
                )

    def _wait_for_rate_limit(self, where: str, waited: float) -> float:
        delay = self._blocked_until - self.clock()
        if delay <= 0:
            return 0.0
        if delay > self.max_wait or waited + delay > self.max_total_wait:
            raise SourceWideError(
                f"{where}: the API's rate limit is spent and resets in {delay:.0f} s, "
                f"beyond the {self.max_wait:.0f} s this importer waits"
            )
        logger.warning(
            "%s: rate limit spent, waiting %.1f s before %s",
            self.ctx.name,
            delay,
            where,
        )
        self.sleep(delay)
        self._blocked_until = 0.0
        return delay

    # --- Answers ----------------------------------------------------------------

    def _decode(self, response: requests.Response, where: str) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            kind = response.headers.get("Content-Type", "no content type")
            raise SourceError(
                f"{where}: the answer is not valid JSON ({kind}, "
                f"{len(response.content)} bytes){self._body(response)}"
            ) from None

    def _body(self, response: requests.Response) -> str:
        """The start of an answer's body for an error, secrets removed."""
        # Redacted whole before it is cut, so no piece of a secret is left.
        text = self.redact(
            " ".join(response.content.decode("utf-8", "replace").split())
        )
        if not text:
            return ""
        return f": {text[:_SNIPPET]}{'...' if len(text) > _SNIPPET else ''}"

    def redact(self, text: str) -> str:
        return redact(text, list(self._secrets))


def secret_forms(values: Iterable[str]) -> set[str]:
    """The ways a secret shows up in an error: as is, URL-encoded, and inside an
    HTTP Basic ``Authorization`` header (base64 of ``a:b``, either part one of
    the secrets or empty, as Apteligent's ``client_id:``)."""
    secrets = {value for value in values if value}
    forms = set()
    for value in secrets:
        forms |= {value, quote(value, safe=""), quote_plus(value)}
    for user in secrets | {""}:
        for password in secrets | {""}:
            if user or password:
                pair = f"{user}:{password}".encode()
                forms.add(base64.b64encode(pair).decode("ascii"))
    return forms


def redact(text: str, secrets: dict[str, str] | list[str]) -> str:
    """``text`` with every secret value (see ``secret_forms``) masked."""
    values = secrets.values() if isinstance(secrets, dict) else secrets
    for form in sorted(secret_forms(values), key=len, reverse=True):
        text = text.replace(form, "***")
    return text


@contextmanager
def given_or_new(
    client: ApiClient | None, make: Callable[[FetchContext], ApiClient], ctx
) -> Iterator[ApiClient]:
    """The client a caller gave (a test's, with a sleep that does not wait), or a
    new one for this fetch, closed after it."""
    if client is not None:
        yield client
        return
    with make(ctx) as api:
        yield api


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - now)


def _credential(ctx: FetchContext, role: str) -> str:
    value = ctx.credentials.get(role)
    if not isinstance(value, str) or not value:
        raise SourceError(f"bad config: the {role!r} credential is missing")
    return value


def apteligent_client(ctx: FetchContext, **options: Any) -> ApiClient:
    """A client for the Apteligent API, with the password-grant token."""
    auth = PasswordGrantToken(
        _credential(ctx, "username"),
        _credential(ctx, "password"),
        _credential(ctx, "client_id"),
    )
    return ApiClient(ctx, auth, **options)


def pingdom_client(ctx: FetchContext, **options: Any) -> ApiClient:
    """A client for the Pingdom API, with its static token."""
    return ApiClient(ctx, StaticBearer(_credential(ctx, "token")), **options)
