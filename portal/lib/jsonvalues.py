"""Validation of JSON values before they reach a database's JSON column."""

from __future__ import annotations

import json
import math
import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# A \uXXXX escape of a UTF-16 surrogate: json.loads turns a pair into one
# character but leaves a lone one in the string, which no database can store
# (UTF-8 cannot encode it): a 500 at the INSERT unless refused when parsing.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")
UNPAIRED_SURROGATE = (
    "unpaired surrogate escape (e.g. \\ud800) in a string: not valid Unicode"
)


class UnpairedSurrogateError(ValueError):
    pass


def _has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(map(_has_surrogate, value.keys())) or any(
            map(_has_surrogate, value.values())
        )
    if isinstance(value, list):
        return any(map(_has_surrogate, value))
    return False


def _check_surrogates(raw: bytes | str, value: object) -> None:
    """Raise ``UnpairedSurrogateError`` when ``value``, parsed from ``raw``, holds
    a lone surrogate; the walk happens only when ``raw`` has such an escape."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if _SURROGATE_ESCAPE.search(raw) and _has_surrogate(value):
        raise UnpairedSurrogateError(UNPAIRED_SURROGATE)


def loads(raw: bytes | str, **kwargs) -> object:
    """``json.loads`` for request bodies: every refusal is a ``ValueError``, also
    a body nested too deeply for the parser's recursion and a lone surrogate
    escape (``UnpairedSurrogateError``)."""
    try:
        value = json.loads(raw, **kwargs)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    _check_surrogates(raw, value)
    return value


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


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_json_object(raw: str) -> dict:
    """A JSON object typed in a form; empty means ``{}``.

    Python's json accepts NaN and Infinity, and "\\u0000" escapes; the database's
    JSON columns refuse them, so they are form errors here rather than a 500 on
    save.
    """
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise ValidationError(f"Not valid JSON: {exc}.", code="invalid") from exc
    if not isinstance(value, dict):
        raise ValidationError(
            'Must be a JSON object, e.g. {"key": "value"}.', code="invalid"
        )
    validate_json_object(value)
    return value


def validate_recipients(value: object) -> None:
    """A JSON list of email addresses."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Must be a list of email addresses.")
    for address in value:
        try:
            validate_email(address)
        except ValidationError as exc:
            raise ValidationError(f"{address!r} is not an email address.") from exc
