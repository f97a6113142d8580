"""The fleet management API (DRF), mounted under /api/v1/fleet/."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

router = SimpleRouter(trailing_slash="/?")
