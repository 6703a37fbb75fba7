"""``${VAR}`` / ``${VAR:-default}`` interpolation of every string in a parsed config.

Interpolation happens on parsed values (never on YAML text), so a variable's
value can never change the structure of the config. Values of variables whose
name looks secret are remembered so they can be redacted later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Problem
from .locations import Location, render_location

# `$${` (escape), a `${...}` reference, or a `${` that is never closed.
_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?$", re.DOTALL)
SECRET_NAME_PARTS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")


def is_secret_name(name: str) -> bool:
    """Whether a variable name suggests its value must never be shown."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


@dataclass
class Interpolation:
    """Result of interpolating a whole config."""

    value: Any
    problems: list[Problem] = field(default_factory=list)
    secret_values: set[str] = field(default_factory=set)


def interpolate(obj: Any, env: Mapping[str, str]) -> Interpolation:
    """A copy of ``obj`` with variable references in all string values replaced.

    Mapping keys are not interpolated (they are structure, not values).
    """
    result = Interpolation(value=None)
    result.value = _walk(obj, (), env, result)
    return result


def _walk(obj: Any, path: Location, env: Mapping[str, str], result: Interpolation) -> Any:
    if isinstance(obj, str):
        return _interpolate_string(obj, path, env, result)
    if isinstance(obj, Mapping):
        return {key: _walk(value, (*path, key), env, result) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_walk(value, (*path, i), env, result) for i, value in enumerate(obj)]
    return obj


def _interpolate_string(
    text: str, path: Location, env: Mapping[str, str], result: Interpolation
) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        if match.group(1) is None:
            result.problems.append(
                Problem(render_location(path), "unclosed '${' (write '$${' for a literal '${')")
            )
            return token
        ref = _REFERENCE.match(match.group(1))
        if ref is None:
            result.problems.append(
                Problem(
                    render_location(path),
                    f"invalid variable reference {token!r}: use ${{NAME}} or ${{NAME:-default}}",
                )
            )
            return token
        name, default = ref.group("name"), ref.group("default")
        value = env.get(name)
        if not value and default is not None:  # like the shell: unset or empty
            value = default
        if value is None:
            result.problems.append(
                Problem(render_location(path), f"environment variable {name!r} is not set")
            )
            return token
        if value and is_secret_name(name):
            result.secret_values.add(value)
        return value

    return _TOKEN.sub(replace, text)
