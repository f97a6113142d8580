"""Fuzz every operation of the served OpenAPI schema with schemathesis.

The schema is loaded from ``/api/schema/`` through the WSGI app when the module is
collected, so an endpoint that any app adds to the API joins the fuzz test by
itself, as one more ``test_it_conforms_to_the_schema[<METHOD> <path>]`` item.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.models import API_SCOPE_CHOICES
from portal.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

# The checks that are on; each one fails the case on:
# * not_a_server_error: any 5xx;
# * status_code_conformance: a status code the operation does not document (the
#   coverage phase's probes with undocumented methods, answered 405, are exempt);
# * content_type_conformance: a Content-Type the response does not document;
# * response_schema_conformance: a body that does not match the documented schema.
# Off: the checks that need state or expect a 2xx for any valid input, e.g.
# positive_data_acceptance (an unknown tick name is valid input and a 404).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

API_V1_OPERATIONS = {
    "GET /api/v1/whoami/",
    "GET /api/v1/ticks/",
    "GET /api/v1/ticks/{name}/",
    "POST /api/v1/ticks/{name}/run/",
    "POST /api/request/",
    "GET /api/v1/pipeline-runs/{run_id}/",
    "GET /api/v1/fleet/tasks/",
    "POST /api/v1/fleet/tasks/",
    "GET /api/v1/fleet/tasks/{task_id}/",
    "POST /api/v1/fleet/tasks/{task_id}/cancel/",
    "POST /api/v1/fleet/tasks/{task_id}/requeue/",
    "GET /api/v1/fleet/agents/",
    "GET /api/v1/fleet/agents/{id}/",
    "GET /api/v1/fleet/stats/",
    "POST /api/v1/affirmations/affirm/",
    "GET /api/v1/affirmations/checks/",
    "GET /api/v1/affirmations/checks/{key}/",
    "GET /api/v1/affirmations/checks/{key}/evaluations/",
    "GET /api/v1/affirmations/affirmations/",
}


@pytest.fixture
def keep_test_connection():
    """Calls through the WSGI app (not Django's test client) fire request_started
    and request_finished, whose close_old_connections() would close the test
    transaction's connection on PostgreSQL; the test client disconnects it too."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _pipelines_offline(settings, tmp_path):
    """Fuzzed git URLs clone nothing from the network: only local paths are allowed
    (a random path is no repository, a 400), into a throw-away folder."""
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    settings.PIPELINE_WORKSPACES_DIR = tmp_path / "workspaces"
    settings.PIPELINE_CLONE_TIMEOUT = 5


@pytest.fixture
def api_key_header(make_api_key, keep_test_connection) -> dict[str, str]:
    _, plaintext = make_api_key(*(scope for scope, _ in API_SCOPE_CHOICES))
    return {"X-Api-Key": plaintext}


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    # Same cases on every run; no example database replays old failures.
    derandomize=True,
    database=None,
    # One key and one test transaction serve all the examples of an operation.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_it_conforms_to_the_schema(case, api_key_header):
    # Negative cases included: a path that breaks its documented pattern matches no
    # route, and portal.views.page_not_found still answers JSON under /api/.
    response = case.call_and_validate(headers=api_key_header, checks=CHECKS)
    assert response.status_code < 500


def test_it_lists_the_api_operations():
    operations = {
        f"{operation.method.upper()} {operation.path}"
        for operation in (result.ok() for result in schema.get_all_operations())
    }
    # A subset: every app's endpoints join the schema, and so the fuzz test.
    assert API_V1_OPERATIONS <= operations


def test_it_serves_swagger_ui_from_local_static_files(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("/swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset
    assert not re.search(r"https?://|cdn\.", html)
