"""The two roles of the portal, as Django groups.

* Operators edit, run, cancel and sign off: every permission of the operational apps.
* Viewers read: every ``view_*`` permission of those apps.

The groups are created by a migration; their permissions are topped up after every
``migrate`` (permissions of models added later exist only after their migration).
Permissions are only ever added, so an administrator's extra grants survive.
"""

from __future__ import annotations

OPERATORS = "Operators"
VIEWERS = "Viewers"
# Apps whose objects the roles cover. django_q gives them the task and schedule pages.
ROLE_APPS = ["packages_app", "fleet", "affirmations", "importers", "django_q"]
OPERATOR_EXTRA = [
    ("portal", "view_dashboard"),
    ("portal", "run_tick"),
    ("portal", "add_apikey"),
    ("portal", "change_apikey"),
    ("portal", "view_apikey"),
]
VIEWER_EXTRA = [("portal", "view_dashboard")]


def sync_roles(group_model, permission_model) -> None:
    """Create both groups and add any permission they are missing.

    Takes the model classes so the data migration can pass its historical models.
    """
    operators, _ = group_model.objects.get_or_create(name=OPERATORS)
    viewers, _ = group_model.objects.get_or_create(name=VIEWERS)
    perms = list(
        permission_model.objects.filter(
            content_type__app_label__in=ROLE_APPS + ["portal"]
        ).values_list("pk", "content_type__app_label", "codename")
    )
    operator_ids = {
        pk
        for pk, app, code in perms
        if app in ROLE_APPS or (app, code) in OPERATOR_EXTRA
    }
    viewer_ids = {
        pk
        for pk, app, code in perms
        if (app in ROLE_APPS and code.startswith("view_"))
        or (app, code) in VIEWER_EXTRA
    }
    for group, wanted in ((operators, operator_ids), (viewers, viewer_ids)):
        have = set(group.permissions.values_list("pk", flat=True))
        missing = wanted - have
        if missing:
            group.permissions.add(*missing)


def sync_roles_after_migrate(**kwargs) -> None:
    """post_migrate receiver: the permissions of every app exist by now."""
    from django.contrib.auth.models import Group, Permission

    using = kwargs.get("using", "default")
    if not Permission.objects.using(using).exists():
        return
    sync_roles(Group, Permission)
