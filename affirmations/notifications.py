"""Alerts from the outbox: each flip is claimed by a conditional UPDATE and emailed
once; a mail backend error hands it back for the next pass."""

from __future__ import annotations

import logging

from django.urls import reverse
from django.utils import timezone

from affirmations.models import Affirmation, Check, Flip
from affirmations.schedule import explain, format_duration
from portal import emails

logger = logging.getLogger(__name__)

LAST_SEEN = 5
SUBJECTS = {
    Flip.Kind.FAILING: "FAILING",
    Flip.Kind.RECOVERED: "recovered",
    Flip.Kind.REMINDER: "still failing",
}


def flip_context(flip: Flip) -> dict:
    check: Check = flip.owner
    evaluation = flip.evaluation
    last_seen = list(
        Affirmation.objects.filter(name=check.name)
        .order_by("-occurred_at")
        .only("occurred_at", "data", "source")[:LAST_SEEN]
    )
    return {
        "flip": flip,
        "check": check,
        "status_word": SUBJECTS[flip.kind],
        "evaluation": evaluation,
        "schedule_text": explain(check.schedule),
        "lookback_text": format_duration(check.lookback),
        "grace_text": format_duration(check.grace),
        "last_seen": last_seen,
        "check_url": emails_url(
            reverse("admin:affirmations_check_change", args=[check.pk])
        ),
    }


def emails_url(path: str) -> str:
    from django.conf import settings

    return settings.SITE_URL + path


def send_pending() -> int:
    """Send every unsent flip's email; returns how many were sent."""
    sent = 0
    for flip in Flip.objects.filter(processed_at__isnull=True).order_by(
        "created_at", "id"
    ):
        # Claim it: of two senders running at once, one sends.
        if not Flip.objects.filter(pk=flip.pk, processed_at__isnull=True).update(
            processed_at=timezone.now()
        ):
            continue
        flip = Flip.objects.select_related("owner", "evaluation").get(pk=flip.pk)
        recipients = list(flip.owner.recipients)
        if not recipients:
            continue
        try:
            emails.send("affirmation-flip", recipients, flip_context(flip))
        except Exception as exc:  # hand it back: the next pass retries
            logger.exception("alert for check %s failed", flip.owner.key)
            Flip.objects.filter(pk=flip.pk).update(
                processed_at=None, error=f"{type(exc).__name__}: {exc}"[:2000]
            )
            continue
        sent += 1
    return sent
