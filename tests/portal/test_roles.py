"""Operators edit and run; Viewers only read; in the admin and in the API."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from portal.roles import OPERATORS, VIEWERS


def test_migration_creates_both_groups(db):
    operators = Group.objects.get(name=OPERATORS)
    viewers = Group.objects.get(name=VIEWERS)
    viewer_codes = set(viewers.permissions.values_list("codename", flat=True))
    operator_codes = set(operators.permissions.values_list("codename", flat=True))
    assert "view_dashboard" in viewer_codes and "view_schedule" in viewer_codes
    assert all(c.startswith("view_") for c in viewer_codes)
    assert {"run_tick", "change_schedule", "add_apikey"} <= operator_codes


def test_roles_are_topped_up_not_reset(db):
    from django.contrib.auth.models import Group as G
    from django.contrib.auth.models import Permission as P

    from portal.roles import sync_roles

    viewers = Group.objects.get(name=VIEWERS)
    extra = Permission.objects.get(codename="add_schedule")
    viewers.permissions.add(extra)  # an administrator's own grant
    sync_roles(G, P)
    assert viewers.permissions.filter(pk=extra.pk).exists()


def test_viewer_reads_but_cannot_change_in_the_admin(client, viewer_user):
    client.force_login(viewer_user)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/django_q/schedule/").status_code == 200
    assert client.get("/admin/django_q/schedule/add/").status_code == 403
    assert client.get("/admin/portal/apikey/").status_code == 403


def test_operator_changes_in_the_admin(client, operator_user):
    client.force_login(operator_user)
    assert client.get("/admin/django_q/schedule/add/").status_code == 200
    assert client.get("/admin/portal/apikey/add/").status_code == 200


def test_viewer_reads_but_cannot_run_in_the_api(client, viewer_user):
    client.force_login(viewer_user)
    assert client.get("/api/v1/ticks/").status_code == 200
    response = client.post("/api/v1/ticks/portal.prune_task_history/run/")
    assert response.status_code == 403


def test_operator_runs_in_the_api(client, operator_user):
    client.force_login(operator_user)
    response = client.post("/api/v1/ticks/portal.prune_task_history/run/")
    assert response.status_code == 202
    assert response.json()["task_id"]


def test_staff_without_a_role_gets_nothing(client, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="x", is_staff=True)
    client.force_login(user)
    assert client.get("/api/v1/ticks/").status_code == 403
    panels = client.get("/admin/dashboard/panels/").content.decode()
    assert "No dashboard panels are available to you." in panels


def test_whoami_lists_the_roles(client, operator_user):
    client.force_login(operator_user)
    body = client.get("/api/v1/whoami/").json()
    assert body["authenticated_by"] == "session"
    assert body["username"] == "olivia"
    assert body["roles"] == [OPERATORS]
