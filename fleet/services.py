"""Fleet workflows: an agent's poll (upsert, claim), results, task creation, the
cleanup of silent agents and overdue tasks, and the fleet's figures.

The poll is the hottest path of the portal: a handful of indexed queries, and the
claim is one short transaction that no two agents can both win.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from fleet.models import (
    EXPIRED_ERROR,
    LOST_AGENT_ERROR,
    Agent,
    Task,
    normalise_labels,
    release_claimed,
)
from fleet.protocol import Poll, ProtocolError, Result

logger = logging.getLogger(__name__)

# A poll writes last_seen only when it is older than this (or something changed):
# busy agents poll many times a second, and thresholds are minutes.
LAST_SEEN_PRECISION = timedelta(seconds=5)
# The cleanup that rides on polls (AUTO_CLEANUP) runs at most this often per process.
POLL_CLEANUP_EVERY = timedelta(seconds=10)
# Tasks one poll may take, whatever max_tasks says.
MAX_TASKS_PER_POLL = 100
# Pending tasks one claim looks at when labels must be matched in Python.
LABEL_SCAN_LIMIT = 500
RESTART_ERROR = "The agent restarted (new agent id) while holding the task."
TIMEOUT_ERROR = "The task did not finish within its execution timeout."
DEFAULT = object()

_last_poll_cleanup: datetime | None = None


class AgentRefused(Exception):
    """A poll or result the agent's credentials do not allow (401/403)."""

    def __init__(self, message: str, status: int = 403, field: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


# --- Polls ----------------------------------------------------------------------


def agent_poll(*, poll: Poll, agent: Agent | None, remote_addr: str = "") -> list[Task]:
    """Record an agent's poll and claim tasks for it; returns the claimed tasks.

    ``agent`` is the agent its token identified, if any.
    """
    now = timezone.now()
    if settings.AUTO_CLEANUP:
        _cleanup_on_poll(now)
    agent = _agent_upsert(poll=poll, agent=agent, now=now, remote_addr=remote_addr)
    if agent.state == Agent.State.DISABLED or poll.max_tasks <= 0:
        return []
    return task_claim(
        agent=agent,
        capabilities=poll.capabilities,
        max_tasks=min(poll.max_tasks, MAX_TASKS_PER_POLL),
        now=now,
    )


def _agent_upsert(
    *, poll: Poll, agent: Agent | None, now: datetime, remote_addr: str
) -> Agent:
    if agent is None:
        agent = Agent.objects.filter(uuid=poll.agent_id).first()
        if agent is not None and agent.has_token:
            raise AgentRefused(
                f"Agent {poll.agent_id} has a token: poll with it.", status=401
            )
        if agent is None:
            try:
                with transaction.atomic():
                    return Agent.objects.create(
                        uuid=poll.agent_id,
                        name=poll.agent_name,
                        capabilities=poll.capabilities,
                        location=poll.location,
                        last_seen_at=now,
                    )
            except IntegrityError:  # its twin poll created it a moment ago
                agent = Agent.objects.get(uuid=poll.agent_id)
    elif agent.uuid != poll.agent_id:
        _agent_restarted(agent=agent, new_id=poll.agent_id, now=now)

    values = {}
    if agent.name != poll.agent_name:
        values["name"] = poll.agent_name
    if agent.capabilities != poll.capabilities:
        values["capabilities"] = poll.capabilities
    if poll.location is not None and agent.location != poll.location:
        values["location"] = poll.location
    if agent.state in (Agent.State.LOST, Agent.State.DROPPED):
        values["state"] = Agent.State.ONLINE
        logger.info("agent %s (%s) is back online", agent.name, poll.agent_id)
    if (
        values
        or agent.last_seen_at is None
        or now - agent.last_seen_at >= LAST_SEEN_PRECISION
        or now < agent.last_seen_at
    ):
        values["last_seen_at"] = now
        Agent.objects.filter(pk=agent.pk).update(**values)
        for name, value in values.items():
            setattr(agent, name, value)
    return agent


def _agent_restarted(*, agent: Agent, new_id: UUID, now: datetime) -> None:
    """A token agent polls with a new agent id: its process restarted, so the tasks
    it held are gone with the old process."""
    with transaction.atomic():
        # A tokenless row of the same id (a custom agent with a fixed id, later
        # given a token) gives the id up: the token is the identity now.
        Agent.objects.filter(uuid=new_id).exclude(pk=agent.pk).update(uuid=None)
        Agent.objects.filter(pk=agent.pk).update(uuid=new_id)
    if agent.uuid is not None:
        requeued, failed = release_claimed(
            Task.objects.filter(agent=agent), now=now, error=RESTART_ERROR
        )
        if requeued or failed:
            logger.warning(
                "agent %s restarted holding tasks: %d requeued, %d failed",
                agent,
                requeued,
                failed,
            )
    agent.uuid = new_id


def task_claim(
    *, agent: Agent, capabilities: dict[str, int], max_tasks: int, now: datetime
) -> list[Task]:
    """Claim up to ``max_tasks`` pending tasks for ``agent``: highest priority,
    then oldest; an exact (type, version) of ``capabilities``; required labels
    among the agent's. No task is ever claimed twice.

    PostgreSQL: the candidates are locked ``FOR UPDATE SKIP LOCKED``, so
    concurrent polls take different tasks without waiting for each other.
    SQLite: the transaction takes the write lock up front (``IMMEDIATE``), and the
    claim is a conditional UPDATE (still ``pending``) either way.
    """
    if max_tasks <= 0 or not capabilities:
        return []
    labels = set(agent.labels or [])
    if not labels and connection.vendor == "postgresql":
        return _claim_postgresql(
            agent=agent, capabilities=capabilities, max_tasks=max_tasks, now=now
        )
    kinds = Q()
    for task_type, version in capabilities.items():
        kinds |= Q(type=task_type, version=version)
    candidates = Task.objects.filter(kinds, state=Task.State.PENDING).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    if labels:
        limit = LABEL_SCAN_LIMIT
    else:
        candidates = candidates.filter(required_labels=[])
        limit = max_tasks
    candidates = candidates.order_by("-priority", "created_at", "id").only(
        "id", "uuid", "type", "version", "data", "required_labels", "timeout"
    )
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True, of=("self",))

    with transaction.atomic():
        rows = list(candidates[:limit])
        chosen = [t for t in rows if set(t.required_labels or []) <= labels][:max_tasks]
        if not chosen:
            return []
        by_timeout: dict[int | None, list[int]] = defaultdict(list)
        for task in chosen:
            by_timeout[task.timeout].append(task.pk)
        won = 0
        for timeout, ids in by_timeout.items():
            won += Task.objects.filter(pk__in=ids, state=Task.State.PENDING).update(
                state=Task.State.CLAIMED,
                agent=agent,
                claimed_at=now,
                attempts=F("attempts") + 1,
                expires_at=None,
                deadline_at=now + timedelta(seconds=timeout) if timeout else None,
            )
        if won != len(chosen):
            # Only without row locks: another claim took some of them first.
            chosen = list(
                Task.objects.filter(
                    pk__in=[t.pk for t in chosen],
                    agent=agent,
                    claimed_at=now,
                    state=Task.State.CLAIMED,
                )
            )
    return chosen


