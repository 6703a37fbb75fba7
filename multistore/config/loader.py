"""``load_config``: YAML file or mapping -> validated, resolved, frozen ``Config``.

Steps: parse (line numbers kept) -> interpolate ``${VAR}`` -> JSON Schema ->
cross-checks -> build dataclasses. Problems from all steps are collected and
raised together as one ``ConfigError``; loading has no side effects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem
from .build import build_config
from .checks import cross_check
from .envvars import interpolate
from .locations import Location, render_location
from .model import Config
from .redact import collect_secret_values, redact_text, secret_strings
from .validate import schema_problems
from .yamlsource import parse_yaml

_LAST_PART = re.compile(r"(\.[^.\[]+|\[\d+\])$")
# A config is a few KB; anything far larger is a wrong file (or /dev/zero), read only this far.
MAX_CONFIG_BYTES = 10 * 2**20
# Larger integers cannot reach NumPy, GDAL or dask (C longs) and are never meant.
MAX_INT_BITS = 64


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
        text = _read_config_text(path)
        parsed = parse_yaml(text, str(path))
        if parsed.problems and not isinstance(parsed.data, Mapping):
            raise ConfigError([_at_document(p, path, 1) for p in parsed.problems], str(path))
        data, lines, early = parsed.data, parsed.lines, parsed.problems
    base = base.expanduser().absolute()

    interpolated = interpolate(data, env)
    data = interpolated.value
    secrets = set(interpolated.secret_values) | secret_strings(data)  # ?token=... in data ids
    if isinstance(data, Mapping) and isinstance(data.get("data_stores"), list):
        for store in data["data_stores"]:
            if isinstance(store, Mapping):
                secrets |= collect_secret_values(store.get("store_params", {}))

    problems = [*early, *interpolated.problems]
    too_large = list(_oversized_integers(data))
    if too_large:  # nothing downstream is safe with them (float() overflows, C longs)
        problems += too_large
    else:
        located = schema_problems(data)
        located += cross_check(data, base, (loc for loc, _ in located))
        problems += [p for _, p in located]
    if problems:
        line_of = {render_location(k): v for k, v in lines.items()}
        raise ConfigError(
            [_finish(p, line_of, secrets, path) for p in problems], str(path) if path else None
        )
    return build_config(data, base, path, frozenset(secrets))


def _read_config_text(path: Path) -> str:
    """The file's text, read at most ``MAX_CONFIG_BYTES`` (+1 to notice more) into memory."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                [
                    Problem(
                        str(path),
                        f"larger than {MAX_CONFIG_BYTES // 2**20} MB: not a multistore config",
                    )
                ],
                str(path),
            )
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([Problem(str(path), f"cannot read: {reason}")], str(path)) from None


def _oversized_integers(data: Any) -> Iterator[Problem]:
    """Integers beyond 64 bits anywhere in the config (an iterative walk: no recursion limit)."""
    stack: list[tuple[Any, Location]] = [(data, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, Mapping):
            stack.extend((v, (*where, k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list | tuple):
            stack.extend((v, (*where, i)) for i, v in reversed(list(enumerate(value))))
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value.bit_length() > MAX_INT_BITS
        ):
            yield Problem(
                render_location(where),
                f"an integer of {value.bit_length()} bits is out of range "
                f"(at most {MAX_INT_BITS} bits)",
            )


def _at_document(problem: Problem, path: Path | None, line: int | None) -> Problem:
    """Problems of the whole document (no key path) are located at the file and line."""
    if problem.location and not problem.location.startswith("line "):
        return problem
    where = problem.location or (f"line {line}" if line else "")
    if path is None:
        return Problem(where or "<config>", problem.message)
    return Problem(f"{path}: {where}" if where else str(path), problem.message)


def _finish(
    problem: Problem, line_of: dict[str, int], secrets: set[str], path: Path | None
) -> Problem:
    """Add the YAML line where possible; never let a secret value into a message."""
    if not problem.location:
        problem = _at_document(problem, path, line_of.get("") if path else None)
        return Problem(problem.location, redact_text(problem.message, secrets))
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
