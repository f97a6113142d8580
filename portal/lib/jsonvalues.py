"""Validation of JSON values before they reach a database's JSON column."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError


def json_problem(value: object) -> str:
    """What a database's JSON column would refuse: NUL characters, NaN, Infinity."""
    if isinstance(value, str):
        return "NUL characters (\\u0000) are not allowed." if "\x00" in value else ""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a JSON number."
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return ""
    return next((p for p in map(json_problem, items) if p), "")


def validate_json_object(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Must be a JSON object, e.g. {"key": "value"}.')
    if problem := json_problem(value):
        raise ValidationError(problem)
