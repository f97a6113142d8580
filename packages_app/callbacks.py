"""Callbacks of a pipeline run: its JSON POSTed to the caller's URLs.

The original POSTed to ``PIPELINE_CALLBACK_URL`` on each run status change,
``STEP_CALLBACK_URL`` on each step status change and ``CMD_CALLBACK_URL`` on each
output chunk. Here they go out from one background thread per run, in order, each
with a timeout and a bounded number of retries, so a slow or dead receiver never
slows a step; a failed callback is logged and counted, never fatal. Output comes
batched by the pipeline executor (a few callbacks per second per command at most).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings

logger = logging.getLogger(__name__)

KINDS = ("run", "step", "cmd")
QUEUE_LIMIT = 10_000


def safe_url(url: str) -> str:
    """The URL as it may be logged or shown: no credentials, query or fragment
    (where tokens usually travel)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class CallbackSender:
    """Sends queued payloads in order from a thread; ``close()`` waits (bounded)."""

    def __init__(
        self,
        urls: dict[str, str],
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float = 0.5,
    ):
        self.urls = {kind: url for kind, url in urls.items() if url}
        self.timeout = timeout or settings.PIPELINE_CALLBACK_TIMEOUT
        self.retries = (
            settings.PIPELINE_CALLBACK_RETRIES if retries is None else retries
        )
        self.backoff = backoff
        self.sent = self.failed = self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._session: requests.Session | None = None

    @property
    def active(self) -> bool:
        return bool(self.urls)

    def send(self, kind: str, payload: dict) -> None:
        if kind not in self.urls:
            return
        if self._thread is None:
            self._session = requests.Session()
            self._thread = threading.Thread(
                target=self._work, daemon=True, name="pipeline-callbacks"
            )
            self._thread.start()
        try:
            self._queue.put_nowait((kind, payload))
        except queue.Full:
            self.dropped += 1

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._post(*item)

    def _post(self, kind: str, payload: dict) -> None:
        url, problem = self.urls[kind], ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._session.post(
                    url,
                    json=payload,
                    timeout=self.timeout,
                    headers={"X-Pipeline-Event": kind},
                )
            except requests.RequestException as exc:
                problem = type(exc).__name__
                continue
            if response.status_code < 400:
                self.sent += 1
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500:
                break  # the receiver refuses it: retrying won't help
        self.failed += 1
        logger.warning("%s callback to %s failed: %s", kind, safe_url(url), problem)

    def close(self, wait: float = 10.0) -> None:
        """Let the queue drain for up to ``wait`` seconds, then stop."""
        if self._thread is None:
            return
        deadline = time.monotonic() + wait
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.dropped += self._queue.qsize()
        self._session.close()
        self._thread = None
