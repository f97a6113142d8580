"""The affirmations admin: the check list (columns, last results in bounded queries,
filters, search, pause/resume), the form (durations as typed, recipients, schedule,
rescheduling on save), the sign-off button, the history chart, the monitoring page,
and the read-only records."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.test import Client

from affirmations.models import Affirmation, Check, Evaluation

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
CHECKS = "/admin/affirmations/check/"
MONITOR = "/admin/affirmations/check/monitor/"
AFFIRMATIONS = "/admin/affirmations/affirmation/"
EVALUATIONS = "/admin/affirmations/evaluation/"
FORM = {
    "name": "orders_exported",
    "description": "",
    "schedule": "*/15 * * * *",
    "tz": "UTC",
    "lookback": "20m",
    "min_count": "1",
    "max_count": "4",
    "grace": "5m",
    "failures_before_alert": "1",
    "reminder_interval": "1d",
    "recipients": "ops@example.org, oncall@example.org",
}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def make_check(name: str = "nightly_backup_verified", **fields) -> Check:
    fields.setdefault("schedule", "0 6 * * *")
    fields.setdefault("tz", "Europe/Helsinki")
    fields.setdefault("lookback", timedelta(days=1))
    check = Check.objects.create(name=name, **fields)
    check.schedule_from(NOW)
    return check


def evaluate(check: Check, occurrence: datetime, observed: int | None, **fields):
    """An evaluation of ``check``: passed by its rule, or skipped for no count."""
    passed = None if observed is None else check.passes(observed)
    return Evaluation.objects.create(
        owner=check,
        occurrence=occurrence,
        window_start=occurrence - check.lookback,
        window_end=occurrence,
        observed=observed,
        passed=passed,
        skipped_reason="" if observed is not None else "the checker was behind",
        min_count=check.min_count,
        max_count=check.max_count,
        evaluated_at=occurrence,
        **fields,
    )


def row_of(html: str, check: Check) -> str:
    """The changelist row of ``check``."""
    marker = f'<a href="/admin/affirmations/check/{check.pk}/change/">{check.pk}</a>'
    return html.split(marker)[1].split("</tr>")[0]


def dot_kinds(html: str) -> list[str]:
    return re.findall(r'class="aff-dot aff-dot-(\w+)"', html)


def action(client, name: str, objects):
    return client.post(
        CHECKS,
        {"action": name, "_selected_action": [obj.pk for obj in objects]},
        follow=True,
    )


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- The list -------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_lists_checks_with_their_columns(admin_client):
    check = make_check(min_count=1)
    Check.objects.filter(pk=check.pk).update(status=Check.Status.PASSING)
    failing = make_check(
        "orders_exported",
        schedule="*/15 * * * *",
        tz="UTC",
        lookback=timedelta(minutes=20),
        max_count=4,
    )
    Check.objects.filter(pk=failing.pk).update(status=Check.Status.FAILING)

    response = admin_client.get(CHECKS)

    assert response.status_code == 200
    html = response.content.decode()
    row = row_of(html, check)
    assert (
        '<span class="portal-badge portal-badge-ok" data-status="passing">'
        "Passing</span>"
    ) in row
    assert 'nightly_backup_verified<br><code class="aff-key" ' in row
    assert f">{check.key}</code>" in row
    # 06:00 Helsinki (EET, UTC+2) tomorrow is 04:00 UTC: 15 h 30 min away
    assert '<time datetime="2026-03-11T04:00:00+00:00"' in row
    assert "2026-03-11 06:00 EET</time>" in row
    assert '<span class="aff-quiet">in 15 h</span>' in row
    assert (
        '<span title="cron: 0 6 * * * (Europe/Helsinki)">At 06:00 every day</span>'
    ) in row
    assert "≥ 1 in 1 d" in row
    assert "no results yet" in row
    assert (
        f'<a class="aff-affirm-link" href="/admin/affirmations/check/{check.pk}'
        '/affirm/">Affirm ‘nightly_backup_verified’ now</a>'
    ) in row
    other = row_of(html, failing)
    assert 'portal-badge-bad" data-status="failing">Failing</span>' in other
    assert "1–4 in 20 min" in other
    assert '<span class="aff-quiet">in 15 min</span>' in other
    assert f'<a href="{MONITOR}" class="aff-monitor-link">Monitor</a>' in html
    assert "Pause selected checks" in html
    assert "Resume selected checks" in html


@time_machine.travel(NOW, tick=False)
def test_it_draws_the_last_ten_results_oldest_first_in_bounded_queries(
    admin_client, django_assert_max_num_queries
):
    check = make_check(
        "orders_exported",
        schedule="*/15 * * * *",
        tz="UTC",
        lookback=timedelta(minutes=20),
        max_count=4,
    )
    # 12 results, oldest first: 2 old passes (not drawn), then a pattern
    counts = [1, 1, 0, 2, None, 5, 1, 1, 0, 3, None, 2]
    for i, observed in enumerate(counts):
        evaluate(check, NOW - timedelta(minutes=15 * (len(counts) - i)), observed)
    others = [make_check(f"other_{i}") for i in range(5)]
    for other in others:
        for minutes in range(1, 13):
            evaluate(other, NOW - timedelta(minutes=minutes), 1)

    # one query for the results of the whole page, not one per row
    with django_assert_max_num_queries(7):
        response = admin_client.get(CHECKS)

    row = row_of(response.content.decode(), check)
    assert dot_kinds(row) == [
        "failed",
        "passed",
        "skipped",
        "failed",
        "passed",
        "passed",
        "failed",
        "passed",
        "skipped",
        "passed",
    ]
    assert 'title="2026-03-10 12:15 UTC: passed: 2 observed"' in row
    assert all(dot_kinds(row_of(response.content.decode(), o)) for o in others)


@time_machine.travel(NOW, tick=False)
def test_it_filters_by_status_and_time_zone_and_searches_name_and_key(
    admin_client,
):
    helsinki = make_check("backup", tz="Europe/Helsinki")
    utc = make_check("export", tz="UTC")
    Check.objects.filter(pk=utc.pk).update(status=Check.Status.FAILING)

    failing = admin_client.get(CHECKS + "?status__exact=failing")
    by_zone = admin_client.get(CHECKS + "?tz=Europe%2FHelsinki")
    by_name = admin_client.get(CHECKS + "?q=expo")
    by_key = admin_client.get(CHECKS + f"?q={helsinki.key}")

    assert list(failing.context["cl"].result_list) == [utc]
    assert list(by_zone.context["cl"].result_list) == [helsinki]
    assert list(by_name.context["cl"].result_list) == [utc]
    assert list(by_key.context["cl"].result_list) == [helsinki]


@time_machine.travel(NOW, tick=False)
def test_it_pauses_and_resumes_checks(admin_client):
    passing = make_check("backup")
    paused = make_check("export")
    paused.pause()

    pausing = action(admin_client, "pause_checks", [passing, paused])

    passing.refresh_from_db()
    assert passing.status == Check.Status.PAUSED
    assert passing.next_due_at is None
    assert messages_of(pausing) == ["Paused 1 check(s); 1 were paused already."]

    active = make_check("purge")
    resuming = action(admin_client, "resume_checks", [passing, active])

    passing.refresh_from_db()
    assert passing.status == Check.Status.NEW
    assert passing.next_occurrence == datetime(2026, 3, 11, 4, 0, tzinfo=UTC)
    assert passing.next_due_at == passing.next_occurrence + passing.grace
    assert messages_of(resuming) == ["Resumed 1 check(s); 1 were not paused."]


def test_it_offers_no_pause_to_a_viewer(viewer_user):
    check = make_check()

    response = action(logged_in(viewer_user), "pause_checks", [check])

    check.refresh_from_db()
    assert check.status == Check.Status.NEW
    assert "Pause selected checks" not in response.content.decode()


# --- The form -------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_reads_durations_and_recipients_typed_in_the_form(admin_client):
    response = admin_client.post(CHECKS + "add/", FORM)

    assert response.status_code == 302
    check = Check.objects.get()
    assert check.lookback == timedelta(minutes=20)
    assert check.grace == timedelta(minutes=5)
    assert check.reminder_interval == timedelta(days=1)
    assert check.recipients == ["ops@example.org", "oncall@example.org"]
    assert check.max_count == 4
    assert len(check.key) == 11
    # aimed at the first occurrence after now, due after the grace period
    assert check.next_occurrence == datetime(2026, 3, 10, 12, 45, tzinfo=UTC)
    assert check.next_due_at == datetime(2026, 3, 10, 12, 50, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_it_accepts_no_grace_and_no_reminders(admin_client):
    form = {**FORM, "grace": "0", "reminder_interval": "", "recipients": ""}

    admin_client.post(CHECKS + "add/", form)

    check = Check.objects.get()
    assert check.grace == timedelta(0)
    assert check.reminder_interval is None
    assert check.recipients == []
    assert check.next_due_at == check.next_occurrence


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("lookback", "20 minutes", "is not a duration"),
        ("lookback", "0m", "must be longer than zero"),
        ("grace", "-5m", "is not a duration"),
        ("reminder_interval", "often", "is not a duration"),
        ("recipients", "ops@example.org, not-an-address", "not-an-address"),
        ("schedule", "*/15 * * *", "must have 5 fields"),
        ("tz", "Mars/Olympus", "is not a known time zone"),
        ("max_count", "0", "Must not be below the minimum"),
    ],
)
def test_it_shows_bad_input_as_form_errors(admin_client, field, value, error):
    response = admin_client.post(CHECKS + "add/", {**FORM, field: value})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors
    assert error in " ".join(errors[field])
    assert not Check.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_it_shows_durations_as_typed_the_schedule_in_english_and_the_key(
    admin_client,
):
    check = make_check(
        lookback=timedelta(hours=5),
        grace=timedelta(minutes=90),
        recipients=["ops@example.org", "b@example.org"],
    )

    response = admin_client.get(f"{CHECKS}{check.pk}/change/")

    html = response.content.decode()
    form = response.context["adminform"].form
    assert form.initial["lookback"] == "5h"
    assert form.initial["grace"] == "90m"
    assert form.initial["recipients"] == "ops@example.org, b@example.org"
    assert 'value="5h"' in html
    assert "<strong>At 06:00 every day</strong> (Europe/Helsinki)." in html
    # read-only after creation: shown, not a form field
    assert "key" not in form.fields
    assert f'<code class="aff-key">{check.key}</code>' in html


@time_machine.travel(NOW, tick=False)
def test_it_reschedules_when_the_schedule_changes(admin_client):
    check = make_check()
    Check.objects.filter(pk=check.pk).update(status=Check.Status.FAILING)
    form = {
        **FORM,
        "name": check.name,
        "schedule": "30 13 * * *",
        "tz": "Europe/Helsinki",
        "lookback": "1d",
        "max_count": "",
        "reminder_interval": "",
        "recipients": "",
    }

    response = admin_client.post(f"{CHECKS}{check.pk}/change/", form)

    assert response.status_code == 302
    check.refresh_from_db()
    assert check.schedule == "30 13 * * *"
    # 13:30 Helsinki today is 11:30 UTC, gone: tomorrow's
    assert check.next_occurrence == datetime(2026, 3, 11, 11, 30, tzinfo=UTC)
    assert check.next_due_at == datetime(2026, 3, 11, 11, 35, tzinfo=UTC)
    # only the edited fields are written: the checker's status stays
    assert check.status == Check.Status.FAILING


@time_machine.travel(NOW, tick=False)
def test_it_keeps_the_next_occurrence_when_only_the_rule_changes(admin_client):
    check = make_check(lookback=timedelta(days=1))
    owed = NOW - timedelta(hours=1)  # as if the checker were behind
    Check.objects.filter(pk=check.pk).update(next_occurrence=owed)
    form = {
        **FORM,
        "name": check.name,
        "schedule": "0 6 * * *",
        "tz": "Europe/Helsinki",
        "lookback": "1d",
        "min_count": "2",
        "max_count": "",
        "reminder_interval": "",
        "recipients": "",
    }

    admin_client.post(f"{CHECKS}{check.pk}/change/", form)

    check.refresh_from_db()
    assert check.min_count == 2
    assert check.next_occurrence == owed


# --- Sign-off -------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_asks_before_signing_off_and_records_nothing_on_get(operator_user):
    check = make_check()
    earlier = Affirmation.objects.create(
        name=check.name,
        source=Affirmation.Source.API,
        occurred_at=NOW - timedelta(hours=3),
        note="from the backup job",
    )
    client = logged_in(operator_user)

    page = client.get(f"{CHECKS}{check.pk}/change/")
    response = client.get(f"{CHECKS}{check.pk}/affirm/")

    assert (
        f'<a href="/admin/affirmations/check/{check.pk}/affirm/" '
        'class="aff-affirm-link">Affirm ‘nightly_backup_verified’ now</a>'
    ) in page.content.decode()
    assert response.status_code == 200
    html = response.content.decode()
    assert "records <strong>one</strong> event ‘nightly_backup_verified’" in html
    assert "as <strong>olivia</strong>" in html
    assert 'name="csrfmiddlewaretoken"' in html
    # a double click on the button submits once
    assert '<form method="post" id="aff-affirm-form" data-submit-once>' in html
    assert "/static/affirmations/signoff.js" in html
    assert "2026-03-10 11:30 EET" in html  # the earlier one, in the check's zone
    assert earlier.note in html
    assert list(Affirmation.objects.all()) == [earlier]


@time_machine.travel(NOW, tick=False)
def test_it_records_one_affirmation_on_post(operator_user):
    check = make_check()
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    page = client.get(f"{CHECKS}{check.pk}/affirm/")
    token = page.context["csrf_token"]

    response = client.post(
        f"{CHECKS}{check.pk}/affirm/", {"csrfmiddlewaretoken": token}, follow=True
    )

    assert response.redirect_chain == [(f"{CHECKS}{check.pk}/change/", 302)]
    affirmation = Affirmation.objects.get()
    assert affirmation.name == check.name
    assert affirmation.source == Affirmation.Source.SIGNOFF
    assert affirmation.user == operator_user
    assert affirmation.occurred_at == NOW
    assert messages_of(response) == ["Affirmed ‘nightly_backup_verified’ as olivia"]


def test_it_refuses_a_post_without_csrf(operator_user):
    check = make_check()
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)

    response = client.post(f"{CHECKS}{check.pk}/affirm/")

    assert response.status_code == 403
    assert not Affirmation.objects.exists()


def test_it_refuses_sign_off_to_a_viewer(viewer_user):
    check = make_check()
    client = logged_in(viewer_user)

    changelist = client.get(CHECKS)
    page = client.get(f"{CHECKS}{check.pk}/change/")
    confirm = client.get(f"{CHECKS}{check.pk}/affirm/")
    post = client.post(f"{CHECKS}{check.pk}/affirm/")

    assert changelist.status_code == 200
    assert "aff-affirm-link" not in changelist.content.decode()
    assert page.status_code == 200
    assert "aff-affirm-link" not in page.content.decode()
    assert confirm.status_code == 403
    assert post.status_code == 403
    assert not Affirmation.objects.exists()


# --- History --------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_charts_the_history_against_the_band(admin_client):
    check = make_check(
        "orders_exported",
        schedule="*/15 * * * *",
        tz="Europe/Helsinki",
        lookback=timedelta(minutes=20),
        min_count=1,
        max_count=4,
    )
    evaluate(check, NOW - timedelta(minutes=45), 2)
    evaluate(check, NOW - timedelta(minutes=30), 0)
    evaluate(check, NOW - timedelta(minutes=15), None)

    html = admin_client.get(f"{CHECKS}{check.pk}/change/").content.decode()

    chart = html.split('<svg class="portal-chart aff-chart"')[1].split("</svg>")[0]
    assert chart.count('class="aff-band"') == 3
    bars = re.findall(r'class="aff-bar aff-bar-(\w+)"[^>]*fill="(#\w+)"', chart)
    assert bars == [
        ("passed", "#2e7d32"),
        ("failed", "#c62828"),
        ("skipped", "#9e9e9e"),
    ]
    assert "<title>2026-03-10 13:45 EET: passed: 2 observed</title>" in chart
    # the table, newest first, in the check's zone
    table = html.split('<table class="aff-history">')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>([^<]+)</td>", table)
    assert rows == [
        "2026-03-10 14:15 EET",
        "2026-03-10 14:00 EET",
        "2026-03-10 13:45 EET",
    ]
    assert "<td>03-10 13:40 – 03-10 14:00</td><td>0</td>" in table
    assert '<td class="aff-result-failed">failed</td>' in table
    assert '<td class="aff-result-skipped">the checker was behind</td>' in table


def test_it_scales_the_band_and_the_bars_to_the_rule(admin_client):
    check = make_check(min_count=1, max_count=4)
    evaluate(check, NOW - timedelta(days=1), 2)

    html = admin_client.get(f"{CHECKS}{check.pk}/change/").content.decode()

    # 80 px high, counts 0..5 (one above the maximum): 15.6 px a count
    assert (
        '<rect class="aff-band" x="0.0" y="17.6" width="25.0" height="46.8"'
    ) in html
    assert '<rect class="aff-bar aff-bar-passed" x="1.0" y="48.8" width="23.0" ' in html


# --- Monitoring -----------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_monitors_for_viewers_failing_first_then_soonest_due(viewer_user):
    later = make_check("later", schedule="0 18 * * *", tz="UTC")
    sooner = make_check("sooner", schedule="0 13 * * *", tz="UTC")
    paused = make_check("paused_one", schedule="45 12 * * *", tz="UTC")
    paused.pause()
    failing = make_check("broken", schedule="0 23 * * *", tz="UTC")
    Check.objects.filter(pk=failing.pk).update(status=Check.Status.FAILING)
    evaluate(failing, NOW - timedelta(days=1), 0)

    response = logged_in(viewer_user).get(MONITOR)

    assert response.status_code == 200
    html = response.content.decode()
    order = re.findall(r'<tr data-check="([\w-]+)">', html)
    assert order == [failing.key, sooner.key, later.key, paused.key]
    assert '<meta http-equiv="refresh" content="30">' in html
    assert '<span class="aff-quiet">in 30 min</span>' in html
    assert 'data-status="failing">Failing</span>' in html
    assert "≥ 1 in 1 d" in html
    assert dot_kinds(html) == ["failed"]
    assert "<td>paused</td>" in html


def test_it_monitors_many_checks_in_bounded_queries(
    viewer_user, django_assert_max_num_queries
):
    for i in range(8):
        check = make_check(f"check_{i}")
        for days in range(1, 13):
            evaluate(check, NOW - timedelta(days=days), 1)
    client = logged_in(viewer_user)
    changelist = client.get(CHECKS).content.decode()

    # session, user, permissions, checks, their last results
    with django_assert_max_num_queries(6):
        response = client.get(MONITOR)

    assert len(response.context["rows"]) == 8
    assert len(dot_kinds(response.content.decode())) == 8 * 10
    assert f'<a href="{MONITOR}" class="aff-monitor-link">Monitor</a>' in changelist


def test_it_refuses_the_monitor_without_view_permission(django_user_model):
    user = django_user_model.objects.create_user(
        username="nobody", password="pw", is_staff=True
    )

    response = logged_in(user).get(MONITOR)

    assert response.status_code == 403


def test_it_sends_anonymous_users_to_log_in(client):
    response = client.get(MONITOR)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- Records --------------------------------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_it_lists_affirmations_read_only(admin_client, admin_user):
    Affirmation.objects.create(
        name="orders_exported",
        data="x" * 200,
        source=Affirmation.Source.SIGNOFF,
        user=admin_user,
        occurred_at=NOW,
        note="client time ignored",
    )

    response = admin_client.get(AFFIRMATIONS + "?source__exact=signoff&q=orders")
    change = admin_client.post(
        AFFIRMATIONS + f"{Affirmation.objects.get().pk}/change/", {"name": "edited"}
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1
    assert "x" * 79 + "…" in html
    assert "x" * 81 not in html
    assert "Sign-off" in html
    assert "client time ignored" in html
    assert change.status_code == 403  # a record: never edited
    assert Affirmation.objects.get().name == "orders_exported"


@time_machine.travel(NOW, tick=False)
def test_it_lists_evaluations_read_only(admin_client):
    check = make_check()
    evaluate(check, NOW - timedelta(hours=1), 0)
    evaluate(check, NOW - timedelta(hours=2), None)

    response = admin_client.get(EVALUATIONS)

    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-result="failed">Failed</span>' in html
    assert 'data-result="skipped">Skipped</span> the checker was behind' in html
    assert str(check) in html


def test_an_operator_adds_an_affirmation_by_hand_recorded_as_admin(
    client, operator_user
):
    client.force_login(operator_user)
    response = client.post(
        "/admin/affirmations/affirmation/add/",
        {"name": "manual_check_done", "data": "looked at the dashboards"},
    )
    assert response.status_code == 302
    stored = Affirmation.objects.get()
    assert (stored.name, stored.data) == (
        "manual_check_done",
        "looked at the dashboards",
    )
    assert stored.source == Affirmation.Source.ADMIN
    assert stored.user == operator_user


def test_a_viewer_cannot_add_affirmations(client, viewer_user):
    client.force_login(viewer_user)
    response = client.post("/admin/affirmations/affirmation/add/", {"name": "x"})
    assert response.status_code == 403
    assert not Affirmation.objects.exists()
