"""What every import source shares: the fetch context, the kind, the error, and
strict readers for the JSON the APIs answer.

A kind's ``fetch(ctx)`` returns points ``(path, value, timestamp)`` and updates
``ctx.state`` (its high-water marks); the caller persists the state only once
the points are safely accepted by the sink, so a failed run is simply redone.
Expected failures (HTTP after retries, an answer of an unknown shape, bad
config) raise ``SourceError``, whose text is one line free of secrets.

A kind goes through the apps or checks one at a time, calling ``ctx.heartbeat()``
before each. When one app or check fails (a ``SourceError`` from its calls or the
shape of its answers), the kind appends one line naming it to ``ctx.errors`` and
goes on with the others: their points are returned and only their marks move,
so the failed one is tried again by the next run. A failure that concerns the
whole source still raises: the app or check list cannot be read, the config is
bad, or the API client raises ``SourceWideError`` (credentials or token refused,
rate limit spent, API unreachable), which no other app or check would escape.

Every ``fetch`` also takes an optional ``client`` (an ``importers.http.ApiClient``),
so that tests can pass one whose waits are not real.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.utils import timezone

from importers.graphite import metric_name

Point = tuple[str, float | int, int]

_SAFE_PREFIX = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class SourceError(Exception):
    """A run's expected failure: ``str(exc)`` is one clear line, never a secret."""


class SourceWideError(SourceError):
    """A failure no app or check can escape (credentials or token refused, rate
    limit spent, API unreachable): a kind stops at once instead of noting it in
    ``ctx.errors`` and going on with the next app or check."""


def _no_heartbeat() -> None:
    """The default ``FetchContext.heartbeat``: nothing to keep fresh."""


@dataclass
class FetchContext:
    """Everything one fetch of one source needs; ``state`` and ``calls`` are
    updated by the fetch."""

    name: str
    base_url: str
    credentials: dict[str, str]
    prefix: str
    app_blacklist: list[str] = field(default_factory=list)
    # The service labels to import: only these (the API counts Wi-Fi hotspots as
    # services). Empty imports no service at all (logged at INFO; see
    # importers.sources.apteligent).
    services_whitelist: list[str] = field(default_factory=list)
    carrier_map: dict[str, list[list[str]]] = field(default_factory=dict)
    app_settings: dict[str, dict] = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    since: datetime | None = None
    until: datetime | None = None
    now: datetime = field(default_factory=timezone.now)
    token_cache_key: str = ""
    timeout: float = 10.0
    calls: int = 0
    # The source's run interval, when it has one (not a cron): rolling-window kinds
    # stamp their points at the run's time rounded down to it.
    interval_minutes: int | None = None
    # Filled by the fetch: one line per app or check that failed while the kind
    # went on with the others (its points dropped, its marks not moved), naming
    # it and never a secret. Empty when every app and check went through; the
    # caller reads it after ``fetch`` returns.
    errors: list[str] = field(default_factory=list)
    # Called by the fetch before each app or check (the framework keeps the run's
    # lock fresh with it); a no-op by default.
    heartbeat: Callable[[], None] = _no_heartbeat

    def __repr__(self) -> str:
        # The dataclass repr would show the credentials.
        return f"<FetchContext {self.name!r} {self.base_url}>"


@dataclass(frozen=True)
class Kind:
    """One kind of import: which API it calls, with which credentials, how often."""

    key: str
    label: str
    api: str
    credential_roles: tuple[str, ...]
    default_base_url: str
    backfill: bool
    default_interval_minutes: int
    fetch: Callable[[FetchContext], list[Point]]


# --- Paths and time -------------------------------------------------------------


def metric_path(ctx: FetchContext, *levels: str | int) -> str:
    """``<prefix>.<levels...>``, each level sanitised with ``metric_name``."""
    name = metric_name(*levels)
    return f"{ctx.prefix}.{name}" if ctx.prefix else name


