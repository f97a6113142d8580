"""API keys: stored hashed, shown once, revocable, limited to their scopes."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from portal import services
from portal.models import ApiKey


def test_it_stores_only_the_hash(make_api_key):
    key, plaintext = make_api_key("fleet:read")
    key.refresh_from_db()
    assert plaintext.startswith("opk_") and len(plaintext) == 47
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in {key.prefix, key.key_hash, key.name}
    assert plaintext.startswith(key.prefix)


@pytest.mark.parametrize("header", ["HTTP_AUTHORIZATION", "HTTP_X_API_KEY"])
def test_it_authenticates_with_either_header(api_client, make_api_key, header):
    key, plaintext = make_api_key("portal:read", name="ci")
    value = f"Token {plaintext}" if header == "HTTP_AUTHORIZATION" else plaintext
    response = api_client.get("/api/v1/whoami/", **{header: value})
    assert response.status_code == 200
    assert response.json()["authenticated_by"] == "api_key"
    assert response.json()["key_name"] == "ci"
    assert response.json()["scopes"] == ["portal:read"]
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_it_rejects_unknown_and_malformed_keys(api_client, make_api_key):
    _, plaintext = make_api_key("portal:read")
    wrong = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    for value in (wrong, "short", "Token a b"):
        response = api_client.get("/api/v1/whoami/", HTTP_X_API_KEY=value)
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid API key."}
    assert api_client.get("/api/v1/whoami/").status_code == 401
    response = api_client.get("/api/v1/whoami/", HTTP_AUTHORIZATION="Token a b")
    assert response.status_code == 401
    assert "expected 'Token <key>'" in response.json()["detail"]


def test_it_refuses_a_revoked_key(api_client, make_api_key):
    key, plaintext = make_api_key("portal:read")
    assert key.revoke() is True
    assert key.revoke() is False
    response = api_client.get("/api/v1/whoami/", HTTP_X_API_KEY=plaintext)
    assert response.status_code == 401
    assert response.json()["detail"] == "This API key has been revoked."


def test_it_refuses_a_key_whose_owner_is_inactive(api_client, make_api_key, admin_user):
    _, plaintext = make_api_key("portal:read")
    admin_user.is_active = False
    admin_user.save()
    response = api_client.get("/api/v1/whoami/", HTTP_X_API_KEY=plaintext)
    assert response.status_code == 401


def test_scopes_limit_reading_and_writing(api_client, make_api_key):
    _, none = make_api_key()
    _, read = make_api_key("portal:read")
    _, write = make_api_key("portal:write")
    _, other = make_api_key("fleet:write")
    assert api_client.get("/api/v1/ticks/", HTTP_X_API_KEY=none).status_code == 403
    assert api_client.get("/api/v1/ticks/", HTTP_X_API_KEY=other).status_code == 403
    assert api_client.get("/api/v1/ticks/", HTTP_X_API_KEY=read).status_code == 200
    # write implies read
    assert api_client.get("/api/v1/ticks/", HTTP_X_API_KEY=write).status_code == 200
    url = "/api/v1/ticks/portal.prune_task_history/run/"
    response = api_client.post(url, HTTP_X_API_KEY=read)
    assert response.status_code == 403
    assert response.json()["detail"] == "This API key lacks the 'portal:write' scope."
    response = api_client.post(url, HTTP_X_API_KEY=write)
    assert response.status_code == 202
    assert response.json()["name"] == "portal.prune_task_history"


def test_it_writes_last_used_at_most_once_a_minute(make_api_key, time_machine):
    time_machine.move_to("2026-11-22 10:00:00Z", tick=False)
    key, _ = make_api_key()
    key.touch()
    first = key.last_used_at
    time_machine.move_to("2026-11-22 10:00:30Z", tick=False)
    key.touch()
    key.refresh_from_db()
    assert key.last_used_at == first
    time_machine.move_to("2026-11-22 10:01:01Z", tick=False)
    key.touch()
    key.refresh_from_db()
    assert key.last_used_at == timezone.now()


def test_service_rejects_unknown_scopes(db):
    with pytest.raises(Exception) as excinfo:
        services.api_key_create(name="x", scopes=["fleet:admin"])
    assert "Unknown scope(s): fleet:admin." in str(excinfo.value)
    assert ApiKey.objects.count() == 0


def test_admin_shows_the_key_once(admin_client):
    response = admin_client.post(
        "/admin/portal/apikey/add/",
        {"name": "nightly", "scopes": ["packages:write", "fleet:read"]},
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(name="nightly")
    plaintext = response.context["plaintext"]
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext in response.content.decode()
    assert key.scopes == ["fleet:read", "packages:write"]
    # Never again: neither the change page nor the list shows it.
    change = admin_client.get(f"/admin/portal/apikey/{key.pk}/change/").content.decode()
    listing = admin_client.get("/admin/portal/apikey/").content.decode()
    assert plaintext not in change and plaintext not in listing
    assert key.prefix in listing


def test_admin_rejects_unknown_scopes_with_a_form_error(admin_client):
    response = admin_client.post(
        "/admin/portal/apikey/add/", {"name": "bad", "scopes": ["fleet:admin"]}
    )
    assert response.status_code == 200
    assert (
        "fleet:admin is not one of the available choices" in response.content.decode()
    )
    assert not ApiKey.objects.exists()


def test_admin_action_revokes_keys(admin_client, make_api_key):
    key, _ = make_api_key("fleet:read")
    response = admin_client.post(
        "/admin/portal/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "Revoked 1 API key(s)." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_command_prints_the_key_once(db, admin_user):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key",
        "ci",
        "--scope",
        "fleet:read",
        "--user",
        admin_user.username,
        stdout=out,
        stderr=err,
    )
    plaintext = out.getvalue().strip()
    key = ApiKey.objects.get(name="ci")
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert key.created_by == admin_user
    assert "cannot be shown again" in err.getvalue()


def test_command_rejects_bad_scopes_with_one_line(db):
    with pytest.raises(CommandError, match=r"^Unknown scope\(s\): nope\.$"):
        call_command(
            "create_api_key",
            "ci",
            "--scope",
            "nope",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )


def test_a_key_without_an_owner_still_works(api_client, db):
    _, plaintext = services.api_key_create(name="orphan", scopes=["portal:read"])
    response = api_client.get("/api/v1/whoami/", HTTP_X_API_KEY=plaintext)
    assert response.status_code == 200
    assert response.json()["username"] is None
    assert api_client.get("/api/v1/ticks/", HTTP_X_API_KEY=plaintext).status_code == 200


def _key_queries(queries) -> int:
    return sum('FROM "portal_apikey"' in q["sql"] for q in queries)


@pytest.mark.django_db
def test_a_process_reuses_a_key_it_looked_up_for_a_few_seconds(
    api_client, make_api_key, settings, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import portal.models

    settings.API_KEY_CACHE_SECONDS = 10
    clock = [1000.0]
    monkeypatch.setattr(portal.models.time, "monotonic", lambda: clock[0])
    key, plaintext = make_api_key("portal:read")
    api_client.credentials(HTTP_X_API_KEY=plaintext)

    with CaptureQueriesContext(connection) as first:
        assert api_client.get("/api/v1/whoami/").status_code == 200
    with CaptureQueriesContext(connection) as second:
        assert api_client.get("/api/v1/whoami/").status_code == 200
    assert _key_queries(first.captured_queries) == 1
    assert _key_queries(second.captured_queries) == 0

    # Revoked elsewhere (another process: no signal here): refused once the
    # cached copy is older than API_KEY_CACHE_SECONDS.
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    clock[0] += 9
    assert api_client.get("/api/v1/whoami/").status_code == 200
    clock[0] += 2
    assert api_client.get("/api/v1/whoami/").status_code == 401


@pytest.mark.django_db
def test_revoking_or_deleting_a_key_applies_at_once_in_this_process(
    api_client, make_api_key, settings
):
    settings.API_KEY_CACHE_SECONDS = 3600
    key, plaintext = make_api_key("portal:read")
    api_client.credentials(HTTP_X_API_KEY=plaintext)
    assert api_client.get("/api/v1/whoami/").status_code == 200
    key.revoke()
    assert api_client.get("/api/v1/whoami/").status_code == 401

    other, plaintext = make_api_key("portal:read")
    api_client.credentials(HTTP_X_API_KEY=plaintext)
    assert api_client.get("/api/v1/whoami/").status_code == 200
    ApiKey.objects.filter(pk=other.pk).delete()  # the admin's bulk delete
    assert api_client.get("/api/v1/whoami/").status_code == 401


@pytest.mark.django_db
def test_with_no_cache_every_request_looks_the_key_up(
    api_client, make_api_key, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.API_KEY_CACHE_SECONDS = 0
    _, plaintext = make_api_key("portal:read")
    api_client.credentials(HTTP_X_API_KEY=plaintext)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert api_client.get("/api/v1/whoami/").status_code == 200
    assert _key_queries(queries.captured_queries) == 3
