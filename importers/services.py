"""Import workflows: run a source (claim, fetch, send, record), run the due ones,
queue a run for the workers, test a sink. Commands, the admin and the tick call
these.

A run, step by step (``run_source``):

1. claim the source with a conditional UPDATE (a second run is refused while one
   runs; a lock older than ``IMPORTERS_LOCK_STALE_MINUTES`` is taken over);
2. read the credentials from the environment (by the variable names stored);
3. ``kind.fetch(ctx)`` with a deep copy of the state, which it moves forward;
4. send the points kept by earlier runs, then the new ones, then the importer's
   own three metrics; what the sink does not take is kept (up to its buffer
   limit) for the next run;
5. in one UPDATE: the new state, the points kept, the next due time, the lock
   released. The high-water marks move only with the points they cover either
   sent or kept, so a restart neither loses nor repeats a bucket.

A dry run does 2-3 and keeps the exact lines it would send; it sends, saves and
locks nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from importers.graphite import (
    ConnectionCheck,
    GraphiteClient,
    Point,
    metric_name,
    validate_point,
)
from importers.http import redact
from importers.models import (
    MAX_DRY_RUN_CHARS,
    GraphiteSink,
    ImportRun,
    ImportSource,
    credential_variable_problem,
    one_line,
)

logger = logging.getLogger(__name__)
Status = ImportRun.Status
Trigger = ImportRun.Trigger
SELF_METRICS = ("points_sent", "errors", "duration")


class RunRefused(Exception):
    """A run was not started; ``str()`` is one line for the user, ``code`` says
    why: ``busy``, ``not_due``, ``disabled``, ``kind``, ``backfill``, ``window``."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code = code


class SourceBusy(RunRefused):
    """Another run of the source holds its lock."""

    def __init__(self, message: str):
        super().__init__(message, code="busy")


class ConfigurationError(Exception):
    """The source cannot run as configured (e.g. a credential variable unset);
    ``str()`` names the variable, never a value."""


# --- Helpers ----------------------------------------------------------------------


def stale_after() -> timedelta:
    return timedelta(minutes=settings.IMPORTERS_LOCK_STALE_MINUTES)


def resolve_credentials(source: ImportSource) -> dict[str, str]:
    """Role -> the VALUE of the environment variable the source names for it;
    ``ConfigurationError`` naming every variable that is not set."""
    kind = source.kind_spec
    references = source.credentials if isinstance(source.credentials, dict) else {}
    roles = tuple(kind.credential_roles) if kind else tuple(references)
    unconfigured = [role for role in roles if not references.get(role)]
    if unconfigured:
        raise ConfigurationError(
            "no environment variable is configured for the credential(s) "
            + ", ".join(unconfigured)
        )
    for role in roles:  # saved outside the admin's validation, or a prefix removed
        if problem := credential_variable_problem(references[role]):
            raise ConfigurationError(f"credential {role!r}: {problem}")
    missing = [
        f"{references[role]} (credential {role!r})"
        for role in roles
        if not os.environ.get(references[role])
    ]
    if missing:
        variables = "environment variable" + ("s " if len(missing) > 1 else " ")
        verb = "are" if len(missing) > 1 else "is"
        raise ConfigurationError(
            f"{variables}{', '.join(missing)} {verb} not set in the environment of "
            "the process running the import"
        )
    return {role: os.environ[references[role]] for role in roles}


def token_cache_key(source: ImportSource, credentials: dict[str, str]) -> str:
    """The cache key of the source's API token: per source, and changing with its
    base URL or credentials (keyed with SECRET_KEY, so it says nothing of them)."""
    digest = salted_hmac(
        "importers.token",
        json.dumps(
            [source.kind, source.effective_base_url, sorted(credentials.items())]
        ),
    ).hexdigest()[:16]
    return f"importers:token:{source.pk}:{digest}"


