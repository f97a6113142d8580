"""Emails about runs: ApMan's subjects, the last lines only, recovered, no floods."""

from __future__ import annotations

from packages_app import services
from packages_app.models import PackageRun

RECIPIENTS = ["ops@example.com", "quant@example.com"]


def run_now(package, **kwargs) -> PackageRun:
    return services.run_execute(
        services.run_create(package=package, trigger="cli", **kwargs)
    )


FAILING = """
for i in range(200):
    print(f"line {i}")
raise SystemExit(2)
"""


def test_failure_email_has_the_status_code_and_last_50_lines(make_package, mailoutbox):
    package = make_package(
        FAILING, recipients=RECIPIENTS, parameters={"api_token": "t0k", "days": 3}
    )
    run = run_now(package)
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.subject == "[Ops Portal] Package (churn) - Failed [Error]"
    assert message.to == RECIPIENTS
    body = message.body
    assert "Exit code:  2" in body
    assert "line 199" in body and "line 150" in body
    assert "line 149" not in body  # the last 50 lines, never the whole log
    assert "api_token=••••••" in body and "t0k" not in body
    assert "days=3" in body
    assert f"/admin/packages_app/packagerun/{run.pk}/change/" in body
    html = message.alternatives[0][0]
    assert "Failed [Error]" in html and "line 199" in html and "t0k" not in html
    run.refresh_from_db()
    assert run.email == PackageRun.Email.SENT


def test_timeout_email(make_package, mailoutbox):
    package = make_package(
        "import time; time.sleep(30)", recipients=RECIPIENTS, timeout=1
    )
    run_now(package)
    assert mailoutbox[0].subject == "[Ops Portal] Package (churn) - Failed [Timeout]"
    assert "Timed out after 1 s" in mailoutbox[0].body


def test_success_is_mailed_only_when_asked(make_package, mailoutbox):
    quiet = make_package("print('ok')", slug="quiet", recipients=RECIPIENTS)
    run_now(quiet)
    assert mailoutbox == []
    loud = make_package(
        "print('ok')", slug="loud", recipients=RECIPIENTS, notify_success=True
    )
    run_now(loud)
    assert [m.subject for m in mailoutbox] == ["[Ops Portal] Package (loud) - Success"]


def test_a_success_after_failures_is_mailed_as_recovered(
    make_package, mailoutbox, package_dir
):
    package = make_package("raise SystemExit(1)", recipients=RECIPIENTS)
    run_now(package)
    (package_dir / "churn.py").write_text("print('fixed')")
    run_now(package)
    assert [m.subject for m in mailoutbox] == [
        "[Ops Portal] Package (churn) - Failed [Error]",
        "[Ops Portal] Package (churn) - Recovered",
    ]
    assert "it failed before" in mailoutbox[1].body


def test_repeated_failures_within_the_window_send_one_email(
    make_package, mailoutbox, settings, time_machine
):
    settings.PACKAGES_NOTIFY_WINDOW = 3600
    time_machine.move_to("2026-11-22 10:00:00Z")
    package = make_package("raise SystemExit(1)", recipients=RECIPIENTS)
    for _ in range(3):
        run_now(package)
    assert len(mailoutbox) == 1
    assert PackageRun.objects.filter(email="suppressed").count() == 2
    time_machine.move_to("2026-11-22 11:30:00Z")
    run_now(package)
    assert len(mailoutbox) == 2
    assert "2 more failure emails of this package were held back" in mailoutbox[1].body


def test_no_email_without_recipients_or_with_no_notify(make_package, mailoutbox):
    run_now(make_package("raise SystemExit(1)", slug="nobody"))
    run_now(
        make_package("raise SystemExit(1)", slug="muted", recipients=RECIPIENTS),
        notify=False,
    )
    assert mailoutbox == []
