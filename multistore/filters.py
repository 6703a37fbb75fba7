"""Property filters: ``property op value`` comparisons and a CQL2 subset.

``prop op value`` (``eo:cloud_cover < 20``) is the one grammar every store
understands; stores translate a ``Comparison`` into their own query language
(CQL2 for STAC APIs, pyarrow masks for the item index, ``ee.Filter`` for Earth
Engine). Where a store filters items itself (STAC), a filter may also be CQL2
text (``eo:cloud_cover < 20 AND platform = 'sentinel-2a'``, parsed by the
``cql2`` library) or CQL2-JSON; both are checked against the subset evaluated
here (comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, IS NULL), so a filter that
could not be applied is an error before anything runs, never a silent
"no items".
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cql2

from .errors import FilterError

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}
# the value is ONE token: a number, a quoted string without its own quote inside, or a bare
# word; anything longer ("20 AND platform = 'x'") is not a single comparison
_VALUE = r"""'[^']*'|"[^"]*"|[^\s'"()]+"""
_COMPARISON = re.compile(rf"^\s*([A-Za-z_][\w:.\-]*)\s*(<=|>=|==|!=|<|>|=)\s*({_VALUE})\s*$")
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


# -- the CQL2 subset evaluated on items --------------------------------------------------

# CQL2 comparison operator -> Comparison op (and back)
_CQL2_TO_OP = {"=": "=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
OP_TO_CQL2 = {v: k for k, v in _CQL2_TO_OP.items()}
_SWAPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_LOGICAL = ("and", "or", "not")
SUPPORTED = (*_CQL2_TO_OP, *_LOGICAL, "in", "between", "like", "isNull")
# top-level item fields that CQL2 names like properties (STAC API filter extension)
_ITEM_FIELDS = ("id", "collection")
_HELP = (
    "filters are 'property op value' (op one of < <= > >= = !=) or CQL2 text/JSON with "
    "comparisons, AND, OR, NOT, IN, BETWEEN, LIKE and IS NULL; strings in single quotes"
)


def comparison_to_cql2(c: Comparison) -> dict[str, Any]:
    """``c`` as CQL2-JSON."""
    return {"op": OP_TO_CQL2[c.op], "args": [{"property": c.prop}, c.value]}


def parse_filter(value: Any, where: str | None = None) -> dict[str, Any]:
    """A filter as checked CQL2-JSON (only the supported subset).

    ``value`` is a ``prop op value`` string (the simple grammar wins when the
    whole string is one comparison, so unquoted and double-quoted strings keep
    working), CQL2 text, or a CQL2-JSON mapping. Raises ``FilterError``
    prefixed with ``where`` for syntax errors and unsupported operators.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, str):
        simple = _COMPARISON.match(value)
        if simple is not None and simple.group(3)[0] not in "<>=!":
            return comparison_to_cql2(parse_comparison(value, where))
        try:
            expr = cql2.parse_text(value).to_json()
        except cql2.ParseError as e:
            raise FilterError(
                f"{prefix}cannot parse filter {value!r}: {_syntax_error(value, e)}; {_HELP}"
            ) from None
        _check(expr, value, prefix)
        return _normalise(expr)
    if isinstance(value, Mapping):
        text = json.dumps(value, default=str)
        _check(value, text, prefix)
        try:
            cql2.Expr(dict(value)).validate()
        # cql2 raises ValidationError, and a plain Exception for JSON it cannot map
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FilterError(f"{prefix}invalid CQL2-JSON filter {text}: {first}") from None
        return _normalise(value)
    raise FilterError(f"{prefix}a filter must be a string or CQL2-JSON, got {value!r}")


def _syntax_error(text: str, error: Exception) -> str:
    m = re.search(r"-->\s*\d+:(\d+)", str(error))
    if m is None:
        return "syntax error"
    col = int(m.group(1))
    rest = text[col - 1 :][:20]
    return f"syntax error at column {col} ({rest!r})" if rest else "syntax error: it ends too early"


def _is_property(arg: Any) -> bool:
    return (
        isinstance(arg, Mapping) and set(arg) == {"property"} and isinstance(arg["property"], str)
    )


def _is_literal(arg: Any) -> bool:
    return isinstance(arg, str | int | float | bool) and not (
        isinstance(arg, float) and arg != arg  # NaN
    )


def _check(expr: Any, text: str, prefix: str) -> None:
    """Raise ``FilterError`` unless ``expr`` is within the supported subset."""

    def fail(message: str) -> None:
        raise FilterError(f"{prefix}filter {text}: {message}")

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping) or "op" not in node:
            fail(f"expected a condition, got {json.dumps(node, default=str)}")
        op, args = node.get("op"), node.get("args")
        if not isinstance(args, list):
            fail(f"operator {op!r} needs a list of args")
        if op not in SUPPORTED:
            hint = " (use bbox / time_range for space and time)" if isinstance(op, str) and op[:2] in ("s_", "t_") else ""  # fmt: skip
            fail(f"operator {op!r} is not supported{hint}; supported: {', '.join(SUPPORTED)}")
        if op in ("and", "or"):
            if not args:
                fail(f"{op!r} needs at least one condition")
            for a in args:
                walk(a)
        elif op == "not":
            if len(args) != 1:
                fail("'not' takes exactly one condition")
            walk(args[0])
        elif op == "isNull":
            if len(args) != 1 or not _is_property(args[0]):
                fail("IS NULL applies to one property")
        elif op in _CQL2_TO_OP:
            if len(args) != 2:
                fail(f"{op!r} compares two values")
            a, b = args
            if _is_property(a) and _is_property(b):
                fail(
                    f"compares property {a['property']!r} with property {b['property']!r}; "
                    f"to compare with the string, quote it in single quotes ('{b['property']}')"
                )
            if not ((_is_property(a) and _is_literal(b)) or (_is_literal(a) and _is_property(b))):
                fail(f"{op!r} compares a property with a number, string or boolean")
        elif op == "in":
            if (
                len(args) != 2
                or not _is_property(args[0])
                or not isinstance(args[1], list)
                or not all(_is_literal(v) for v in args[1])
            ):
                fail("IN needs a property and a list of numbers, strings or booleans")
        elif op == "between":
            if (
                len(args) != 3
                or not _is_property(args[0])
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in args[1:])
            ):
                fail("BETWEEN needs a property and two numbers")
        elif op == "like" and (
            len(args) != 2 or not _is_property(args[0]) or not isinstance(args[1], str)
        ):
            fail("LIKE needs a property and a pattern string")

    walk(expr)


def _normalise(expr: Any) -> Any:
    """Plain dicts; literals on the right; integral floats as ints (cql2 reads 20 as 20.0)."""
    if isinstance(expr, Mapping):
        op = expr.get("op")
        if op is None:  # a property reference
            return dict(expr)
        args = [_normalise(a) for a in expr.get("args", [])]
        if op in _SWAPPED and len(args) == 2 and not _is_property(args[0]):
            op, args = _SWAPPED[op], [args[1], args[0]]
        return {"op": op, "args": args}
    if isinstance(expr, list):
        return [_normalise(v) for v in expr]
    if isinstance(expr, float) and expr.is_integer() and abs(expr) < 2**53:
        return int(expr)
    return expr


def as_comparison(expr: Mapping[str, Any]) -> Comparison | None:
    """The ``Comparison`` a normalised CQL2 comparison is, else None."""
    op, args = expr.get("op"), expr.get("args") or []
    if op in _CQL2_TO_OP and len(args) == 2 and _is_property(args[0]) and _is_literal(args[1]):
        return Comparison(args[0]["property"], _CQL2_TO_OP[op], args[1])
    return None


def conjuncts(expr: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The conditions of a top-level AND (flattened), or ``[expr]``."""
    if expr.get("op") == "and":
        return [c for a in expr["args"] for c in conjuncts(a)]
    return [expr]


def matches(expr: Mapping[str, Any], item: Mapping[str, Any]) -> bool:
    """Whether the STAC item (GeoJSON dict) satisfies the checked CQL2-JSON ``expr``.

    SQL's three-valued logic: a missing property or a type mismatch makes a
    condition unknown, and NOT of unknown is still unknown (no match).
    """
    return _eval(expr, item) is True


def _value(arg: Any, item: Mapping[str, Any]) -> Any:
    if _is_property(arg):
        name = arg["property"]
        props = item.get("properties") or {}
        if name in props:
            return props[name]
        return item.get(name) if name in _ITEM_FIELDS else None
    return arg


def _eval(expr: Mapping[str, Any], item: Mapping[str, Any]) -> bool | None:
    op, args = expr["op"], expr["args"]
    if op in ("and", "or"):
        results = [_eval(a, item) for a in args]
        decisive = op == "or"  # True decides an OR, False an AND
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    if op == "not":
        inner = _eval(args[0], item)
        return None if inner is None else not inner
    actual = _value(args[0], item)
    if op == "isNull":
        return actual is None
    if actual is None:
        return None
    try:
        if op in _CQL2_TO_OP:
            return bool(OPS[_CQL2_TO_OP[op]](actual, _value(args[1], item)))
        if op == "in":
            return actual in args[1]
        if op == "between":
            return bool(args[1] <= actual <= args[2])
        if op == "like":
            return isinstance(actual, str) and _like(args[1]).fullmatch(actual) is not None
    except TypeError:  # e.g. a string property compared with a number
        return None
    raise FilterError(f"operator {op!r} is not supported")  # unreachable after _check


def _like(pattern: str) -> re.Pattern[str]:
    """CQL2 LIKE: ``%`` any run, ``_`` one character, ``\\`` escapes the next one."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def parse_filters(value: Any, where: str | None = None) -> list[dict[str, Any]]:
    """The ``filter`` open param (a string, a list of strings, or CQL2-JSON) as checked CQL2-JSON
    expressions, ANDed by the caller; list entries are located as ``where[i]``."""
    if isinstance(value, str | Mapping):
        return [parse_filter(value, where)]
    if isinstance(value, Sequence):
        return [parse_filter(v, f"{where}[{i}]" if where else None) for i, v in enumerate(value)]
    prefix = f"{where}: " if where else ""
    raise FilterError(
        f"{prefix}filter must be a string, a list of strings or CQL2-JSON, got {value!r}"
    )
