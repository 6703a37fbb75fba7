"""``load_config``: YAML file or mapping -> validated, resolved, frozen ``Config``.

Steps: parse (line numbers kept) -> interpolate ``${VAR}`` -> JSON Schema ->
cross-checks -> build dataclasses. Problems from all steps are collected and
raised together as one ``ConfigError``; loading has no side effects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError, Problem
from .build import build_config
from .checks import cross_check
from .envvars import interpolate
from .locations import Location, render_location
from .model import Config
from .redact import collect_secret_values, redact_text
from .validate import schema_problems
from .yamlsource import parse_yaml

_LAST_PART = re.compile(r"(\.[^.\[]+|\[\d+\])$")


def load_config(
    source: str | os.PathLike | Mapping,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate a config; raise ``ConfigError`` listing every problem found.

    ``source`` is a YAML file path or an already parsed mapping. Relative paths
    in the config resolve against ``base_dir``: by default the file's folder
    (the working directory for mappings). ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    path: Path | None = None
    lines: dict[Location, int] = {}
    early: list[Problem] = []
    if isinstance(source, Mapping):
        data = source
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(source).expanduser().absolute()
        base = Path(base_dir) if base_dir is not None else path.parent
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError([Problem("", f"cannot read {path}: {reason}")], str(path)) from None
        parsed = parse_yaml(text, str(path))
        if parsed.problems and not isinstance(parsed.data, Mapping):
            raise ConfigError(parsed.problems, str(path))
        data, lines, early = parsed.data, parsed.lines, parsed.problems
    base = base.expanduser().absolute()

    interpolated = interpolate(data, env)
    data = interpolated.value
    secrets = set(interpolated.secret_values)
    if isinstance(data, Mapping) and isinstance(data.get("data_stores"), list):
        for store in data["data_stores"]:
            if isinstance(store, Mapping):
                secrets |= collect_secret_values(store.get("store_params", {}))

    located = schema_problems(data)
    located += cross_check(data, base, (loc for loc, _ in located))
    problems = [*early, *interpolated.problems, *(p for _, p in located)]
    if problems:
        line_of = {render_location(k): v for k, v in lines.items()}
        raise ConfigError(
            [_finish(p, line_of, secrets) for p in problems], str(path) if path else None
        )
    return build_config(data, base, path, frozenset(secrets))


def _finish(problem: Problem, line_of: dict[str, int], secrets: set[str]) -> Problem:
    """Add the YAML line where possible; never let a secret value into a message."""
    line = _line_of(problem.location, line_of)
    message = f"{problem.message} (line {line})" if line else problem.message
    return Problem(problem.location, redact_text(message, secrets))


def _line_of(location: str, lines: dict[str, int]) -> int | None:
    """Line of ``location``, else of its closest parent that has one."""
    while location:
        if location in lines:
            return lines[location]
        parent = _LAST_PART.sub("", location)
        if parent == location:  # a top-level key
            return None
        location = parent
    return None
