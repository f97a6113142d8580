"""``POST /api/request`` and the pipeline runs API, against a real git daemon.

The request clones and parses in the request (so a bad repository is a 400 that
runs nothing), records the run and queues it; execution is tested in
test_pipelines.py, so here the queued task is captured, not run — except in the
end-to-end case, which runs it the way a worker does.
"""

from __future__ import annotations

import json
import uuid

import pytest

from packages_app import tasks
from packages_app.models import PipelineRun
from tests.fixtures.gitdaemon import make_repo

pytestmark = pytest.mark.django_db

HELLO = """\
pipelines:
  steps:
    - step:
        name: Hello World With Bash
        image: localhost/busybox
        script:
          - echo Hello World
"""


@pytest.fixture(autouse=True)
def _pipeline_settings(settings, tmp_path):
    settings.PIPELINE_WORKSPACES_DIR = tmp_path / "workspaces"
    settings.PIPELINE_GIT_SCHEMES = ["git"]
    settings.PIPELINE_OPEN_REQUEST = False
    settings.PIPELINE_EXECUTOR = "local"


@pytest.fixture
def served(git_daemon, tmp_path):
    """A repository served by the daemon under ``owner/<name>.git``; its URL."""
    count = iter(range(100))

    def make(files: dict[str, str], **kwargs) -> str:
        name = f"fxquants/{tmp_path.name}-{next(count)}.git"
        make_repo(git_daemon.base / name, files, **kwargs)
        return git_daemon.url(name)

    return make


@pytest.fixture
def client(api_client, make_api_key):
    _, key = make_api_key("pipelines:write")
    api_client.credentials(HTTP_X_API_KEY=key)
    return api_client


def post(client, body, path="/api/request"):
    return client.post(path, json.dumps(body), content_type="application/json")


def test_request_answers_the_run_json_and_queues_it(
    client, served, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda *args, **kw: queued.append(args)
    )
    url = served({"fxq-pipeline.yml": HELLO})
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, {"url": url})
    assert response.status_code == 200, response.content
    body = response.json()
    run = PipelineRun.objects.get()
    assert uuid.UUID(body["run_id"]).version == 4 and body["run_id"] == str(run.uuid)
    assert body["name"].startswith("fxquants-") and body["status"] == "PENDING"
    assert body["commit_changes"] is False
    (step,) = body["steps"]
    assert step["step_no"] == 1 and step["name"] == "Hello World With Bash"
    assert step["image"] == "localhost/busybox:latest" and step["status"] == "PENDING"
    assert step["run_id"] == body["run_id"] and uuid.UUID(step["step_id"])
    (command,) = step["script"]
    assert command["cmd_no"] == 1 and command["instruction"] == "echo Hello World"
    assert command["output"] == [] and command["step_id"] == step["step_id"]
    assert queued == [("packages_app.tasks.execute_pipeline", run.pk)]
    assert run.commit and run.trigger == "api" and run.triggered_by == "test key"


def test_end_to_end_with_the_worker_task(client, served, settings):
    url = served({"fxq-pipeline.yml": HELLO})
    run_id = post(client, {"url": url, "ref": "main"}).json()["run_id"]
    # What the worker does with the queued task.
    assert (
        tasks.execute_pipeline(PipelineRun.objects.get(uuid=run_id).pk) == "SUCCESSFUL"
    )
    body = client.get(f"/api/request/{run_id}").json()
    assert body["status"] == "SUCCESSFUL" and body["executor"] == "local"
    assert body["steps"][0]["script"][0]["output"] == ["Hello World\n"]
    assert body["steps"][0]["script"][0]["exit_code"] == 0
    # The same run in the versioned API, and in its list.
    v1 = client.get(f"/api/v1/pipeline-runs/{run_id}/").json()
    assert v1["steps"] == body["steps"]
    listed = client.get("/api/v1/pipeline-runs/?status=SUCCESSFUL").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["run_id"] for row in rows] == [run_id]


def test_trailing_slash_and_v1_create(client, served):
    url = served({"fxq-pipeline.yml": HELLO})
    assert post(client, {"url": url}, "/api/request/").status_code == 200
    created = post(client, {"url": url}, "/api/v1/pipeline-runs/")
    assert created.status_code == 201 and created.json()["status"] == "PENDING"


@pytest.mark.parametrize(
    ("files", "field", "words"),
    [
        ({"README": "no pipeline"}, "pipeline", ["No fxq-pipeline.yml"]),
        ({"fxq-pipeline.yml": "pipelines:\n  steps: [\n"}, "pipeline", ["line"]),
        (
            {"fxq-pipeline.yml": HELLO.replace("script:", "scirpt:")},
            "pipeline",
            ["step 1", '"scirpt"', 'did you mean "script"'],
        ),
        (
            {
                "fxq-pipeline.yml": HELLO.replace(
                    "        image: localhost/busybox\n", ""
                )
            },
            "pipeline",
            ["step 1", "image"],
        ),
    ],
    ids=["missing-file", "invalid-yaml", "unknown-key", "missing-image"],
)
def test_a_bad_pipeline_file_is_a_400_and_the_run_is_recorded(
    client, served, files, field, words, settings
):
    response = post(client, {"url": served(files)})
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field
    for word in words:
        assert word in body["error"]
    run = PipelineRun.objects.get(uuid=body["run_id"])
    assert run.status == "FAILED" and run.error == body["error"]
    assert not run.steps.exists()
    assert not (settings.PIPELINE_WORKSPACES_DIR / str(run.uuid)).exists()


