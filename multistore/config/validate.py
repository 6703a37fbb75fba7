"""JSON Schema validation with every error rendered as a short, located ``Problem``.

jsonschema's own messages dump whole objects (``{...} is not valid under any of
the given schemas``); here each error is turned into one line that says where
and what, e.g. ``datasets[0]: 'data_id' is a required property``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from ..errors import Problem
from .locations import Location, render_location

SCHEMA_RESOURCE = "schema.json"
_MAX_REPR = 60

# JSON type names as users read them.
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}


@cache
def _schema_text() -> str:
    return resources.files("multistore.config").joinpath(SCHEMA_RESOURCE).read_text("utf-8")


def config_schema() -> dict:
    """The JSON Schema of multistore configs (package data; a fresh copy per call)."""
    return json.loads(_schema_text())


@cache
def _config_validator() -> jsonschema.protocols.Validator:
    schema = config_schema()
    cls = _with_tuple_arrays(jsonschema.Draft202012Validator)
    cls = jsonschema.validators.extend(cls, validators={"x-finite": _finite})
    return cls(schema)


def _finite(
    _validator: Any, wanted: Any, instance: Any, _schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``x-finite``: YAML can write ``.nan`` and ``.inf``, JSON cannot, so no standard keyword
    rejects them (NaN even passes ``minimum``: every comparison with it is false)."""
    if wanted and isinstance(instance, float) and not math.isfinite(instance):
        yield ValidationError(f"must be a finite number, got {instance!r}")


@cache
def _with_tuple_arrays(base: type) -> type:
    """Accept tuples as arrays: mappings passed in by Python callers may hold them."""
    checker = base.TYPE_CHECKER.redefine(
        "array", lambda _checker, instance: isinstance(instance, list | tuple)
    )
    return jsonschema.validators.extend(base, type_checker=checker)


def schema_problems(instance: Any) -> list[tuple[Location, Problem]]:
    """Every violation of the config schema, as (location path, problem)."""
    errors = _config_validator().iter_errors(instance)
    return list(render_errors(errors))


def validate_against(
    schema: Mapping[str, Any], instance: Any, prefix: Location = ()
) -> list[tuple[Location, Problem]]:
    """Validate ``instance`` against a foreign schema (e.g. an xcube store's params, Draft 7)."""
    schema = copy.deepcopy(dict(schema))
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = _with_tuple_arrays(base)(schema, format_checker=base.FORMAT_CHECKER)
    return list(render_errors(validator.iter_errors(instance), prefix))


def render_errors(
    errors: Iterable[ValidationError], prefix: Location = ()
) -> Iterator[tuple[Location, Problem]]:
    seen: set[tuple[str, str]] = set()
    for error in sorted(errors, key=_path_order):
        for path, message in _render(error):
            path = (*prefix, *path)
            key = (render_location(path), message)
            if key not in seen:
                seen.add(key)
                yield path, Problem(*key)


def _path_order(error: ValidationError) -> list[str]:
    return [f"{p:09d}" if isinstance(p, int) else str(p) for p in error.absolute_path]


def _render(error: ValidationError) -> Iterator[tuple[Location, str]]:
    path: Location = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    instance = error.instance
    kind = error.validator

    if kind == "additionalProperties" and isinstance(instance, Mapping):
        allowed = sorted(schema.get("properties", {}))
        patterns = schema.get("patternProperties", {})
        for key in instance:
            if key in allowed or any(_matches(p, key) for p in patterns):
                continue
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            yield (*path, key), f"unknown key {key!r}{hint}"
        return
    if kind in ("anyOf", "oneOf"):
        yield from _render_alternatives(error, schema)
        return
    if "errorMessage" in schema and kind in ("pattern", "not"):
        yield path, str(schema["errorMessage"])
        return
    yield path, _message(error, schema)


