"""Locations inside a config, rendered the way users read them: ``datasets[2].grid_mapping``."""

from __future__ import annotations

from collections.abc import Iterable

# A path of mapping keys and list indices from the config root.
Location = tuple[str | int, ...]


def render_location(path: Iterable[str | int]) -> str:
    """``("datasets", 2, "grid_mapping")`` -> ``"datasets[2].grid_mapping"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
