"""The packages API: list and read packages and runs, run now, cancel."""

from __future__ import annotations

from unittest import mock

import pytest
from django.utils import timezone

from packages_app.models import Package, PackageRun
from packages_app.serializers import LOG_TAIL_BYTES, RunInputSerializer


@pytest.fixture
def package(db, tmp_path) -> Package:
    return Package.objects.create(
        slug="churn",
        description="Churn model",
        directory=str(tmp_path),
        command=["{python}", "x.py"],
        timeout=60,
        parameters={"days": 7},
        secret_env=["CHURN_DB_PASSWORD"],
    )


@pytest.fixture
def reader(make_api_key) -> dict[str, str]:
    _, plaintext = make_api_key("packages:read", name="dashboards")
    return {"HTTP_X_API_KEY": plaintext}


@pytest.fixture
def writer(make_api_key) -> dict[str, str]:
    _, plaintext = make_api_key("packages:write", name="nightly-ci")
    return {"HTTP_X_API_KEY": plaintext}


def make_run(package: Package, **fields) -> PackageRun:
    values = {"trigger": PackageRun.Trigger.ADMIN, "timeout": 60, **fields}
    return PackageRun.objects.create(package=package, **values)


def test_it_lists_packages_with_their_last_run(api_client, reader, package):
    make_run(package, status=PackageRun.Status.FAILED)
    last = make_run(package, status=PackageRun.Status.SUCCEEDED)
    PackageRun.objects.filter(pk=last.pk).update(finished_at=timezone.now())
    response = api_client.get("/api/v1/packages/", **reader)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    item = body["results"][0]
    assert item["slug"] == "churn"
    assert item["parameters"] == {"days": 7}
    assert item["last_run"]["id"] == last.pk
    assert item["last_run"]["status"] == "succeeded"
    assert item["last_run"]["finished_at"] is not None
    # the command, environment and secret references stay in the admin
    assert "CHURN_DB_PASSWORD" not in response.content.decode()
    assert "command" not in item


def test_it_shows_one_package(api_client, reader, package):
    response = api_client.get("/api/v1/packages/churn/", **reader)
    assert response.status_code == 200
    assert response.json()["description"] == "Churn model"
    assert response.json()["timeout"] == 60
    assert response.json()["last_run"] is None


def test_it_404s_an_unknown_package(api_client, reader, package):
    response = api_client.get("/api/v1/packages/nope/", **reader)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_it_404s_a_run_of_an_unknown_package(api_client, writer, package):
    response = api_client.post(
        "/api/v1/packages/nope/run/", {}, format="json", **writer
    )
    assert response.status_code == 404
    assert not PackageRun.objects.exists()


@mock.patch("django_q.tasks.async_task", autospec=True)
def test_it_queues_a_run(
    async_task, api_client, writer, package, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            "/api/v1/packages/churn/run/",
            {"parameters": {"days": 30}, "timeout": 120, "notify": False},
            format="json",
            **writer,
        )
    assert response.status_code == 202
    run = PackageRun.objects.get()
    assert response.json()["id"] == run.pk
    assert response.json()["status"] == "queued"
    assert run.status == PackageRun.Status.QUEUED
    assert run.trigger == PackageRun.Trigger.API
    assert run.triggered_by == "nightly-ci"
    assert run.parameters == {"days": 30}
    assert run.timeout == 120 and run.notify is False
    async_task.assert_called_once()
    assert async_task.call_args.args == ("packages_app.tasks.execute_run", run.pk)


def test_a_read_only_key_cannot_run(api_client, reader, package):
    response = api_client.post(
        "/api/v1/packages/churn/run/", {}, format="json", **reader
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "This API key lacks the 'packages:write' scope."
    assert not PackageRun.objects.exists()


def test_it_rejects_parameters_that_are_not_an_object(api_client, writer, package):
    response = api_client.post(
        "/api/v1/packages/churn/run/",
        {"parameters": ["days", 7]},
        format="json",
        **writer,
    )
    assert response.status_code == 400
    assert list(response.json()) == ["parameters"]
    assert not PackageRun.objects.exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"parameters": {"note": "a\x00b"}}, "parameters"),
        ({"parameters": {"nested": [{"k\x00": 1}]}}, "parameters"),
    ],
)
def test_run_input_names_the_bad_field(data, field):
    serializer = RunInputSerializer(data=data)
    assert not serializer.is_valid()
    assert list(serializer.errors) == [field]