def check_prefix(ctx: FetchContext) -> None:
    """The prefix must already be a safe dotted path (the caller sanitises it)."""
    if ctx.prefix and not _SAFE_PREFIX.fullmatch(ctx.prefix):
        raise SourceError(f"bad config: metric prefix {ctx.prefix!r} is not safe")


def unique_levels(names: Mapping[str, str]) -> dict[str, str]:
    """One metric level per id: its name, or ``name-id`` when two ids share it
    (so two apps or checks with one name never write into the same series)."""
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {
        key: name if seen[name] == 1 else f"{name}-{key}" for key, name in names.items()
    }


def floor_epoch(moment: datetime, minutes: int) -> int:
    """``moment`` as Unix seconds, rounded down to a multiple of ``minutes``."""
    seconds = int(moment.timestamp())
    return seconds - seconds % (minutes * 60)


def backfill_window(
    ctx: FetchContext, key: str, *, backfill: bool
) -> tuple[datetime, datetime] | None:
    """``(since, until)`` when the run is a backfill (until defaults to now), else
    None. A kind that cannot backfill refuses a window rather than ignore it."""
    if ctx.since is None and ctx.until is None:
        return None
    if not backfill:
        raise SourceError(f"{key} cannot backfill: the API serves only recent data")
    since, until = ctx.since, ctx.until or ctx.now
    if since is None:
        raise SourceError("bad config: a backfill needs a start (since)")
    if since.tzinfo is None or until.tzinfo is None:
        raise SourceError("bad config: backfill since/until must be timezone-aware")
    if since >= until:
        raise SourceError(
            f"bad config: backfill since {since.isoformat()} is not before until "
            f"{until.isoformat()}"
        )
    return since, until


def note_failure(
    ctx: FetchContext,
    what: str,
    exc: SourceError,
    redact: Callable[[str], str] | None = None,
) -> None:
    """Record in ``ctx.errors`` that one app or check (``what``, e.g. ``app
    AcmeShop (538b...)``) failed with ``exc``, as one line (``redact`` masks the
    client's secrets). The caller lets a ``SourceWideError`` propagate instead."""
    line = " ".join(f"{what}: {exc}".split())
    ctx.errors.append(redact(line) if redact else line)


