"""The collector the config checks report into: located problems, schema-clean parts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Problem
from .locations import Location, render_location


@dataclass
class Checker:
    data: Mapping[str, Any]
    base_dir: Path
    schema_error_paths: set[Location]
    problems: list[tuple[Location, Problem]] = field(default_factory=list)

    def clean(self, path: Location) -> bool:
        """True if the schema found nothing wrong at or below ``path``."""
        n = len(path)
        return not any(p[:n] == path for p in self.schema_error_paths)

    def add(self, path: Location, message: str) -> None:
        self.problems.append((path, Problem(render_location(path), message)))

    def items(self, section: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
        entries = self.data.get(section)
        if isinstance(entries, list):
            for i, entry in enumerate(entries):
                if isinstance(entry, Mapping):
                    yield i, entry


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
