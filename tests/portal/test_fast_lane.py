"""portal.middleware.FastLane: views marked @fast_lane answer POSTs without the
browser middleware; everything else takes the usual path."""

from __future__ import annotations

import pytest

from fleet import views as fleet_views
from portal.middleware import FAST_LANE_ATTRIBUTE
from tests.fleet.conftest import poll_body

pytestmark = pytest.mark.django_db

STORE = '{"events": [{"name": "lane", "data": "ok"}]}'


def _fast(response) -> bool:
    # The view answered by itself: the lane's header, none of the stack's.
    return (
        response["X-Content-Type-Options"] == "nosniff"
        and "X-Frame-Options" not in response
        and "Cookie" not in response.get("Vary", "")
    )


@pytest.mark.parametrize(
    "path", ["/fleet/tasks", "/fleet/tasks/", "/fleet/tasks/response"]
)
def test_agent_posts_take_the_fast_lane(client, path):
    response = client.post(path, poll_body(), content_type="application/json")
    assert response.json()  # 200 or the view's own JSON 400
    assert _fast(response)


@pytest.mark.parametrize("path", ["/affirmative/store", "/affirmative/store/"])
def test_the_affirmations_store_takes_the_fast_lane(client, settings, path):
    settings.AFFIRMATIONS_OPEN_COMPAT = True
    response = client.post(path, STORE, content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"stored": 1}
    assert _fast(response)


def test_the_keyed_store_and_simplest_take_the_fast_lane(client, make_api_key):
    _, key = make_api_key("affirmations:write")
    stored = client.post(
        f"/k/{key}/affirmative/store", STORE, content_type="application/json"
    )
    assert stored.status_code == 200
    assert _fast(stored)
    simplest = client.post(f"/k/{key}/affirmative/simplest", {"event_name": "lane"})
    assert simplest.status_code == 200
    assert _fast(simplest)


def test_a_session_is_neither_read_nor_written_in_the_lane(admin_client, settings):
    settings.AFFIRMATIONS_OPEN_COMPAT = True
    response = admin_client.post(
        "/affirmative/store", STORE, content_type="application/json"
    )
    assert response.status_code == 200
    assert not response.cookies  # no session refresh, no CSRF cookie
    assert _fast(response)


def test_other_requests_take_the_usual_path(client, admin_client):
    # GETs of a fast-lane route, other protocol views, the admin: full stack.
    assert "X-Frame-Options" in client.get("/fleet/tasks")
    assert "X-Frame-Options" in client.get("/fleet/status")
    assert "X-Frame-Options" in admin_client.get("/admin/")
    # CSRF still guards the admin's POSTs.
    from django.test import Client

    strict = Client(enforce_csrf_checks=True, SERVER_NAME="127.0.0.1")
    assert strict.post("/admin/login/", {"username": "x"}).status_code == 403
    # An unknown path is the usual JSON/HTML 404, not an error in the lane.
    assert client.post("/fleet/nowhere", "{}", content_type="application/json")[
        "X-Frame-Options"
    ]


def test_only_machine_views_are_marked():
    marked = {
        name
        for name in dir(fleet_views)
        if getattr(getattr(fleet_views, name), FAST_LANE_ATTRIBUTE, False)
    }
    assert marked == {"poll", "task_response"}


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_the_api_affirm_takes_the_lane_only_with_an_api_key(
    client, admin_client, make_api_key, header
):
    _, key = make_api_key("affirmations:write")
    value = key if header == "HTTP_X_API_KEY" else f"Token {key}"
    body = '{"events": [{"name": "lane"}, {"name": "lane", "data": "2"}]}'
    keyed = client.post(
        "/api/v1/affirmations/affirm/",
        body,
        content_type="application/json",
        **{header: value},
    )
    assert keyed.status_code == 201, keyed.content
    assert keyed.json()["stored"] == 2
    assert _fast(keyed)
    # A bad key is the API's own 401, in the lane too.
    refused = client.post(
        "/api/v1/affirmations/affirm/",
        body,
        content_type="application/json",
        HTTP_X_API_KEY="opk_" + "x" * 43,
    )
    assert refused.status_code == 401
    # An admin session: the usual path, sessions and CSRF included.
    session = admin_client.post(
        "/api/v1/affirmations/affirm/", body, content_type="application/json"
    )
    assert session.status_code == 201
    assert "X-Frame-Options" in session