def test_it_refuses_to_run_a_disabled_package(api_client, writer, package):
    package.enabled = False
    package.save()
    response = api_client.post(
        "/api/v1/packages/churn/run/", {}, format="json", **writer
    )
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Package churn is disabled.",
        "code": "disabled",
    }
    assert not PackageRun.objects.exists()


def test_it_lists_runs_filtered_by_package_and_status(api_client, reader, package):
    other = Package.objects.create(
        slug="scoring", directory=package.directory, command=["x"], timeout=60
    )
    failed = make_run(package, status=PackageRun.Status.FAILED)
    make_run(package, status=PackageRun.Status.SUCCEEDED)
    make_run(other, status=PackageRun.Status.FAILED)
    response = api_client.get(
        "/api/v1/package-runs/?package=churn&status=failed", **reader
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [failed.pk]
    assert response.json()["results"][0]["package"] == "churn"
    response = api_client.get("/api/v1/package-runs/?status=nope", **reader)
    assert response.status_code == 400
    assert list(response.json()) == ["status"]


def test_run_detail_shows_the_end_of_the_log_file(
    api_client, reader, package, tmp_path
):
    log = tmp_path / "output.log"
    log.write_bytes(b"x" * (2 * LOG_TAIL_BYTES) + b"\nscored 42 customers\n")
    run = make_run(
        package,
        status=PackageRun.Status.RUNNING,
        log_path=str(log),
        log_tail="stale tail from the last heartbeat",
        output_bytes=100,
    )
    response = api_client.get(f"/api/v1/package-runs/{run.pk}/", **reader)
    assert response.status_code == 200
    # the file's end, from a whole line, not the stale heartbeat copy
    assert response.json()["log_tail"] == "scored 42 customers\n"


def test_run_detail_falls_back_to_the_stored_tail(
    api_client, reader, package, tmp_path
):
    run = make_run(
        package,
        status=PackageRun.Status.SUCCEEDED,
        log_path=str(tmp_path / "on-another-host.log"),
        log_tail="done\n",
    )
    response = api_client.get(f"/api/v1/package-runs/{run.pk}/", **reader)
    assert response.status_code == 200
    assert response.json()["log_tail"] == "done\n"


def test_it_cancels_a_queued_run(api_client, writer, package):
    run = make_run(package)
    response = api_client.post(f"/api/v1/package-runs/{run.pk}/cancel/", **writer)
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == PackageRun.Status.CANCELLED
    assert run.finished_at is not None


def test_it_asks_a_running_run_to_stop(api_client, writer, package):
    run = make_run(package, status=PackageRun.Status.RUNNING)
    response = api_client.post(f"/api/v1/package-runs/{run.pk}/cancel/", **writer)
    assert response.status_code == 202
    # the runner kills it and records CANCELLED; until then it is running
    assert response.json()["status"] == "running"
    run.refresh_from_db()
    assert run.cancel_requested_at is not None


def test_it_refuses_to_cancel_a_finished_run(api_client, writer, package):
    run = make_run(package, status=PackageRun.Status.SUCCEEDED)
    response = api_client.post(f"/api/v1/package-runs/{run.pk}/cancel/", **writer)
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Run #{run.pk} has already ended (succeeded)."
    }
    run.refresh_from_db()
    assert run.status == PackageRun.Status.SUCCEEDED


def test_a_viewer_can_read_but_not_run(api_client, viewer_user, package):
    run = make_run(package)
    api_client.force_login(viewer_user)
    assert api_client.get("/api/v1/packages/churn/").status_code == 200
    assert api_client.get(f"/api/v1/package-runs/{run.pk}/").status_code == 200
    response = api_client.post("/api/v1/packages/churn/run/", {}, format="json")
    assert response.status_code == 403
    response = api_client.post(f"/api/v1/package-runs/{run.pk}/cancel/")
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == PackageRun.Status.QUEUED
    assert PackageRun.objects.count() == 1


@mock.patch("django_q.tasks.async_task", autospec=True)
def test_an_operator_session_runs_under_its_username(
    async_task, api_client, operator_user, package
):
    api_client.force_login(operator_user)
    response = api_client.post("/api/v1/packages/churn/run/", {}, format="json")
    assert response.status_code == 202
    assert PackageRun.objects.get().triggered_by == "olivia"
