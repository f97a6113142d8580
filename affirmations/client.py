#!/usr/bin/env python3
"""Affirm events on an Ops Portal from any script: standard library only, so that
copying this one file is the whole installation.

    from client import Client
    Client("https://ops.example.com", api_key="opk_...").affirm("backup_done", "3 GB")

or from a shell (the key from the environment, never on the command line):

    AFFIRM_API_KEY=opk_... python client.py https://ops.example.com backup_done "3 GB"

exits 0 on success and 1, with one readable line on stderr, on failure.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request

AFFIRM_PATH = "/api/v1/affirmations/affirm/"
# Seconds to wait before each retry: short, so that a job's end is not held up.
BACKOFF = (0.5, 1.0, 2.0, 4.0)


class AffirmError(Exception):
    """Affirming failed: refused (4xx), or the server unreachable or failing after
    the retries. ``status`` is the last HTTP status, None without an answer."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 2,
    ):
        self.url = base_url.rstrip("/") + AFFIRM_PATH
        self.api_key = api_key
        self.timeout = timeout
        self.retries = max(0, retries)
        self._sleep = time.sleep  # tests replace it: no real waiting

    def affirm(self, name: str, data: str = "") -> dict:
        """Affirm one event of ``name``; returns the stored affirmation. Connection
        errors, timeouts and 5xx answers are retried; a 4xx is not."""
        body = json.dumps({"name": name, "data": data}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["X-Api-Key"] = self.api_key
        problem = ""
        status = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            request = urllib.request.Request(
                self.url, data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    raw = answer.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
                problem = f"HTTP {exc.code}: {_reason(exc)}"
                if exc.code < 500:
                    raise AffirmError(
                        f"affirming {name!r} was refused: {problem}", status
                    ) from None
            except (OSError, http.client.HTTPException) as exc:
                # URLError (refused, DNS), timeouts, resets: worth another try.
                status = None
                reason = getattr(exc, "reason", None) or exc
                problem = f"{type(exc).__name__}: {reason}"
            except ValueError as exc:  # not a URL urllib can open
                raise AffirmError(f"affirming {name!r}: {exc}") from None
            else:
                try:
                    return json.loads(raw or b"{}")
                except ValueError:
                    # Stored already: retrying would affirm twice.
                    return {}
        raise AffirmError(
            f"affirming {name!r} failed after {self.retries + 1} attempt(s): {problem}",
            status,
        )


def _reason(exc: urllib.error.HTTPError) -> str:
    """The server's error in one line: DRF's detail, or the field errors."""
    try:
        body = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        body = None
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])
        if "error" in body:
            return str(body["error"])
        return "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in body.items())
    return str(exc.reason)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(
            "usage: client.py URL NAME [DATA]   (API key in AFFIRM_API_KEY)",
            file=sys.stderr,
        )
        return 1
    url, name = args[0], args[1]
    data = args[2] if len(args) == 3 else ""
    client = Client(url, api_key=os.environ.get("AFFIRM_API_KEY") or None)
    try:
        stored = client.affirm(name, data)
    except AffirmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"affirmed {name!r} (id {stored.get('id')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
