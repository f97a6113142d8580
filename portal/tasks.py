"""django-q2 task functions of the portal itself; thin wrappers around services."""

from __future__ import annotations

from portal import services


def prune_task_history() -> int:
    return services.task_history_prune()


def run_tick(name: str) -> object:
    return services.tick_call(name=name)
