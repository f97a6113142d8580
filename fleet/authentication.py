"""Who is polling: an agent token in the URL path (``/fleet/a/<token>/tasks``) or
in Basic auth (``http://name:<token>@host/fleet``).

The unmodified SLAMon agent keeps both from the URL it is given, so neither needs
a change on the agent. A malformed token is refused before any database lookup.
"""

from __future__ import annotations

import base64
import binascii

from django.conf import settings

from fleet.models import TOKEN_LENGTH, TOKEN_PREFIX, Agent, hash_token


class AgentAuthError(Exception):
    """A missing (when required) or invalid agent token: answered with 401."""


def token_from_request(request, path_token: str | None) -> str | None:
    if path_token:
        return path_token
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AgentAuthError("Malformed Basic credentials.") from exc
    _user, _, password = decoded.partition(":")
    return password or None


def authenticate_agent(request, path_token: str | None = None) -> Agent | None:
    """The agent whose token the request carries; None for an anonymous request
    when tokens are optional. Raises ``AgentAuthError`` otherwise."""
    token = token_from_request(request, path_token)
    if token is None:
        if settings.FLEET_REQUIRE_TOKEN:
            raise AgentAuthError(
                "An agent token is required: use http://host/fleet/a/<token> "
                "or http://name:<token>@host/fleet as the agent's URL."
            )
        return None
    if len(token) != TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        raise AgentAuthError("Invalid agent token.")
    agent = Agent.objects.filter(token_hash=hash_token(token)).first()
    if agent is None:
        raise AgentAuthError("Invalid agent token.")
    return agent
