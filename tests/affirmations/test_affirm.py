"""Affirming: bounded data, client time within the skew, batches all or nothing,
retention, and the checker command."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from affirmations import services
from affirmations.models import MAX_DATA_LENGTH, TRUNCATED_MARK, Affirmation, Evaluation
from tests.affirmations.test_evaluation import T, make_check

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
API = Affirmation.Source.API


@time_machine.travel(NOW, tick=False)
def test_it_records_an_affirmation_with_the_servers_time():
    affirmation = services.affirm(name="backup_done", data="ok", source=API)
    affirmation.refresh_from_db()
    assert (affirmation.name, affirmation.data) == ("backup_done", "ok")
    assert affirmation.occurred_at == affirmation.received_at == NOW
    assert affirmation.truncated is False


@time_machine.travel(NOW, tick=False)
def test_long_data_is_cut_and_marked():
    affirmation = services.affirm(name="x", data="a" * 50_000, source=API)
    assert len(affirmation.data) == MAX_DATA_LENGTH
    assert affirmation.data.endswith(TRUNCATED_MARK)
    assert affirmation.truncated is True


@time_machine.travel(NOW, tick=False)
def test_a_client_time_within_the_skew_is_kept():
    sent = NOW - timedelta(seconds=90)
    affirmation = services.affirm(name="x", source=API, client_time=sent)
    assert affirmation.occurred_at == sent
    assert affirmation.client_time == sent
    assert affirmation.note == ""


@time_machine.travel(NOW, tick=False)
def test_a_client_time_too_far_off_is_ignored_and_noted(settings):
    settings.AFFIRMATIONS_MAX_CLOCK_SKEW = 300
    sent = NOW - timedelta(hours=3)
    affirmation = services.affirm(name="x", source=API, client_time=sent)
    assert affirmation.occurred_at == NOW
    assert affirmation.client_time == sent
    assert "ignored" in affirmation.note


@pytest.mark.parametrize("name", ["", "   ", " padded", "a" * 201, "new\nline"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValidationError) as caught:
        services.affirm(name=name, source=API)
    assert "name" in caught.value.message_dict
    assert not Affirmation.objects.exists()


def test_a_batch_is_all_or_nothing_and_names_the_bad_item():
    events = [{"name": "a"}, {"name": "b", "data": "x"}, {"name": ""}, {"name": "d"}]
    with pytest.raises(ValidationError) as caught:
        services.affirm_batch(events=events, source=API)
    assert caught.value.message_dict["events"][0].startswith("item 2: name:")
    assert not Affirmation.objects.exists()

    stored = services.affirm_batch(events=events[:2], source=API)
    assert [Affirmation.objects.get(pk=pk).name for pk in stored] == ["a", "b"]
    assert Affirmation.objects.count() == 2


def test_signoff_records_the_user(admin_user):
    check = make_check()
    affirmation = services.check_signoff(check=check, user=admin_user)
    affirmation.refresh_from_db()
    assert affirmation.source == Affirmation.Source.SIGNOFF
    assert affirmation.user == admin_user
    assert affirmation.name == check.name


def test_retention_deletes_old_affirmations_and_evaluations_in_batches(
    settings, monkeypatch
):
    settings.AFFIRMATIONS_RETENTION_DAYS = 90
    settings.AFFIRMATIONS_EVALUATION_RETENTION_DAYS = 400
    monkeypatch.setattr(services, "PRUNE_BATCH", 3)
    check = make_check()
    for days in (100, 95, 91, 89, 10):
        Affirmation.objects.create(
            name="x",
            source=API,
            occurred_at=NOW - timedelta(days=days),
            received_at=NOW - timedelta(days=days),
        )
    for days in (500, 401, 399):
        Evaluation.objects.create(
            owner=check,
            occurrence=NOW - timedelta(days=days),
            window_start=NOW - timedelta(days=days, minutes=20),
            window_end=NOW - timedelta(days=days),
            evaluated_at=NOW - timedelta(days=days),
        )

    with time_machine.travel(NOW, tick=False):
        result = services.prune()

    assert result == {"affirmations": 3, "evaluations": 2}
    assert Affirmation.objects.count() == 2
    assert Evaluation.objects.count() == 1


def test_the_command_runs_one_pass():
    check = make_check()
    out = io.StringIO()
    with time_machine.travel(T + timedelta(minutes=5), tick=False):
        call_command("check_affirmations", stdout=out)
    assert "1 evaluated" in out.getvalue()
    assert Evaluation.objects.filter(owner=check).count() == 1


def test_the_command_refuses_a_bad_interval():
    with pytest.raises(CommandError, match="--interval"):
        call_command("check_affirmations", "--loop", "--interval", "0")


def test_nul_characters_in_data_are_refused_naming_the_field():
    with pytest.raises(ValidationError) as caught:
        services.affirm(name="x", data="a\x00b", source=API)
    assert "data" in caught.value.message_dict
    assert not Affirmation.objects.exists()
