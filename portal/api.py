"""What every API of the portal shares: API-key authentication, the role and scope
permission, and the one exception handler.

Views declare the app they belong to (``api_scope``) and, for admin sessions, the
Django permissions that reading and writing need (``read_perm`` / ``write_perm``).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, parsers, permissions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.response import Response
from rest_framework.utils import json as drf_json

from portal.lib import jsonvalues
from portal.models import KEY_LENGTH, KEY_PREFIX, ApiKey, hash_key

logger = logging.getLogger(__name__)


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Token <key>`` or ``X-Api-Key: <key>``.

    Returns ``(key.created_by, key)``: ``request.auth`` is the ``ApiKey`` and its
    scopes, not the creator's permissions, decide what the request may do.
    """

    keyword = "Token"

    def authenticate(self, request):
        key = request.META.get("HTTP_X_API_KEY", "").strip()
        if not key:
            parts = get_authorization_header(request).split()
            if not parts or parts[0].lower() != self.keyword.lower().encode():
                return None
            if len(parts) != 2:
                raise exceptions.AuthenticationFailed(
                    "Invalid Authorization header: expected 'Token <key>'."
                )
            try:
                key = parts[1].decode()
            except UnicodeError as exc:
                raise exceptions.AuthenticationFailed("Invalid API key.") from exc
        # Cheap shape check first: a malformed key never reaches the database.
        if len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        api_key = ApiKey.objects.by_hash(hash_key(key))
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if not api_key.is_active:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        user = api_key.created_by
        if user is not None and not user.is_active:
            raise exceptions.AuthenticationFailed(
                "The owner of this API key is inactive."
            )
        api_key.touch()
        # A key made by `create_api_key` without --user has no owner: the request
        # is then anonymous as a user, and its key alone grants access.
        return (user or AnonymousUser(), api_key)

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Api-Key",
            "description": "An API key; `Authorization: Token <key>` works as well.",
        }


class PortalPermission(permissions.BasePermission):
    """Roles for sessions, scopes for API keys.

    * API key: the view's ``api_scope`` must be granted, ``:write`` for unsafe methods.
    * Session: an active staff user holding the view's ``read_perm`` (safe methods)
      or ``write_perm`` (others); superusers hold every permission.
    A view without ``api_scope`` only needs an authenticated caller.
    """

    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        write = request.method not in permissions.SAFE_METHODS
        scope = getattr(view, "api_scope", None)
        if isinstance(request.auth, ApiKey):
            if scope is None:
                return True
            if not request.auth.allows(scope, write=write):
                access = "write" if write else "read"
                self.message = f"This API key lacks the '{scope}:{access}' scope."
                return False
            return True
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if scope is None:
            return True
        if not user.is_staff:
            return False
        perm = getattr(view, "write_perm" if write else "read_perm", None)
        if perm is None:
            return user.is_superuser
        return user.has_perm(perm)


def caller_name(request) -> str:
    """Who asked: the API key's name, else the session's username."""
    if isinstance(request.auth, ApiKey):
        return request.auth.name
    return request.user.get_username()


def optional_slash_router(router_class_path: str = "SimpleRouter"):
    """A DRF router whose routes match with and without the trailing slash.

    DRF turns any truthy ``trailing_slash`` argument into "/", so the regex is set
    on the instance afterwards.
    """
    from rest_framework import routers

    router = getattr(routers, router_class_path)()
    router.trailing_slash = "/?"
    return router


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser on ``portal.lib.jsonvalues.loads``: a body nested too
    deeply or holding a lone surrogate escape ("\\ud800", which no database can
    store) is a 400 here, not a 500 later."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            return jsonvalues.loads(
                raw.decode(encoding),
                parse_constant=drf_json.strict_constant if self.strict else None,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc


def _as_field_errors(exc: DjangoValidationError) -> dict:
    if hasattr(exc, "error_dict"):
        return {field: list(messages) for field, messages in exc.message_dict.items()}
    return {"non_field_errors": list(exc.messages)}


def exception_handler(exc, context):
    """DRF's handler, plus: Django ``ValidationError`` from services becomes a 400
    whose body names the field, like DRF's own validation errors."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(_as_field_errors(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    # Imported here: rest_framework.views loads this module through its settings.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(response.data, list):
        response.data = {"non_field_errors": response.data}
    return response


def error_response(status: int, message: str, **fields) -> Response:
    """A JSON error for views that fail outside serializers."""
    body = {"detail": message}
    body.update(fields)
    return Response(body, status=status)


# --- Plain-Django JSON endpoints (the compatible protocols: fleet, affirmations) --


def json_error(message: str, status: int = 400, field: str = "", **extra):
    """``{"error", "field"}``: the compatible protocols' error body."""
    from django.http import JsonResponse

    body = {"error": message}
    if field:
        body["field"] = field
    body.update(extra)
    return JsonResponse(body, status=status)


def json_method_not_allowed(request, allowed: list[str]):
    response = json_error(
        f"Method {request.method} is not allowed here; use {' or '.join(allowed)}.",
        status=405,
    )
    response["Allow"] = ", ".join(allowed)
    return response


def api_key_caller(
    request,
    *,
    scope: str,
    write: bool,
    anonymous: bool,
    key: str | None = None,
    hint: str = "X-Api-Key header",
):
    """``(user, refusal)`` for plain-Django protocol views: the API key given as
    ``key`` (e.g. from a URL path) or in the request's headers must be valid and
    grant ``scope``; no key at all is allowed only when ``anonymous``."""
    access = "write" if write else "read"
    # A key from the path goes through the same checks as the header's.
    source = request if key is None else SimpleNamespace(META={"HTTP_X_API_KEY": key})
    try:
        found = ApiKeyAuthentication().authenticate(source)
    except exceptions.AuthenticationFailed as exc:
        return None, json_error(str(exc.detail), status=401)
    if found is None:
        if anonymous:
            return None, None
        return None, json_error(
            f"An API key with the '{scope}:{access}' scope is required ({hint}).",
            status=401,
        )
    user, api_key = found
    if not api_key.allows(scope, write=write):
        return None, json_error(
            f"This API key lacks the '{scope}:{access}' scope.", status=403
        )
    return user, None
