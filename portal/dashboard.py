"""The operations dashboard: a registry of panels that the apps contribute.

An app registers panels in ``<app>/dashboard.py`` (imported at start-up):

    @dashboard.register("packages", title="Packages",
                        permission="packages_app.view_packagerun", order=10)
    def packages_panel(request, now) -> dashboard.PanelData: ...

A panel gives counts, a short list of what needs attention and, where a picture
says more, a small inline SVG chart made with ``bar_chart()``. The admin index
renders every panel the user may see, and refreshes them in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

logger = logging.getLogger(__name__)

TONES = ("ok", "warn", "bad", "info", "muted")
TONE_COLOURS = {
    "ok": "#2e7d32",
    "warn": "#ef8f00",
    "bad": "#c62828",
    "info": "#1565c0",
    "muted": "#9e9e9e",
}


@dataclass
class Count:
    label: str
    value: object
    tone: str = "info"
    url: str = ""


@dataclass
class Attention:
    text: str
    url: str = ""
    tone: str = "warn"
    when: datetime | None = None


@dataclass
class PanelData:
    counts: list[Count] = field(default_factory=list)
    attention: list[Attention] = field(default_factory=list)
    chart: SafeString | str = ""
    empty_text: str = "Nothing needs attention."
    links: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Panel:
    key: str
    title: str
    render: Callable[..., PanelData]
    permission: str | None = None
    order: int = 100


_registry: dict[str, Panel] = {}


def register(
    key: str, *, title: str, permission: str | None = None, order: int = 100
) -> Callable[[Callable[..., PanelData]], Callable[..., PanelData]]:
    """Decorator adding a panel; registering the same key again replaces it."""

    def decorator(func: Callable[..., PanelData]) -> Callable[..., PanelData]:
        _registry[key] = Panel(
            key=key, title=title, render=func, permission=permission, order=order
        )
        return func

    return decorator


def panels() -> list[Panel]:
    return sorted(_registry.values(), key=lambda p: (p.order, p.key))


def render_panels(request) -> list[dict]:
    """Every panel the user may see, rendered; one broken panel never hides the rest."""
    now = timezone.now()
    rendered = []
    for panel in panels():
        if panel.permission and not request.user.has_perm(panel.permission):
            continue
        try:
            data = panel.render(request, now)
            error = ""
        except Exception:
            logger.exception("dashboard panel %s failed", panel.key)
            data, error = PanelData(), "This panel could not be loaded; see the logs."
        rendered.append(
            {"key": panel.key, "title": panel.title, "data": data, "error": error}
        )
    return rendered


def format_age(seconds: float) -> str:
    """``42 s``, ``3 min``, ``5 h``, ``2 d``: how long ago, or how long waiting."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        return f"{whole // 3600} h"
    return f"{whole // 86400} d"


def badge(
    value: str | None, label: str, tone: str, *, data: str = "status"
) -> SafeString:
    """A coloured pill (``portal-badge`` in portal/admin.css) for a status or state;
    ``data-<data>`` carries the raw value for scripts and tests. An em dash for none."""
    if not value:
        return mark_safe("—")
    return format_html(
        '<span class="portal-badge portal-badge-{}" data-{}="{}">{}</span>',
        tone,
        data,
        value,
        label,
    )


def bar_chart(
    buckets: list[dict[str, int]],
    *,
    labels: list[str] | None = None,
    title: str = "",
    width: int = 240,
    height: int = 48,
) -> SafeString:
    """A small stacked bar chart as inline SVG.

    ``buckets`` is one dict per bar, mapping a tone (``ok``, ``bad``...) to a count,
    oldest first. ``labels`` become each bar's tooltip.
    """
    if not buckets:
        return mark_safe("")
    peak = max((sum(b.values()) for b in buckets), default=0) or 1
    slot = width / len(buckets)
    bar_w = max(1.0, slot - 1)
    rects = []
    for i, bucket in enumerate(buckets):
        y = float(height)
        label = labels[i] if labels and i < len(labels) else ""
        parts = ", ".join(f"{tone} {n}" for tone, n in bucket.items() if n)
        for tone in TONES:
            n = bucket.get(tone, 0)
            if not n:
                continue
            h = max(1.0, height * n / peak)
            y -= h
            rects.append(
                (
                    f"{i * slot:.1f}",
                    f"{y:.1f}",
                    f"{bar_w:.1f}",
                    f"{h:.1f}",
                    TONE_COLOURS[tone],
                    f"{label}: {parts}" if label else parts,
                )
            )
    body = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        rects,
    )
    return format_html(
        '<svg class="portal-chart" role="img" aria-label="{}" width="{}" height="{}" '
        'viewBox="0 0 {} {}" xmlns="http://www.w3.org/2000/svg">'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/>{}</svg>',
        title,
        width,
        height,
        width,
        height,
        height - 0.5,
        width,
        height - 0.5,
        body,
    )
