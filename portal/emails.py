"""One helper for every templated email of the portal.

Templates live in ``templates/emails/<name>-subject.txt``, ``<name>-body.txt`` and
``<name>-body.html``; the HTML body is optional. Mail goes through Django's mail
backend (console by default, SMTP when ``EMAIL_HOST`` is set).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


def make_message(
    name: str,
    to: Iterable[str],
    ctx: dict | None = None,
    *,
    headers: dict | None = None,
) -> EmailMultiAlternatives:
    """Render the ``name`` templates into a message (text, plus HTML when present)."""
    recipients = [address for address in to if address]
    if not recipients:
        raise ValueError("an email needs at least one recipient")
    context = {"site_url": settings.SITE_URL, **(ctx or {})}
    subject = render_to_string(f"emails/{name}-subject.txt", context, using="text")
    # A subject is one line: template line breaks would corrupt the header.
    subject = settings.EMAIL_SUBJECT_PREFIX + " ".join(subject.split())
    text = render_to_string(f"emails/{name}-body.txt", context, using="text")
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers=headers or {},
    )
    try:
        html = render_to_string(f"emails/{name}-body.html", context)
    except TemplateDoesNotExist:
        html = ""
    if html:
        message.attach_alternative(html, "text/html")
    return message


def send(
    name: str,
    to: Iterable[str],
    ctx: dict | None = None,
    *,
    headers: dict | None = None,
) -> EmailMultiAlternatives:
    """Render and send; errors of the mail backend propagate to the caller."""
    message = make_message(name, to, ctx, headers=headers)
    message.send(fail_silently=False)
    logger.info("email %s sent to %d recipient(s)", name, len(message.to))
    return message
