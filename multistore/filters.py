"""``property op value`` filters (``eo:cloud_cover < 20``), one grammar for every store.

Stores translate a ``Comparison`` into their own query language (CQL2 for STAC
APIs, pyarrow masks for the item index, ``ee.Filter`` for Earth Engine).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FilterError

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}
_COMPARISON = re.compile(r"^\s*([A-Za-z_][\w:.\-]*)\s*(<=|>=|==|!=|<|>|=)\s*(.+?)\s*$")
_NUMBER = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Comparison:
    """``prop op value`` with ``op`` one of ``< <= > >= = !=``."""

    prop: str
    op: str
    value: Any

    def matches(self, properties: Mapping[str, Any]) -> bool:
        actual = properties.get(self.prop)
        if actual is None:
            return False
        try:
            return bool(OPS[self.op](actual, self.value))
        except TypeError:  # e.g. a string property compared with a number
            return False

    def __str__(self) -> str:
        return f"{self.prop} {self.op} {self.value!r}"


def parse_comparison(text: Any, where: str | None = None) -> Comparison:
    """Parse ``prop op value`` (``==`` is accepted for ``=``); values are numbers,
    booleans or strings (quoted or not)."""
    m = _COMPARISON.match(text) if isinstance(text, str) else None
    if m is None or m.group(3)[0] in "<>=!":
        prefix = f"{where}: " if where else ""
        raise FilterError(
            f"{prefix}cannot parse filter {text!r}: expected 'property op value' "
            f"(e.g. 'eo:cloud_cover < 20') with op one of {' '.join(OPS)}"
        )
    prop, op, raw = m.groups()
    return Comparison(prop, "=" if op == "==" else op, _parse_value(raw))


def _parse_value(raw: str) -> Any:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return json.loads(raw) if _NUMBER.fullmatch(raw) else raw
