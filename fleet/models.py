"""The agent fleet: agents that poll for tasks (SLAMon protocol), and their tasks.

Every state change is one method here, written as a conditional UPDATE so that
polls, results, cancels and the cleanup tick racing for one task never both win.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from portal.lib.jsonvalues import validate_json_object

# The original's message for a task whose agent went silent.
LOST_AGENT_ERROR = (
    "Assigned agent reached last seen threshold and is now considered as inactive."
)
TIMEOUT_ERROR = "Task did not finish within its execution timeout of {} s."
EXPIRED_ERROR = "No agent claimed the task before its TTL ran out."
TOKEN_PREFIX = "fat_"
# "fat_" + 32 url-safe characters (24 random bytes): safe in a URL path and in
# Basic auth, with 192 random bits.
TOKEN_LENGTH = len(TOKEN_PREFIX) + 32
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$")
# A task type: 1 to 100 characters, no whitespace or NUL.
TYPE_RE = re.compile(r"^[^\s\x00]{1,100}$")


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def validate_labels(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError('Labels must be a list of strings, e.g. ["eu", "gpu"].')
    for label in value:
        if not LABEL_RE.match(label):
            raise ValidationError(
                f"{label!r} is not a valid label: letters, digits and _.:/- "
                "(starting with a letter or digit), at most 63 characters."
            )


def validate_capabilities(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError(
            'Capabilities must map a task type to a version, e.g. {"wait": 1}.'
        )
    for name, version in value.items():
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValidationError(f"The version of {name!r} must be an integer.")


def default_max_attempts() -> int:
    return settings.FLEET_TASK_MAX_ATTEMPTS


def default_timeout() -> int | None:
    return settings.FLEET_TASK_TIMEOUT or None


def default_ttl() -> int | None:
    return settings.FLEET_TASK_TTL or None


def normalise_labels(labels: list[str]) -> list[str]:
    return sorted(set(labels))


class AgentQuerySet(models.QuerySet):
    def visible(self) -> AgentQuerySet:
        """Every agent but the dropped ones (kept for history, hidden by default)."""
        return self.exclude(state=Agent.State.DROPPED)


class Agent(models.Model):
    """A remote agent; created by its first poll, or by an operator to issue a token.

    ``uuid`` is the ``agent_id`` of its latest poll. The Python agent makes a new one
    at every start: an agent with a token keeps its row across restarts (the token
    is its identity), an agent without one shows up as a new row.
    """

    class State(models.TextChoices):
        ONLINE = "online", "Online"
        LOST = "lost", "Lost"
        DROPPED = "dropped", "Dropped"
        DISABLED = "disabled", "Disabled"

    uuid = models.UUIDField(
        "agent id", unique=True, null=True, blank=True, editable=False
    )
    name = models.CharField(max_length=200, blank=True)
    capabilities = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        validators=[validate_capabilities],
        help_text="Task type → version, as sent by the agent's latest poll.",
    )
    location = models.JSONField(null=True, blank=True, editable=False)
    labels = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_labels],
        help_text="Set by operators; a task with required labels only goes to agents "
        'having all of them. A JSON list, e.g. ["eu", "gpu"].',
    )
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.ONLINE, db_index=True
    )
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    token_hash = models.CharField(max_length=64, blank=True, editable=False)
    token_prefix = models.CharField(max_length=16, blank=True, editable=False)
    token_issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        indexes = [
            models.Index(fields=["state", "last_seen_at"]),
            models.Index(
                fields=["token_hash"],
                name="fleet_agent_token_idx",
                condition=~Q(token_hash=""),
            ),
        ]
        permissions = [("manage_agent", "Can disable agents and issue their tokens")]

    def __str__(self) -> str:
        return self.name or (str(self.uuid) if self.uuid else f"agent #{self.pk}")

    @property
    def has_token(self) -> bool:
        return bool(self.token_hash)

    def issue_token(self) -> str:
        """A new token for this agent (the old one stops working); returns the
        plaintext, which is shown once and never stored."""
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(24)
        self.token_hash = hash_token(plaintext)
        self.token_prefix = plaintext[: len(TOKEN_PREFIX) + 6]
        self.token_issued_at = timezone.now()
        self.save(update_fields=["token_hash", "token_prefix", "token_issued_at"])
        return plaintext

    issue_token.alters_data = True

    def revoke_token(self) -> bool:
        if not self.token_hash:
            return False
        self.token_hash = self.token_prefix = ""
        self.token_issued_at = None
        self.save(update_fields=["token_hash", "token_prefix", "token_issued_at"])
        return True

    revoke_token.alters_data = True

    def disable(self) -> bool:
        """Stop handing tasks to this agent; it keeps polling (and may post the
        results of tasks it holds) until it is enabled again."""
        return self._move(~Q(state=self.State.DISABLED), self.State.DISABLED)

    disable.alters_data = True

    def enable(self) -> bool:
        """Back from disabled (or dropped): online until the next cleanup says
        otherwise by its last poll."""
        return self._move(
            Q(state__in=[self.State.DISABLED, self.State.DROPPED]), self.State.ONLINE
        )

    enable.alters_data = True

    def _move(self, allowed: Q, state: str) -> bool:
        done = Agent.objects.filter(allowed, pk=self.pk).update(state=state) == 1
        if done:
            self.state = state
        return done


class TaskQuerySet(models.QuerySet):
    def pending(self) -> TaskQuerySet:
        return self.filter(state=Task.State.PENDING)

    def claimed(self) -> TaskQuerySet:
        return self.filter(state=Task.State.CLAIMED)


class Task(models.Model):
    """One unit of work for an agent: a ``(type, version)`` and its data.

    Lifecycle: pending → claimed → completed | failed; pending → expired (TTL);
    pending | claimed → cancelled; claimed → pending again when its agent is lost
    or its execution timeout passes while attempts remain, else failed.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        CLAIMED = "claimed", "Claimed"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    TERMINAL = frozenset(
        {State.COMPLETED, State.FAILED, State.CANCELLED, State.EXPIRED}
    )
    OPEN = frozenset({State.PENDING, State.CLAIMED})

    uuid = models.UUIDField("task id", unique=True, default=uuid.uuid4)
    test_id = models.UUIDField(null=True, blank=True, db_index=True)
    type = models.CharField(max_length=100)
    version = models.IntegerField()
    data = models.JSONField(default=dict, blank=True, validators=[validate_json_object])
    priority = models.IntegerField(
        default=0, help_text="Higher first; equal priorities go oldest first."
    )
    required_labels = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_labels],
        help_text="Only agents having all of these labels may take the task.",
    )
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING, db_index=True
    )
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        help_text="The agent holding (or that last held) the task.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    result = models.JSONField(null=True, blank=True, editable=False)
    error = models.TextField(blank=True, editable=False)
    attempts = models.PositiveIntegerField(default=0, editable=False)
    max_attempts = models.PositiveIntegerField(
        default=default_max_attempts,
        validators=[MinValueValidator(1)],
        help_text="Claims allowed: a task whose agent is lost or times out is "
        "handed out again while attempts remain.",
    )
    ttl = models.PositiveIntegerField(
        "TTL (s)",
        default=default_ttl,
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Seconds within which an agent must claim the task, else it "
        "expires. Empty: it waits forever.",
    )
    timeout = models.PositiveIntegerField(
        "execution timeout (s)",
        default=default_timeout,
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Seconds within which a claimed task must finish. Empty: no limit.",
    )
    # Derived from ttl and timeout when the task is queued and claimed; indexed, so
    # the cleanup finds what is due without scanning.
    expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    deadline_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The claim query: pending tasks of a type, best first.
            models.Index(
                fields=["type", "version", "-priority", "created_at", "id"],
                name="fleet_task_claim_idx",
                condition=Q(state="pending"),
            ),
            models.Index(
                fields=["expires_at"],
                name="fleet_task_expiry_idx",
                condition=Q(state="pending"),
            ),
            models.Index(
                fields=["deadline_at"],
                name="fleet_task_deadline_idx",
                condition=Q(state="claimed"),
            ),
            models.Index(fields=["agent", "state"]),
            models.Index(fields=["state", "finished_at"]),
        ]
        permissions = [("cancel_task", "Can cancel and requeue tasks")]

    def __str__(self) -> str:
        return f"{self.type} v{self.version} ({self.uuid})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL

    def expiry_from(self, now: datetime) -> datetime | None:
        """The TTL deadline of this task (re)entering the queue at ``now``."""
        return now + timedelta(seconds=self.ttl) if self.ttl else None

    def _apply(self, allowed: Q, values: dict) -> bool:
        """One conditional UPDATE; on success the values are applied to ``self``."""
        done = Task.objects.filter(allowed, pk=self.pk).update(**values) == 1
        if done:
            for name, value in values.items():
                setattr(self, name, value)
        return done

    def complete(self, result: dict, *, agent: Agent | None = None) -> bool:
        """A claimed task's result arrived (from ``agent``, when it is known)."""
        return self._finish(self.State.COMPLETED, agent=agent, result=result)

    complete.alters_data = True

    def fail(self, error: str, *, agent: Agent | None = None) -> bool:
        """A claimed task's agent reported an error."""
        return self._finish(self.State.FAILED, agent=agent, error=error)

    fail.alters_data = True

    def _finish(self, state: str, *, agent: Agent | None, **fields) -> bool:
        allowed = Q(state=self.State.CLAIMED)
        if agent is not None:
            allowed &= Q(agent=agent)
        values = {
            "state": state,
            "finished_at": timezone.now(),
            "deadline_at": None,
            **fields,
        }
        return self._apply(allowed, values)

    def cancel(self) -> bool:
        """Cancel a pending or claimed task; a result arriving later is discarded."""
        return self._apply(
            Q(state__in=self.OPEN),
            {
                "state": self.State.CANCELLED,
                "finished_at": timezone.now(),
                "expires_at": None,
                "deadline_at": None,
            },
        )

    cancel.alters_data = True

    def requeue(self) -> bool:
        """Put a claimed, failed, expired or cancelled task back in the queue, with
        its attempts counted afresh (an operator's decision)."""
        return self._apply(
            ~Q(state__in=[self.State.PENDING, self.State.COMPLETED]),
            {
                "state": self.State.PENDING,
                "agent": None,
                "claimed_at": None,
                "finished_at": None,
                "deadline_at": None,
                "expires_at": self.expiry_from(timezone.now()),
                "result": None,
                "error": "",
                "attempts": 0,
            },
        )

    requeue.alters_data = True

    def same_outcome(self, *, data: dict | None, error: str | None) -> bool:
        """True when a result posted again is the one already recorded."""
        if self.state == self.State.COMPLETED:
            return error is None and data == self.result
        if self.state == self.State.FAILED:
            return data is None and error == self.error
        return False


def release_claimed(
    tasks: models.QuerySet, *, now: datetime, error: str
) -> tuple[int, int]:
    """Claimed tasks whose agent is gone: back to pending while attempts remain,
    otherwise failed with ``error``. Returns ``(requeued, failed)``."""
    claimed = tasks.filter(state=Task.State.CLAIMED)
    requeued = claimed.filter(attempts__lt=F("max_attempts"), ttl__isnull=True).update(
        state=Task.State.PENDING,
        agent=None,
        claimed_at=None,
        deadline_at=None,
        expires_at=None,
    )
    # A task with a TTL gets a new TTL window from now: it is waiting again.
    requeued_ttl = 0
    for task in claimed.filter(attempts__lt=F("max_attempts"), ttl__isnull=False).only(
        "pk", "ttl"
    ):
        requeued_ttl += Task.objects.filter(
            pk=task.pk, state=Task.State.CLAIMED
        ).update(
            state=Task.State.PENDING,
            agent=None,
            claimed_at=None,
            deadline_at=None,
            expires_at=task.expiry_from(now),
        )
    failed = claimed.update(
        state=Task.State.FAILED, finished_at=now, deadline_at=None, error=error
    )
    return requeued + requeued_ttl, failed