def _claim_postgresql(
    *, agent: Agent, capabilities: dict[str, int], max_tasks: int, now: datetime
) -> list[Task]:
    """``task_claim`` on PostgreSQL for an agent without labels, in one statement
    instead of a transaction of four round trips: the best pending tasks are locked
    ``SKIP LOCKED`` (concurrent polls take others) and claimed by the same UPDATE.

    Plain SQL because polls are the hot path and the ORM cannot express
    ``UPDATE ... RETURNING`` (bench/fleet_load.py, docs/benchmarks.md)."""
    table = Task._meta.db_table
    kinds = " OR ".join(["(type = %s AND version = %s)"] * len(capabilities))
    params: list = [Task.State.CLAIMED, agent.pk, now, now, Task.State.PENDING]
    params += [value for kind in capabilities.items() for value in kind]
    params += [now, max_tasks]
    tasks = list(
        Task.objects.raw(
            f"""
            UPDATE {table} AS t SET state = %s, agent_id = %s, claimed_at = %s,
                attempts = t.attempts + 1, expires_at = NULL,
                deadline_at = CASE WHEN t.timeout > 0
                    THEN %s + make_interval(secs => t.timeout) END
            FROM (
                SELECT id FROM {table}
                WHERE state = %s AND ({kinds})
                    AND (expires_at IS NULL OR expires_at > %s)
                    AND required_labels = '[]'::jsonb
                ORDER BY priority DESC, created_at, id
                LIMIT %s FOR UPDATE SKIP LOCKED
            ) AS c
            WHERE t.id = c.id
            RETURNING t.id, t.uuid, t.type, t.version, t.data, t.priority,
                t.created_at, t.state, t.agent_id, t.claimed_at, t.attempts,
                t.deadline_at
            """,
            params,
        )
    )
    # UPDATE ... RETURNING keeps no order.
    tasks.sort(key=lambda task: (-task.priority, task.created_at, task.pk))
    return tasks


