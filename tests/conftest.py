"""Shared fixtures: one user per role, API keys, and an API client."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from portal import services
from portal.roles import OPERATORS, VIEWERS

# Servers started once per session (per xdist worker): a git daemon, podman.
pytest_plugins = [
    "tests.fixtures.gitdaemon",
    "tests.fixtures.containers",
    "tests.fixtures.slamon",
    "tests.fixtures.carbon",
    "tests.importers.fakes",
]


def _staff(django_user_model, username: str, group: str):
    user = django_user_model.objects.create_user(
        username=username, password="pw-" + username, is_staff=True
    )
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator_user(db, django_user_model):
    return _staff(django_user_model, "olivia", OPERATORS)


@pytest.fixture
def viewer_user(db, django_user_model):
    return _staff(django_user_model, "victor", VIEWERS)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def make_api_key(db, admin_user):
    """Create a key with the given scopes; returns (ApiKey, plaintext)."""

    def make(*scopes: str, name: str = "test key"):
        return services.api_key_create(
            name=name, scopes=list(scopes), created_by=admin_user
        )

    return make


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness buys nothing in tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
