"""Fleet test helpers: protocol bodies and a JSON poster."""

from __future__ import annotations

import json
import uuid

import pytest

from fleet import services


def poll_body(**overrides) -> dict:
    body = {
        "protocol": 1,
        "agent_id": str(uuid.uuid4()),
        "agent_name": "Python Agent 1.0",
        "agent_time": "2026-12-04T10:00:00+00:00",
        "agent_capabilities": {"wait": {"version": 1}},
        "max_tasks": 2,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def post_json(client, path: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json", **extra)


@pytest.fixture
def open_bpms(settings):
    settings.FLEET_OPEN_BPMS = True


@pytest.fixture
def make_task(db):
    def make(task_type: str = "wait", version: int = 1, **kwargs):
        kwargs.setdefault("data", {"time": 1})
        return services.task_create(task_type=task_type, version=version, **kwargs)

    return make