def _cleanup_on_poll(now: datetime) -> None:
    global _last_poll_cleanup
    last = _last_poll_cleanup
    if last is not None and timedelta(0) <= now - last < POLL_CLEANUP_EVERY:
        return
    _last_poll_cleanup = now
    try:
        fleet_cleanup(now=now)
    except Exception:  # the poll itself must go on; the tick will retry
        logger.exception("fleet cleanup on poll failed")


# --- Results --------------------------------------------------------------------


def task_result(*, result: Result, agent: Agent | None) -> str:
    """Record a task's result or error. Returns what happened: ``recorded``,
    ``duplicate`` (the same result again) or ``discarded`` (cancelled/expired).

    Raises ``ProtocolError`` (400) for an unknown, unclaimed or already finished
    task, and ``AgentRefused`` (403) when tokens are in use and the poster does
    not hold the task.
    """
    if _record_result_directly(result=result, agent=agent):
        return "recorded"
    # Not the common case: find out why, and answer accordingly.
    for _ in range(3):
        task = Task.objects.select_related("agent").filter(uuid=result.task_id).first()
        if task is None:
            raise ProtocolError(f"Unknown task {result.task_id}.", "task_id")
        if task.state == Task.State.CLAIMED:
            holder = task.agent
            tokens_in_use = (
                agent is not None
                or settings.FLEET_REQUIRE_TOKEN
                or (holder is not None and holder.has_token)
            )
            if tokens_in_use and (agent is None or holder is None or holder != agent):
                raise AgentRefused(
                    f"Task {task.uuid} is held by another agent.",
                    status=403,
                    field="task_id",
                )
            if result.error is None:
                done = task.complete(result.data, agent=holder)
            else:
                done = task.fail(result.error, agent=holder)
            if done:
                return "recorded"
            continue  # cancelled, timed out or requeued meanwhile: look again
        if task.state in (Task.State.CANCELLED, Task.State.EXPIRED):
            logger.info("result for %s task %s discarded", task.state, result.task_id)
            return "discarded"
        if task.same_outcome(data=result.data, error=result.error):
            return "duplicate"
        if task.state == Task.State.PENDING:
            raise ProtocolError(
                f"Task {task.uuid} is not claimed by any agent"
                + (" (it was handed back to the queue)." if task.attempts else "."),
                "task_id",
            )
        raise ProtocolError(
            f"Task {task.uuid} has already {task.state} with another result.",
            "task_id",
        )
    raise ProtocolError(f"Task {result.task_id} keeps changing; try again.", "task_id")