def test_invalid_yaml_names_the_line(client, served):
    text = HELLO + "    - step:\n        name: [unclosed\n"
    body = post(client, {"url": served({"fxq-pipeline.yml": text})}).json()
    assert "line 9" in body["error"] or "line 10" in body["error"]


def test_unknown_ref_and_unreachable_repository(client, served, git_daemon):
    url = served({"fxq-pipeline.yml": HELLO})
    body = post(client, {"url": url, "ref": "no-such-branch"}).json()
    assert body["field"] == "ref" and "no-such-branch" in body["error"]
    missing = post(client, {"url": git_daemon.url("fxquants/absent.git")})
    assert missing.status_code == 400 and missing.json()["field"] == "url"
    assert PipelineRun.objects.filter(status="FAILED").count() == 2


@pytest.mark.parametrize(
    "url",
    [
        "-uhelp",
        "--upload-pack=touch /tmp/pwned",
        "ext::sh -c touch% /tmp/pwned",
        "file:///tmp/repo",
        "/tmp/repo",
        "http://example.com/a/b.git",
        "",
    ],
)
def test_refused_urls_are_a_400_naming_the_field(client, url):
    response = post(client, {"url": url})
    assert response.status_code == 400
    assert "url" in response.json()
    assert not PipelineRun.objects.exists()


def test_credentials_in_the_url_are_never_stored(client, caplog):
    response = post(
        client, {"url": "git://127.0.0.1:9/x/y.git"}
    )  # port 9 (discard) refuses: a clone failure, recorded
    assert response.status_code == 400
    # An https URL with a token: allowed scheme for this test, closed port.
    from django.test import override_settings

    with override_settings(PIPELINE_GIT_SCHEMES=["https"]):
        response = post(
            client, {"url": "https://user:t0ken-s3cret@127.0.0.1:9/o/r.git"}
        )
    assert response.status_code == 400
    run = PipelineRun.objects.get(uuid=response.json()["run_id"])
    assert "t0ken-s3cret" not in run.url + run.error + response.content.decode()
    assert run.url == "https://127.0.0.1:9/o/r.git"
    assert "t0ken-s3cret" not in caplog.text


def test_body_errors_name_the_field(client):
    assert "url" in post(client, {}).json()
    bad_env = post(client, {"url": "git://h/o/r.git", "environment": {"1BAD": "x"}})
    assert bad_env.status_code == 400 and "environment" in bad_env.json()
    bad_cb = post(client, {"url": "git://h/o/r.git", "callback_url": "not a url"})
    assert bad_cb.status_code == 400 and "callback_url" in bad_cb.json()
    not_json = client.post("/api/request", "{", content_type="application/json")
    assert not_json.status_code == 400
    assert not PipelineRun.objects.exists()


def test_auth_scope_and_the_open_setting(api_client, make_api_key, served, settings):
    url = served({"fxq-pipeline.yml": HELLO})
    assert post(api_client, {"url": url}).status_code in (401, 403)
    _, read_only = make_api_key("pipelines:read")
    api_client.credentials(HTTP_X_API_KEY=read_only)
    assert post(api_client, {"url": url}).status_code == 403
    api_client.credentials()
    settings.PIPELINE_OPEN_REQUEST = True
    response = post(api_client, {"url": url})
    assert response.status_code == 200
    run = PipelineRun.objects.get(uuid=response.json()["run_id"])
    assert run.triggered_by == "anonymous"


def test_cancel_endpoint(client, served):
    url = served({"fxq-pipeline.yml": HELLO})
    run_id = post(client, {"url": url}).json()["run_id"]
    response = client.post(f"/api/request/{run_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "STOPPED"
    assert response.json()["steps"][0]["status"] == "ABORTED"
    again = client.post(f"/api/v1/pipeline-runs/{run_id}/cancel/")
    assert again.status_code == 409
    assert client.get(f"/api/request/{uuid.uuid4()}").status_code == 404


def test_rerun_clones_the_same_commit_again(client, served):
    url = served({"fxq-pipeline.yml": HELLO})
    first = PipelineRun.objects.get(uuid=post(client, {"url": url}).json()["run_id"])
    response = client.post(f"/api/v1/pipeline-runs/{first.uuid}/rerun/")
    assert response.status_code == 201
    second = PipelineRun.objects.get(uuid=response.json()["run_id"])
    assert second.rerun_of == first and second.ref == first.commit
    assert second.commit == first.commit and second.trigger == "rerun"


def test_a_pipeline_timeout_over_the_workers_limit_is_refused(client, served, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "retry": 1000}
    text = HELLO.replace("  steps:", "  timeout: 5000\n  steps:")
    body = post(client, {"url": served({"fxq-pipeline.yml": text})}).json()
    assert body["field"] == "pipeline" and "workers' limit" in body["error"]