def int_mark(value: Any) -> int | None:
    """A high-water mark read from the state (an int), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- Config validators (re-exported by importers.sources) ------------------------


def validate_carrier_map(value: Any) -> None:
    """``{country: [[regex, group], ...]}``: every regex compiles, every list is
    non-empty and ends with the catch-all ``".*"``; ValidationError otherwise."""
    if not isinstance(value, dict):
        raise ValidationError(
            'The carrier map must be an object: {"US": [["^AT&T", "ATT"], '
            '[".*", "Other"]]}.'
        )
    errors = []
    for country, rules in value.items():
        if not isinstance(country, str) or not country.strip():
            errors.append(f"Country {country!r} must be a non-empty string.")
            continue
        if not isinstance(rules, list) or not rules:
            errors.append(f"{country}: must be a non-empty list of [regex, group].")
            continue
        for i, rule in enumerate(rules, start=1):
            if (
                not isinstance(rule, list | tuple)
                or len(rule) != 2
                or not all(isinstance(part, str) for part in rule)
            ):
                errors.append(f"{country}, rule {i}: must be [regex, group].")
                continue
            pattern, group = rule
            if not group.strip():
                errors.append(f"{country}, rule {i}: the group name is empty.")
            try:
                re.compile(pattern)
            except re.error as exc:
                errors.append(f"{country}, rule {i}: bad regex {pattern!r}: {exc}.")
        last = rules[-1]
        if isinstance(last, list | tuple) and last and last[0] != ".*":
            errors.append(
                f'{country}: the last rule must be the catch-all [".*", group], '
                "so that every carrier lands in a group."
            )
    if errors:
        raise ValidationError(errors)


APP_SETTINGS_KEYS = frozenset({"timezone", "country"})


def validate_app_settings(value: Any) -> None:
    """``{app_id: {"timezone": zoneinfo name, "country": str}}`` (both keys
    optional); ValidationError otherwise."""
    if not isinstance(value, dict):
        raise ValidationError(
            'App settings must be an object: {"<app id>": {"timezone": '
            '"Europe/Helsinki", "country": "FI"}}.'
        )
    errors = []
    for app_id, settings in value.items():
        if not isinstance(app_id, str) or not app_id.strip():
            errors.append(f"App id {app_id!r} must be a non-empty string.")
            continue
        if not isinstance(settings, dict):
            errors.append(f"{app_id}: must be an object with timezone and country.")
            continue
        unknown = sorted(set(settings) - APP_SETTINGS_KEYS)
        if unknown:
            errors.append(
                f"{app_id}: unknown key(s) {', '.join(map(str, unknown))}; "
                "allowed: timezone, country."
            )
        if "timezone" in settings:
            try:
                zone(settings["timezone"])
            except SourceError:
                errors.append(
                    f"{app_id}: unknown time zone {settings['timezone']!r} "
                    "(use a name like Europe/Helsinki)."
                )
        country = settings.get("country", "")
        if not isinstance(country, str):
            errors.append(f'{app_id}: country must be a string like "US".')
    if errors:
        raise ValidationError(errors)


def zone(name: Any) -> ZoneInfo:
    """The ZoneInfo of a name; SourceError when there is none."""
    if not isinstance(name, str) or not name:
        raise SourceError(f"bad config: time zone {name!r} is not a name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(f"bad config: unknown time zone {name!r}") from None


def checked_config(ctx: FetchContext, *, carriers: bool = False) -> None:
    """The context's config is valid, or SourceError("bad config: ...")."""
    check_prefix(ctx)
    try:
        validate_app_settings(ctx.app_settings)
        if carriers:
            validate_carrier_map(ctx.carrier_map)
    except ValidationError as exc:
        raise SourceError("bad config: " + " ".join(exc.messages)) from None
    for field_name in ("app_blacklist", "services_whitelist"):
        items = getattr(ctx, field_name)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise SourceError(f"bad config: {field_name} must be a list of strings")


# --- Strict readers for API answers ---------------------------------------------


def bad_shape(where: str, what: str) -> SourceError:
    return SourceError(f"unrecognised answer from {where}: {what}")


def as_dict(value: Any, where: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise bad_shape(where, f"{what} is {_kind(value)}, not an object")
    return value


def as_list(value: Any, where: str, what: str) -> list:
    if not isinstance(value, list):
        raise bad_shape(where, f"{what} is {_kind(value)}, not a list")
    return value


def as_str(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_shape(where, f"{what} is {_kind(value)}, not a non-empty string")
    return value


def as_number(value: Any, where: str, what: str) -> int | float:
    """A finite int or float (JSON ``true`` is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_shape(where, f"{what} is {_kind(value)}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise bad_shape(where, f"{what} is {value!r}")
    return value


def dig(
    value: Any,
    path: str,
    where: str,
    reader: Callable[[Any, str, str], Any] | None = None,
    *,
    at: str = "",
) -> Any:
    """The member at ``path`` ("data.slices") of nested objects, checked by
    ``reader`` (``as_list``...); errors name the call (``where``) and the field,
    after ``at`` ("results[3]") when the value is itself inside the answer."""
    walked = at
    for key in path.split("."):
        value = as_dict(value, where, walked or "the answer")
        walked = f"{walked}.{key}" if walked else key
        if key not in value:
            raise bad_shape(where, f"no {walked}")
        value = value[key]
    return reader(value, where, walked) if reader else value


def slices(answer: Any, where: str) -> dict[str, int | float]:
    """A pie's ``data.slices[{label, value}]`` as ``{label: value}``."""
    result: dict[str, int | float] = {}
    for i, item in enumerate(dig(answer, "data.slices", where, as_list)):
        label = dig(item, "label", where, as_str, at=f"data.slices[{i}]")
        value = dig(item, "value", where, as_number, at=f"data.slices[{i}]")
        if label in result:
            raise bad_shape(where, f"label {label!r} appears twice in data.slices")
        result[label] = value
    return result


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