def _record_result_directly(*, result: Result, agent: Agent | None) -> bool:
    """The common case in one conditional UPDATE: the task is claimed, and by the
    poster (token) or, with tokens not in use, by an agent without a token.

    Plain SQL: every task's result runs it, and the ORM's building of it cost more
    CPU than the rest of the request (bench/fleet_load.py, docs/benchmarks.md).
    """
    if agent is None and settings.FLEET_REQUIRE_TOKEN:
        return False
    field = Task._meta.get_field
    if result.error is None:
        state, column, value = Task.State.COMPLETED, "result", result.data
    else:
        state, column, value = Task.State.FAILED, "error", result.error
    table = Task._meta.db_table
    if agent is not None:
        holder, holder_params = "agent_id = %s", [agent.pk]
    else:
        holder, holder_params = (
            f"EXISTS (SELECT 1 FROM {Agent._meta.db_table} a "
            f"WHERE a.id = {table}.agent_id AND a.token_hash = '')",
            [],
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET state = %s, finished_at = %s, deadline_at = NULL, "
            f"{column} = %s WHERE uuid = %s AND state = %s AND {holder}",
            [
                state,
                field("finished_at").get_db_prep_save(timezone.now(), connection),
                field(column).get_db_prep_save(value, connection),
                field("uuid").get_db_prep_save(result.task_id, connection),
                Task.State.CLAIMED,
                *holder_params,
            ],
        )
        return cursor.rowcount == 1


# --- Tasks ----------------------------------------------------------------------


def task_create(
    *,
    task_type: str,
    version: int,
    data: dict | None = None,
    task_id: UUID | None = None,
    test_id: UUID | None = None,
    priority: int = 0,
    required_labels: list[str] | None = None,
    max_attempts: int | object = DEFAULT,
    ttl: int | None | object = DEFAULT,
    timeout: int | None | object = DEFAULT,
    created_by: str = "",
) -> Task:
    """Queue a new task. ``ttl``/``timeout``/``max_attempts`` left out take the
    FLEET_TASK_* defaults; ``None`` means no TTL / no execution timeout."""
    task = Task(
        type=task_type,
        version=version,
        data={} if data is None else data,
        test_id=test_id,
        priority=priority,
        required_labels=normalise_labels(required_labels or []),
        created_by=created_by[:150],
    )
    if task_id is not None:
        task.uuid = task_id
    if max_attempts is not DEFAULT:
        task.max_attempts = max_attempts
    if ttl is not DEFAULT:
        task.ttl = ttl
    if timeout is not DEFAULT:
        task.timeout = timeout
    task.expires_at = task.expiry_from(task.created_at)
    # Uniqueness is the INSERT's job (IntegrityError below): one query less.
    task.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            task.save(force_insert=True)
    except IntegrityError as exc:
        raise ValidationError(
            {"task_id": [f"A task with id {task.uuid} already exists."]}
        ) from exc
    return task


# --- Cleanup --------------------------------------------------------------------


@dataclass
class CleanupSummary:
    agents_lost: int = 0
    agents_dropped: int = 0
    tasks_requeued: int = 0
    tasks_failed: int = 0
    tasks_expired: int = 0

    def __str__(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in asdict(self).items())

    @property
    def changed(self) -> bool:
        return any(asdict(self).values())


def _silent_since(cutoff: datetime) -> Q:
    # An agent an operator added ahead of its first poll (to give it a token) has
    # never been seen: it is waiting, not lost.
    return Q(last_seen_at__lt=cutoff)


