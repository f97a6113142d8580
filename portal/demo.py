"""Demo data for the quick start: a registry that every app's ``demo.py`` extends.

    @demo.register("fleet", order=30)
    def seed(stdout) -> None: ...

Seeders must be idempotent: ``seed_demo`` runs on every ``make run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from portal import services
from portal.roles import OPERATORS, VIEWERS


@dataclass
class Seeder:
    key: str
    func: Callable
    order: int


_seeders: dict[str, Seeder] = {}


def register(key: str, *, order: int = 100) -> Callable[[Callable], Callable]:
    def decorator(func: Callable) -> Callable:
        _seeders[key] = Seeder(key=key, func=func, order=order)
        return func

    return decorator


def seeders() -> list[Seeder]:
    return sorted(_seeders.values(), key=lambda s: (s.order, s.key))


@register("portal", order=0)
def seed_logins(stdout) -> None:
    """One login per role, so the quick start shows what each role can do."""
    for username, groups, superuser in (
        ("admin", [], True),
        ("operator", [OPERATORS], False),
        ("viewer", [VIEWERS], False),
    ):
        _, password = services.login_ensure(
            username=username, superuser=superuser, groups=groups
        )
        role = "superuser" if superuser else groups[0]
        stdout.write(f"  login {username:<8} password {password}  ({role})\n")
