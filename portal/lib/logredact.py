"""A logging filter that keeps secrets carried in URLs out of the logs.

Agents may carry their token in the URL path (``/fleet/a/<token>/tasks``), the
original Affirmative clients an API key (``/k/<key>/affirmative/store``), and
Django logs the path of every 4xx/5xx response (``django.request``) and, under
``runserver``, of every request (``django.server``).
"""

from __future__ import annotations

import logging
import re

PATH_TOKEN = re.compile(r"(/fleet/a/|/k/)[^/\s\"']+")
REDACTED = r"\1<token>"


class RedactUrlSecrets(logging.Filter):
    """Replace the token or key segment of such URLs in a record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's problem, not ours
            return True
        if "/fleet/a/" in message or "/k/" in message:
            record.msg = PATH_TOKEN.sub(REDACTED, message)
            record.args = ()
        return True