def fleet_cleanup(*, now: datetime | None = None) -> CleanupSummary:
    """Lost and dropped agents, their tasks requeued or failed, expired tasks,
    overdue claimed tasks. Safe to run from several processes at once: every
    change is a conditional UPDATE."""
    now = now or timezone.now()
    summary = CleanupSummary()
    lost_cutoff = now - timedelta(seconds=settings.AGENT_ACTIVE_THRESHOLD)
    silent = _silent_since(lost_cutoff)

    # Online agents gone silent: lost. Disabled ones keep their state, but the
    # tasks they hold are released all the same.
    for pk, state in Agent.objects.filter(
        silent, state__in=[Agent.State.ONLINE, Agent.State.DISABLED]
    ).values_list("pk", "state"):
        if state == Agent.State.ONLINE:
            if not Agent.objects.filter(silent, pk=pk, state=Agent.State.ONLINE).update(
                state=Agent.State.LOST
            ):
                continue  # it polled meanwhile
            summary.agents_lost += 1
        requeued, failed = release_claimed(
            Task.objects.filter(agent_id=pk), now=now, error=LOST_AGENT_ERROR
        )
        summary.tasks_requeued += requeued
        summary.tasks_failed += failed
    # Agents lost before a restart of the portal may still hold tasks.
    requeued, failed = release_claimed(
        Task.objects.filter(agent__state__in=[Agent.State.LOST, Agent.State.DROPPED]),
        now=now,
        error=LOST_AGENT_ERROR,
    )
    summary.tasks_requeued += requeued
    summary.tasks_failed += failed

    drop_cutoff = now - timedelta(seconds=settings.AGENT_DROP_THRESHOLD)
    summary.agents_dropped = Agent.objects.filter(
        _silent_since(drop_cutoff), state=Agent.State.LOST
    ).update(state=Agent.State.DROPPED)

    summary.tasks_expired = Task.objects.filter(
        state=Task.State.PENDING, expires_at__lte=now
    ).update(
        state=Task.State.EXPIRED, finished_at=now, expires_at=None, error=EXPIRED_ERROR
    )
    requeued, failed = release_claimed(
        Task.objects.filter(state=Task.State.CLAIMED, deadline_at__lte=now),
        now=now,
        error=TIMEOUT_ERROR,
    )
    summary.tasks_requeued += requeued
    summary.tasks_failed += failed
    if summary.changed:
        logger.info("fleet cleanup: %s", summary)
    return summary


# --- Figures --------------------------------------------------------------------


def fleet_status() -> dict:
    """``GET /fleet/status``: active agents and the tasks waiting for one."""
    cutoff = timezone.now() - timedelta(seconds=settings.AGENT_ACTIVE_THRESHOLD)
    return {
        "agents": Agent.objects.filter(
            state=Agent.State.ONLINE, last_seen_at__gte=cutoff
        ).count(),
        "tasks_waiting": Task.objects.filter(state=Task.State.PENDING).count(),
    }


def fleet_stats(*, now: datetime | None = None) -> dict:
    """Agents by state, tasks by state and by type, the oldest pending task's age,
    and the failures of the last 24 hours."""
    now = now or timezone.now()
    agents = Counter(
        dict(Agent.objects.values_list("state").annotate(n=Count("id")).order_by())
    )
    by_state = Counter(
        dict(Task.objects.values_list("state").annotate(n=Count("id")).order_by())
    )
    by_type: dict[str, dict[str, int]] = defaultdict(dict)
    for task_type, version, state, n in (
        Task.objects.values_list("type", "version", "state")
        .annotate(n=Count("id"))
        .order_by("type", "version")
    ):
        by_type[f"{task_type} v{version}"][state] = n
    oldest = Task.objects.filter(state=Task.State.PENDING).aggregate(
        oldest=Min("created_at")
    )["oldest"]
    return {
        "agents": {state: agents.get(state, 0) for state in Agent.State.values},
        "tasks": {state: by_state.get(state, 0) for state in Task.State.values},
        "tasks_by_type": dict(by_type),
        "oldest_pending_seconds": (
            max(0.0, (now - oldest).total_seconds()) if oldest else None
        ),
        "failed_last_24h": Task.objects.filter(
            state=Task.State.FAILED, finished_at__gte=now - timedelta(hours=24)
        ).count(),
    }


def capabilities_seen() -> list[tuple[str, int]]:
    """Every (task type, version) an agent that is not dropped has offered."""
    seen: set[tuple[str, int]] = set()
    for caps in Agent.objects.visible().values_list("capabilities", flat=True):
        for task_type, version in (caps or {}).items():
            if isinstance(version, int):
                seen.add((task_type, version))
    return sorted(seen)
