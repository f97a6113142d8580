"""Models shared by the whole portal: API keys and the portal-wide permissions."""

from __future__ import annotations

import hashlib
import secrets
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

# Every app of the portal that exposes an API, and so can be granted to a key.
API_SCOPE_APPS = [
    "portal",
    "packages",
    "pipelines",
    "fleet",
    "affirmations",
    "importers",
]
API_SCOPE_CHOICES = [
    (f"{app}:{access}", f"{app}: {access}")
    for app in API_SCOPE_APPS
    for access in ("read", "write")
]
KEY_PREFIX = "opk_"
# "opk_" + 43 url-safe characters (32 random bytes).
KEY_LENGTH = len(KEY_PREFIX) + 43


def hash_key(plaintext: str) -> str:
    """SHA-256 of a key: keys carry 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def validate_scopes(value: object) -> None:
    valid = {choice for choice, _ in API_SCOPE_CHOICES}
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValidationError("Scopes must be a list of strings such as 'fleet:read'.")
    unknown = sorted(set(value) - valid)
    if unknown:
        raise ValidationError(f"Unknown scope(s): {', '.join(unknown)}.")


# Keys looked up in the last API_KEY_CACHE_SECONDS, per process: a script posting
# many times a second does not pay the key's query on every request. A change
# (revoked, new scopes, deleted) applies at once in the process that saved it and
# within that many seconds in the others.
_recent_keys: dict[str, tuple[float, ApiKey]] = {}
RECENT_KEYS_MAX = 1000


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)

    def by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash and its creator, from the recent-keys cache when
        it was looked up less than API_KEY_CACHE_SECONDS ago."""
        ttl = settings.API_KEY_CACHE_SECONDS
        now = time.monotonic()
        if ttl:
            hit = _recent_keys.get(key_hash)
            if hit is not None and hit[0] > now:
                return hit[1]
        api_key = self.select_related("created_by").filter(key_hash=key_hash).first()
        if ttl and api_key is not None:
            if len(_recent_keys) >= RECENT_KEYS_MAX:
                _recent_keys.clear()
            _recent_keys[key_hash] = (now + ttl, api_key)
        return api_key


class ApiKey(models.Model):
    """A credential for scripts and services; only its SHA-256 hash is stored.

    The plaintext is returned once by ``ApiKey.generate()`` and never again.
    ``prefix`` (the first characters) identifies a key in lists and logs.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_scopes],
        help_text="Apps and access this key grants, e.g. fleet:read, packages:write. "
        "Write implies read.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="api_keys",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def generate(self) -> str:
        """Give this (unsaved or re-keyed) key a new secret; returns the plaintext."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = plaintext[: len(KEY_PREFIX) + 8]
        self.key_hash = hash_key(plaintext)
        return plaintext

    generate.alters_data = True

    def allows(self, app: str, *, write: bool) -> bool:
        """True when this key may read (or, with ``write``, change) ``app``."""
        if not self.is_active:
            return False
        if f"{app}:write" in self.scopes:
            return True
        return not write and f"{app}:read" in self.scopes

    def revoke(self) -> bool:
        """Revoke the key; returns False when it was already revoked."""
        if self.revoked_at is not None:
            return False
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])
        return True

    revoke.alters_data = True

    def touch(self, now=None) -> None:
        """Record use, writing at most once a minute per key to spare the database."""
        now = now or timezone.now()
        if self.last_used_at and (now - self.last_used_at).total_seconds() < 60:
            return
        ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now

    touch.alters_data = True


@receiver([post_save, post_delete], sender=ApiKey)
def _forget_recent_key(sender, instance: ApiKey, **kwargs) -> None:
    # Saved (revoked, scopes changed) or deleted, also by the admin's bulk delete.
    _recent_keys.pop(instance.key_hash, None)


class PortalAccess(models.Model):
    """Holder of portal-wide permissions; no table (see the roles in portal.roles)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can view the operations dashboard and periodic jobs"),
            ("run_tick", "Can run a periodic job now"),
        ]

    def __str__(self) -> str:
        return "Portal access"
