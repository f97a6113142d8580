"""Status flips into the outbox, and their emails: once on failing, once on
recovery, after N failures, reminders while failing."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from affirmations import notifications, services
from affirmations.models import Check, Flip
from tests.affirmations.test_evaluation import T, affirm_at, make_check

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)
DUE = timedelta(minutes=5)


def checker(at):
    with time_machine.travel(at, tick=False):
        return services.checker_run_once()


def test_a_failure_emails_once_and_a_recovery_emails_once(mailoutbox):
    check = make_check(recipients=["ops@example.com"])
    affirm_at("unrelated", T - timedelta(minutes=1))

    checker(T + DUE)  # nothing affirmed: fails
    checker(T + DUE + timedelta(minutes=1))  # nothing new to send

    check.refresh_from_db()
    assert check.status == Check.Status.FAILING
    assert len(mailoutbox) == 1
    failing = mailoutbox[0]
    assert failing.to == ["ops@example.com"]
    assert "orders_exported" in failing.subject and "FAILING" in failing.subject
    assert "≥ 1 in 20 min" in failing.body
    assert "Observed:  0 affirmations" in failing.body
    assert "2026-12-04 11:40:00 to 2026-12-04 12:00:00 UTC" in failing.body
    assert f"/admin/affirmations/check/{check.pk}/change/" in failing.body
    html = failing.alternatives[0][0]
    assert "orders_exported" in html and "0 affirmations" in html

    affirm_at(check.name, T + HOUR - timedelta(minutes=2))
    checker(T + HOUR + DUE)  # recovers
    checker(T + 2 * HOUR + DUE)  # still passing? nothing affirmed → fails again

    kinds = [m.subject for m in mailoutbox]
    assert len(mailoutbox) == 3
    assert "recovered" in kinds[1]
    assert "FAILING" in kinds[2]
    assert "Last affirmations seen:" in mailoutbox[1].body
    assert Flip.objects.filter(processed_at__isnull=True).count() == 0


def test_it_alerts_only_after_n_consecutive_failures(mailoutbox):
    check = make_check(recipients=["ops@example.com"], failures_before_alert=3)

    checker(T + DUE)
    checker(T + HOUR + DUE)
    check.refresh_from_db()
    assert check.status == Check.Status.NEW
    assert check.consecutive_failures == 2
    assert mailoutbox == []

    checker(T + 2 * HOUR + DUE)

    check.refresh_from_db()
    assert check.status == Check.Status.FAILING
    assert len(mailoutbox) == 1
    assert "3 in a row (alerting after 3)" in mailoutbox[0].body


def test_a_pass_resets_the_failure_count(mailoutbox):
    check = make_check(recipients=["ops@example.com"], failures_before_alert=2)
    checker(T + DUE)
    affirm_at(check.name, T + HOUR - timedelta(minutes=1))
    checker(T + HOUR + DUE)
    checker(T + 2 * HOUR + DUE)
    check.refresh_from_db()
    assert check.consecutive_failures == 1
    assert check.status == Check.Status.PASSING
    assert mailoutbox == []


def test_reminders_repeat_while_failing(mailoutbox):
    make_check(recipients=["ops@example.com"], reminder_interval=timedelta(hours=2))
    for hour in range(5):  # fails at T, T+1h ... T+4h
        checker(T + hour * HOUR + DUE)
    subjects = [m.subject for m in mailoutbox]
    # failing at T, reminders at T+2h and T+4h
    assert len(subjects) == 3
    assert "FAILING" in subjects[0]
    assert all("still failing" in s for s in subjects[1:])


def test_no_recipients_means_no_email_but_the_flip_is_recorded(mailoutbox):
    check = make_check(recipients=[])
    checker(T + DUE)
    assert mailoutbox == []
    flip = Flip.objects.get(owner=check)
    assert flip.kind == Flip.Kind.FAILING
    assert flip.processed_at is not None


def test_a_mail_error_hands_the_flip_back_for_the_next_pass(mailoutbox, monkeypatch):
    check = make_check(recipients=["ops@example.com"])
    with time_machine.travel(T + DUE, tick=False):
        services.evaluate_due()

    def broken(*args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(notifications.emails, "send", broken)
    assert notifications.send_pending() == 0
    flip = Flip.objects.get(owner=check)
    assert flip.processed_at is None
    assert "smtp down" in flip.error

    monkeypatch.undo()
    assert notifications.send_pending() == 1
    assert notifications.send_pending() == 0  # once
    assert len(mailoutbox) == 1
