"""System checks that stop a misconfigured portal at start-up with one line each.

``manage.py check``, ``migrate``, ``runserver`` and ``qcluster`` run them, and the
WSGI/ASGI entry points call ``fail_fast()`` so gunicorn refuses to start as well.

portal.E001  an environment variable has a value that cannot be used
portal.E002  SECRET_KEY is missing while DEBUG is off
portal.E003  django-q2 timeout is not below its retry
portal.E004  ALLOWED_HOSTS is "*" while DEBUG is off
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core import checks

TAG = "portal_config"


@checks.register(TAG)
def check_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = [
        checks.Error(f"{name}: {message}.", id="portal.E001")
        for name, message in getattr(settings, "CONFIG_ERRORS", [])
    ]
    if not settings.DEBUG and getattr(settings, "SECRET_KEY_MISSING", False):
        errors.append(
            checks.Error(
                "SECRET_KEY must be set when DEBUG is off.",
                hint="Generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(50))'",
                id="portal.E002",
            )
        )
    q = getattr(settings, "Q_CLUSTER", {})
    timeout, retry = q.get("timeout"), q.get("retry")
    if timeout is not None and retry is not None and timeout >= retry:
        errors.append(
            checks.Error(
                f"Q_TIMEOUT ({timeout}s) must be below Q_RETRY ({retry}s), or "
                "django-q2 hands a task that is still running to a second worker.",
                id="portal.E003",
            )
        )
    if not settings.DEBUG and "*" in settings.ALLOWED_HOSTS:
        errors.append(
            checks.Error(
                "ALLOWED_HOSTS must name the portal's host names, not '*'.",
                id="portal.E004",
            )
        )
    return errors


def fail_fast() -> None:
    """Exit with one line per problem when the configuration is unusable."""
    problems = [m for m in checks.run_checks(tags=[TAG]) if m.level >= checks.ERROR]
    if problems:
        for message in problems:
            print(f"{message.id}: {message.msg}", file=sys.stderr)
        # 3 is gunicorn's "worker failed to boot": the master halts instead of
        # re-spawning workers that can never start.
        raise SystemExit(3)
