"""The kinds of import source, and the validators of their config.

The framework calls a source only through ``KINDS[key].fetch(ctx)`` (see
``importers.sources.base``); what each kind reads and writes is documented in
``importers.sources.apteligent`` and ``importers.sources.pingdom``.
"""

from __future__ import annotations

from collections.abc import Callable

from importers.sources import apteligent, pingdom
from importers.sources.base import (
    FetchContext,
    Kind,
    Point,
    SourceError,
    validate_app_settings,
    validate_carrier_map,
)

__all__ = [
    "KINDS",
    "KIND_CHOICES",
    "FetchContext",
    "Kind",
    "Point",
    "SourceError",
    "validate_app_settings",
    "validate_carrier_map",
]


def _kind(
    api,
    key: str,
    label: str,
    fetch: Callable[[FetchContext], list[Point]],
    *,
    interval: int,
    backfill: bool = False,
) -> Kind:
    """A kind of the API module ``api`` (its name, credential roles, base URL)."""
    return Kind(
        key=key,
        label=label,
        api=api.API,
        credential_roles=api.CREDENTIAL_ROLES,
        default_base_url=api.DEFAULT_BASE_URL,
        backfill=backfill,
        default_interval_minutes=interval,
        fetch=fetch,
    )


KINDS: dict[str, Kind] = {
    kind.key: kind
    for kind in (
        # Hourly, so that each app's day is sent within the hour after it is over
        # both at the API (UTC) and in the app's zone; the runs in between cost no
        # call (see apteligent.fetch_daily).
        _kind(
            apteligent,
            "apteligent_daily",
            "Apteligent: daily app metrics",
            apteligent.fetch_daily,
            backfill=True,
            interval=60,
        ),
        # The API answers the last 5 minutes: a run at least every 5 loses nothing.
        _kind(
            apteligent,
            "apteligent_live",
            "Apteligent: live stats (10 s buckets)",
            apteligent.fetch_live,
            interval=2,
        ),
        _kind(
            apteligent,
            "apteligent_grouped_appversion",
            "Apteligent: errors grouped by app version",
            apteligent.fetch_grouped_appversion,
            interval=apteligent.GROUPED_INTERVAL,
        ),
        _kind(
            apteligent,
            "apteligent_grouped_carrier",
            "Apteligent: errors grouped by carrier",
            apteligent.fetch_grouped_carrier,
            interval=apteligent.GROUPED_INTERVAL,
        ),
        _kind(
            apteligent,
            "apteligent_services",
            "Apteligent: services (performance management)",
            apteligent.fetch_services,
            interval=apteligent.SERVICES_INTERVAL,
        ),
        _kind(
            pingdom,
            "pingdom_results",
            "Pingdom: check results",
            pingdom.fetch_results,
            backfill=True,
            interval=pingdom.RESULTS_INTERVAL,
        ),
        _kind(
            pingdom,
            "pingdom_response_times",
            "Pingdom: hourly average response times",
            pingdom.fetch_response_times,
            backfill=True,
            interval=pingdom.RESPONSE_TIMES_INTERVAL,
        ),
    )
}

KIND_CHOICES: list[tuple[str, str]] = [(key, kind.label) for key, kind in KINDS.items()]
