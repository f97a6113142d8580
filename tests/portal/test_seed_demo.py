"""seed_demo: idempotent demo data and one printed login per role."""

from __future__ import annotations

import io
import re

from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command


def seed(settings, tmp_path) -> str:
    settings.VAR_DIR = tmp_path
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def passwords(output: str) -> dict[str, str]:
    return dict(re.findall(r"login (\w+)\s+password (\S+)", output))


def test_it_creates_logins_that_work(db, settings, tmp_path):
    output = seed(settings, tmp_path)
    logins = passwords(output)
    assert set(logins) == {"admin", "operator", "viewer"}
    for username, password in logins.items():
        assert authenticate(username=username, password=password) is not None
    user_model = get_user_model()
    assert user_model.objects.get(username="admin").is_superuser
    assert list(
        user_model.objects.get(username="viewer").groups.values_list("name", flat=True)
    ) == ["Viewers"]
    assert (tmp_path / "passwords" / "admin").stat().st_mode & 0o777 == 0o600
    assert "Demo data ready." in output


def test_running_it_again_keeps_the_passwords(db, settings, tmp_path):
    first = passwords(seed(settings, tmp_path))
    second = passwords(seed(settings, tmp_path))
    assert first == second
    assert get_user_model().objects.count() == 3


def test_it_repairs_a_password_changed_elsewhere(db, settings, tmp_path):
    first = passwords(seed(settings, tmp_path))
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-by-hand")
    admin.save()
    second = passwords(seed(settings, tmp_path))
    assert second["admin"] != first["admin"]
    assert authenticate(username="admin", password=second["admin"]) is not None