def _render_alternatives(
    error: ValidationError, schema: Mapping[str, Any]
) -> Iterator[tuple[Location, str]]:
    """Explain the branch whose type fits the value; otherwise list what was expected."""
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        subs
        for subs in by_branch.values()
        if not any(s.validator == "type" and not s.relative_path for s in subs)
    ]
    if len(fitting) == 1:
        for sub in fitting[0]:
            yield from _render(sub)
        return
    path: Location = tuple(error.absolute_path)
    if "errorMessage" in schema:
        yield path, f"{schema['errorMessage']}, got {_describe(error.instance)}"
        return
    expected = sorted(
        {
            _TYPE_NAMES.get(t, t)
            for subs in by_branch.values()
            for s in subs
            if s.validator == "type" and not s.relative_path
            for t in _as_list(s.validator_value)
        }
    )
    if expected and not fitting:
        yield path, f"expected {' or '.join(expected)}, got {_describe(error.instance)}"
    else:
        yield path, f"{_describe(error.instance)} does not match any allowed form"


def _message(error: ValidationError, schema: Mapping[str, Any]) -> str:
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        return error.message  # "'data_id' is a required property"
    if kind == "type":
        expected = " or ".join(_TYPE_NAMES.get(t, t) for t in _as_list(value))
        return f"expected {expected}, got {_describe(instance)}"
    if kind == "enum":
        supported = ", ".join(str(v) for v in value)
        reason = schema.get("x-unsupported", {}).get(instance) if _hashable(instance) else None
        if reason:
            return f"{instance!r} is {reason} (supported: {supported})"
        return f"{_short(instance)} is not one of: {supported}"
    if kind == "const":
        return f"must be {value!r}, got {_short(instance)}"
    if kind == "minimum":
        return f"must be >= {value}, got {_short(instance)}"
    if kind == "exclusiveMinimum":
        return f"must be > {value}, got {_short(instance)}"
    if kind == "maximum":
        return f"must be <= {value}, got {_short(instance)}"
    if kind == "exclusiveMaximum":
        return f"must be < {value}, got {_short(instance)}"
    if kind in ("minItems", "maxItems"):
        low, high = schema.get("minItems"), schema.get("maxItems")
        count = len(instance)
        if low is not None and low == high:
            return f"must have exactly {low} items, got {count}"
        if kind == "minItems":
            return (
                "must not be empty"
                if value == 1
                else f"must have at least {value} items, got {count}"
            )
        return f"must have at most {value} items, got {count}"
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if kind == "pattern" and isinstance(schema.get("title"), str):
        return f"{_short(instance)} is not {schema['title']}"
    if kind == "pattern":
        return f"{_short(instance)} does not match the pattern {value}"
    if kind == "uniqueItems":
        return "items must be unique"
    if kind == "format":
        return f"{_short(instance)} is not a valid {value}"
    if kind == "x-finite":
        return error.message
    if kind in ("not", "false"):
        return "is not allowed here"
    # Never cut a message short: a cut could leave part of a secret that redaction misses.
    return error.message if len(error.message) <= 200 else f"does not satisfy {kind!r}"


def _describe(instance: Any) -> str:
    """``string 'abc'``, ``a mapping``: the kind of a value, plus the value if it is short."""
    if isinstance(instance, Mapping):
        return "a mapping"
    if isinstance(instance, list | tuple):
        return f"a list of {len(instance)} item(s)"
    if instance is None:
        return "null"
    if isinstance(instance, bool):
        return f"boolean {str(instance).lower()}"
    if isinstance(instance, int | float):
        return f"number {instance!r}"
    if isinstance(instance, str):
        return f"string {_short(instance)}"
    return type(instance).__name__


def _short(instance: Any) -> str:
    """The value's repr if short; never a truncated one (it could hold part of a secret)."""
    text = repr(instance)
    if len(text) <= _MAX_REPR:
        return text
    return f"a {type(instance).__name__} of length {len(instance)}" if _sized(instance) else "value"


def _sized(instance: Any) -> bool:
    return isinstance(instance, str | bytes | list | tuple | Mapping)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _matches(pattern: str, key: Any) -> bool:
    return isinstance(key, str) and re.search(pattern, key) is not None