def self_metric(source: ImportSource, name: str) -> str:
    """``<prefix>.portal.importers.<source>.<name>``: the source's name goes
    through ``metric_name``; ``name`` is one of our own safe ``SELF_METRICS``
    (``metric_name`` would escape its ``_``)."""
    path = f"{metric_name('portal', 'importers', source.name)}.{name}"
    return f"{source.prefix}.{path}" if source.prefix else path


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if timezone.is_naive(value):
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def check_window(
    source: ImportSource, since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """A backfill window made aware UTC, or ``RunRefused`` saying what is wrong."""
    since, until = _aware(since), _aware(until)
    if since is None and until is None:
        return since, until
    kind = source.kind_spec
    if kind is not None and not kind.backfill:
        raise RunRefused(
            f"{source.name}: {kind.label} cannot backfill; run it without "
            "--since/--until.",
            code="backfill",
        )
    if since is None:
        raise RunRefused("A backfill needs a start (--since).", code="window")
    if until is not None and since >= until:
        raise RunRefused(
            f"--since ({since.isoformat()}) must be before --until "
            f"({until.isoformat()}).",
            code="window",
        )
    return since, until


def _expected(exc: BaseException) -> bool:
    """An error the operator can act on (API, credentials, configuration), as
    opposed to a bug, which gets a traceback in the log."""
    from importers.sources import SourceError

    return isinstance(exc, SourceError | ConfigurationError)


def _describe(exc: BaseException, secrets: dict[str, str]) -> str:
    if _expected(exc):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return one_line(redact(text, secrets))


@dataclass
class Fetched:
    points: list[Point]
    state: dict
    calls: int
    error: str


def _fetch(
    source: ImportSource,
    *,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    heartbeat: Callable[[], None] | None = None,
) -> Fetched:
    """Call the kind; any error becomes one redacted line, never an exception."""
    from importers.sources import FetchContext

    secrets: dict[str, str] = {}
    ctx = None
    try:
        kind = source.kind_spec
        if kind is None:
            raise ConfigurationError(f"unknown kind {source.kind!r}")
        secrets = resolve_credentials(source)
        ctx = FetchContext(
            name=source.name,
            base_url=source.effective_base_url,
            credentials=secrets,
            prefix=source.prefix,
            app_blacklist=list(source.app_blacklist or []),
            services_whitelist=list(source.services_whitelist or []),
            carrier_map=copy.deepcopy(source.carrier_map or {}),
            app_settings=copy.deepcopy(source.app_settings or {}),
            state=copy.deepcopy(source.state or {}),
            since=since,
            until=until,
            now=now,
            token_cache_key=token_cache_key(source, secrets),
            timeout=float(settings.IMPORTERS_HTTP_TIMEOUT),
            interval_minutes=source.interval_minutes,
        )
        if heartbeat is not None:
            ctx.heartbeat = heartbeat
        points = []
        for point in kind.fetch(ctx):
            if not isinstance(point, tuple | list) or len(point) != 3:
                raise TypeError(
                    f"{kind.key} returned {type(point).__name__} {str(point)[:80]}, "
                    "not a (path, value, timestamp) point"
                )
            points.append(tuple(point))
        # Apps or checks that failed while the others went on (their marks did
        # not move: the next run tries them again).
        failed = "; ".join(redact(one_line(e), secrets) for e in ctx.errors)
        return Fetched(points, ctx.state, ctx.calls, failed)
    except Exception as exc:
        error = _describe(exc, secrets)
        if _expected(exc):
            logger.warning("importer %s: %s", source.name, error)
        else:  # a bug or a surprise: the traceback helps, masked like the line
            logger.error(
                "importer %s: %s",
                source.name,
                redact("".join(traceback.format_exception(exc)), secrets),
            )
        return Fetched([], source.state or {}, ctx.calls if ctx else 0, error)


# --- Running ----------------------------------------------------------------------


def run_source(
    source: ImportSource,
    *,
    trigger: str,
    dry_run: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    triggered_by: str = "",
    due_by: datetime | None = None,
    time_limit: float | None = None,
) -> ImportRun:
    """Run one source now and return its finished ``ImportRun``.

    Raises ``RunRefused`` before anything runs: ``SourceBusy`` while another run
    holds the source, code ``not_due`` (with ``due_by``, the scheduler's time)
    when it is no longer due, ``disabled`` for a real run of a disabled source,
    ``backfill``/``window`` for a bad ``since``/``until``. Everything that goes
    wrong once it runs (API, credentials, sink, a bug in a kind) is recorded on
    the run as one line instead: the caller's loop goes on. ``time_limit`` (a
    dry run in a web request) stops the fetch at the first app or check that
    starts later than that many seconds, with a line saying so.
    """
    since, until = check_window(source, since, until)
    if source.kind_spec is None:
        raise RunRefused(f"{source.name}: unknown kind {source.kind!r}.", code="kind")
    if not dry_run and not source.enabled:
        raise RunRefused(
            f"{source.name} is disabled; enable it, or use a dry run.", code="disabled"
        )
    now = timezone.now()
    run = ImportRun.objects.create(
        source=source,
        trigger=trigger,
        triggered_by=triggered_by[:150],
        dry_run=dry_run,
        since=since,
        until=until,
        started_at=now,
    )
    if not dry_run and not source.claim(
        run, now=now, stale_after=stale_after(), due_by=due_by
    ):
        run.delete()
        raise _refusal(source)
    try:
        # The state and the kept points as saved by the last run, not as they
        # were when the caller loaded the source.
        source.refresh_from_db()
        if dry_run:
            return _dry_run(
                source, run, since=since, until=until, time_limit=time_limit
            )
        return _real_run(source, run, since=since, until=until)
    finally:
        # Whatever happened: the lock goes (a no-op when record_run released it),
        # and a run the database still sees running is failed. The in-memory run
        # is no guide: its finish() may have been rolled back.
        if not dry_run:
            source.release(run)
        ImportRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(
            status=Status.FAILED,
            finished_at=timezone.now(),
            error="the run stopped unexpectedly (see the log)",
        )


def _refusal(source: ImportSource) -> RunRefused:
    holder = (
        ImportSource.objects.filter(pk=source.pk)
        .values("running_since", "running_run_id")
        .first()
    )
    if holder and holder["running_since"]:
        since = holder["running_since"].astimezone(UTC)
        return SourceBusy(
            f"{source.name} is already running (run #{holder['running_run_id']}, "
            f"since {since:%Y-%m-%d %H:%M:%S} UTC)."
        )
    return RunRefused(f"{source.name} is not due any more.", code="not_due")


def _dry_run(
    source: ImportSource,
    run: ImportRun,
    *,
    since: datetime | None,
    until: datetime | None,
    time_limit: float | None = None,
) -> ImportRun:
    fetched = _fetch(
        source,
        since=since,
        until=until,
        now=run.started_at,
        heartbeat=_deadline(time_limit) if time_limit is not None else None,
    )
    pending = [tuple(point) for point in source.pending_points or []]
    lines: list[str] = []
    size = rejected = 0
    first_reason = ""
    total = 0
    for path, value, timestamp in pending + fetched.points:
        try:
            line = validate_point(path, value, timestamp).decode("ascii")
        except ValueError as exc:
            rejected += 1
            first_reason = first_reason or str(exc)
            continue
        total += 1
        if size + len(line) <= MAX_DRY_RUN_CHARS:
            lines.append(line)
            size += len(line)
    text = "".join(lines)
    if len(lines) < total:
        text += f"# … {total - len(lines)} more line(s) not kept\n"
    errors = [fetched.error] if fetched.error else []
    if rejected:
        errors.append(f"{rejected} invalid point(s) rejected, e.g. {first_reason}")
    run.finish(
        Status.FAILED if fetched.error else Status.SUCCEEDED,
        error="; ".join(errors),
        lines=text,
        http_calls=fetched.calls,
        points_fetched=len(fetched.points),
        points_rejected=rejected,
        points_pending=len(pending),
    )
    return run


def _real_run(
    source: ImportSource,
    run: ImportRun,
    *,
    since: datetime | None,
    until: datetime | None,
) -> ImportRun:
    fetched = _fetch(
        source,
        since=since,
        until=until,
        now=run.started_at,
        heartbeat=_heartbeat(source, run),
    )
    pending = [tuple(point) for point in source.pending_points or []]
    sent = dropped = rejected = 0
    sink_error = ""
    try:
        client = source.sink.client()
    except ValueError as exc:  # a sink saved outside the admin's validation
        client = None
        sink_error = f"sink {source.sink.name}: {exc}"
    kept: list = [list(point) for point in pending + fetched.points]
    if client is not None:
        try:
            result = client.send(pending + fetched.points)
            sent, sink_error = result.sent, result.error
            own = _own_points(
                source, run, sent=sent, failed=bool(fetched.error or sink_error)
            )
            if sink_error:
                client.extend(own)  # kept with the rest; no new tries this run
            else:
                sink_error = client.send(own).error
            dropped, rejected = client.dropped, client.rejected
            kept = [list(point) for point in client.pending_points()]
        finally:
            client.close()
    errors = [fetched.error] if fetched.error else []
    if sink_error:
        errors.append(
            f"sink: {sink_error} ({len(kept)} point(s) kept for the next run"
            + (f", {dropped} dropped past the buffer limit" if dropped else "")
            + ")"
        )
    if rejected:
        errors.append(f"{rejected} invalid point(s) rejected (see the log)")
    if fetched.error and not fetched.points:
        status = Status.FAILED
    elif fetched.error or sink_error:  # some apps failed, or points kept
        status = Status.PARTIAL
    else:
        status = Status.SUCCEEDED
    finished = timezone.now()
    with transaction.atomic():
        if not source.record_run(
            run, state=fetched.state, pending_points=kept, now=finished
        ):
            status = Status.FAILED
            errors.append(
                "another run took the lock over: this run's state and kept points "
                "were not saved (the next run fetches them again)"
            )
        run.finish(
            status,
            error="; ".join(errors),
            now=finished,
            http_calls=fetched.calls,
            points_fetched=len(fetched.points),
            points_sent=sent,
            points_dropped=dropped,
            points_rejected=rejected,
            points_pending=len(kept),
        )
    log = logger.info if status == Status.SUCCEEDED else logger.warning
    log("importer %s: %s", source.name, run_summary(run))
    return run


def _deadline(seconds: float) -> Callable[[], None]:
    """A heartbeat that stops the fetch once ``seconds`` have passed."""
    from importers.sources.base import SourceWideError

    started = time.monotonic()

    def beat() -> None:
        if time.monotonic() - started > seconds:
            raise SourceWideError(
                f"stopped after {seconds:.0f} s, the time a dry run has in the admin: "
                "run `python manage.py run_importer NAME --dry-run` for all of it"
            )

    return beat


# At most one lock refresh per this many seconds, however many apps a run has.
HEARTBEAT_EVERY = 30


def _heartbeat(source: ImportSource, run: ImportRun) -> Callable[[], None]:
    """What a kind calls before each app or check: keeps the run's lock fresh, so
    a long run (a backfill of many apps) is not taken for a dead one."""
    last = [time.monotonic()]

    def beat() -> None:
        if time.monotonic() - last[0] >= HEARTBEAT_EVERY:
            last[0] = time.monotonic()
            source.heartbeat(run)

    return beat


def _own_points(
    source: ImportSource, run: ImportRun, *, sent: int, failed: bool
) -> list[Point]:
    """The importer's metrics about this run: points sent, errors (0 or 1), and
    the duration so far in seconds."""
    now = timezone.now()
    duration = round((now - run.started_at).total_seconds(), 3)
    timestamp = int(now.timestamp())
    return [
        (self_metric(source, "points_sent"), sent, timestamp),
        (self_metric(source, "errors"), int(failed), timestamp),
        (self_metric(source, "duration"), duration, timestamp),
    ]


def run_summary(run: ImportRun) -> str:
    """One line: status, counts, duration, error."""
    text = (
        f"run #{run.pk} {run.status}: {run.points_fetched} fetched, "
        f"{run.points_sent} sent, {run.points_pending} pending, "
        f"{run.points_dropped} dropped, {run.http_calls} HTTP call(s)"
    )
    if run.duration is not None:
        text += f" in {run.duration:.1f} s"
    if run.error:
        text += f" — {run.error}"
    return text


@dataclass
class DueOutcome:
    """What ``run_due`` did with one source: its run, or why it skipped it."""

    source: str
    run: ImportRun | None = None
    skipped: str = ""

    def __str__(self) -> str:
        if self.run is not None:
            return f"{self.source}: {run_summary(self.run)}"
        return f"{self.source}: skipped — {self.skipped}"


def run_due(now: datetime | None = None) -> list[DueOutcome]:
    """Run every enabled source whose next due time has passed (or that was never
    scheduled), one after another, oldest due first. A source running elsewhere
    is skipped with a note; one that another process ran meanwhile, silently.
    """
    now = now or timezone.now()
    fail_abandoned_runs(now=now)
    due = (
        ImportSource.objects.filter(enabled=True)
        .filter(Q(next_due_at__isnull=True) | Q(next_due_at__lte=now))
        .select_related("sink", "last_run")
        # run_source reloads them once it holds the lock.
        .defer("state", "pending_points")
        .order_by(F("next_due_at").asc(nulls_first=True), "name")
    )
    outcomes = []
    for source in due:
        try:
            run = run_source(
                source,
                trigger=Trigger.SCHEDULE,
                triggered_by="schedule",
                due_by=now,
            )
        except SourceBusy as exc:
            outcomes.append(DueOutcome(source.name, skipped=str(exc)))
        except RunRefused as exc:
            if exc.code != "not_due":
                outcomes.append(DueOutcome(source.name, skipped=str(exc)))
        except Exception as exc:  # one source's trouble never stops the others
            logger.exception("importer %s: run failed", source.name)
            outcomes.append(DueOutcome(source.name, skipped=one_line(repr(exc))))
        else:
            outcomes.append(DueOutcome(source.name, run=run))
    return outcomes


def fail_abandoned_runs(*, now: datetime | None = None) -> int:
    """Runs still "running" past the stale limit that hold no lock (a dry run
    whose web worker was killed, a process that died before taking the lock):
    failed, so that nothing stays running for ever. Returns how many."""
    now = now or timezone.now()
    holding = ImportSource.objects.exclude(running_run=None).values("running_run")
    return (
        ImportRun.objects.filter(
            status=Status.RUNNING, started_at__lt=now - stale_after()
        )
        .exclude(pk__in=holding)
        .update(
            status=Status.FAILED,
            finished_at=now,
            error="abandoned: still running after the stale limit, holding no lock "
            "(its process died)",
        )
    )


def source_run_enqueue(*, source: ImportSource, triggered_by: str) -> None:
    """Hand a run of the source to the workers once the transaction commits
    (the admin's Run now); refused at once when it is disabled or running."""
    from django_q.tasks import async_task

    if not source.enabled:
        raise RunRefused(
            f"{source.name} is disabled; enable it, or use a dry run.", code="disabled"
        )
    if source.running_since and source.running_since > timezone.now() - stale_after():
        raise _refusal(source)
    transaction.on_commit(
        lambda: async_task(
            "importers.tasks.run_source",
            source.pk,
            triggered_by,
            task_name=f"importer {source.name}",
        )
    )


def sink_test_connection(*, sink: GraphiteSink) -> ConnectionCheck:
    """Try the sink once (the admin's Test connection); never raises."""
    try:
        client: GraphiteClient = sink.client()
    except ValueError as exc:
        return ConnectionCheck(False, f"Not a usable sink: {exc}")
    return client.test_connection()


# Runs deleted per statement by the retention job.
PRUNE_BATCH = 1000


def prune_runs(*, now: datetime | None = None) -> int:
    """Delete finished runs older than IMPORTERS_RUN_RETENTION_DAYS, a batch at a
    time; each source's last run stays, whatever its age. Returns how many went."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.IMPORTERS_RUN_RETENTION_DAYS)
    kept = ImportSource.objects.exclude(last_run=None).values("last_run")
    old = (
        ImportRun.objects.filter(started_at__lt=cutoff)
        .exclude(status=ImportRun.Status.RUNNING)
        .exclude(pk__in=kept)
    )
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:PRUNE_BATCH]):
        deleted += ImportRun.objects.filter(pk__in=ids).delete()[0]
    return deleted
