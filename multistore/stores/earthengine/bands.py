"""Bands of a query: selection by name or pattern, per-image processing (masks,
expressions, hooks), scales, fill values and the sentinels masked pixels get server-side."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, Problem, SourceOpenError
from .query import (
    EE_TYPE,
    BandGroup,
    MaskRule,
    Processing,
)


def select_bands(data_id: str, native: list[str], spec: Any) -> tuple[str, ...]:
    """The bands to fetch: all, a list of names (in that order), or ``{include, exclude}``
    regular expressions matched in full against the native names (native order kept)."""
    if not spec:
        return tuple(native)
    if isinstance(spec, list | tuple):
        missing = [b for b in spec if b not in native]
        if missing:
            raise SourceOpenError(
                f"earthengine: {data_id} has no band(s) {missing}; bands: {native}"
            )
        return tuple(spec)
    patterns = {}
    for key in ("include", "exclude"):
        for i, text in enumerate(spec.get(key) or ()):
            try:
                patterns.setdefault(key, []).append(re.compile(text))
            except re.error as e:
                raise ConfigError(
                    [Problem(f"open_params.bands.{key}[{i}]", f"not a regular expression: {e}")]
                ) from None
    include = patterns.get("include") or [re.compile(".*")]
    exclude = patterns.get("exclude") or []
    picked = tuple(
        b
        for b in native
        if any(p.fullmatch(b) for p in include) and not any(p.fullmatch(b) for p in exclude)
    )
    if not picked:
        raise SourceOpenError(
            f"earthengine: no band of {data_id} matches bands {dict(spec)}; bands: {native}"
        )
    return picked


def image_processing(params: Mapping[str, Any], native: list[str]) -> Processing | None:
    """The per-image processing of the open params, checked against the native bands."""
    import ast

    masks_param = params.get("mask")
    rules = []
    if masks_param:
        for i, m in enumerate([masks_param] if isinstance(masks_param, dict) else masks_param):
            where = "open_params.mask" + ("" if isinstance(masks_param, dict) else f"[{i}]")
            if m["band"] not in native:
                raise ConfigError([Problem(f"{where}.band", f"no band {m['band']!r} in {native}")])
            if not m.get("values") and not m.get("bits"):
                raise ConfigError([Problem(where, "give values or bits to mask")])
            rules.append(
                MaskRule(m["band"], tuple(m.get("values") or ()), tuple(m.get("bits") or ()))
            )
    expressions = []
    known = list(native)
    for name, text in (params.get("expressions") or {}).items():
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as e:
            raise ConfigError(
                [Problem(f"open_params.expressions.{name}", f"not an expression: {e.msg}")]
            ) from None
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        expressions.append((name, text, tuple(b for b in known if b in used)))
        known.append(name)
    hook = params.get("image_hook")
    hook_path = hook_fn = digest = None
    if hook:
        path = Path(hook["module_path"]).expanduser().resolve()
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise ConfigError(
                [Problem("open_params.image_hook.module_path", f"cannot read {path}: {e}")]
            ) from None
        hook_path, hook_fn = str(path), hook["function_name"]
    resampling = params.get("resampling")
    if not (rules or expressions or hook or (resampling and resampling != "nearest")):
        return None
    return Processing(tuple(rules), tuple(expressions), resampling, hook_path, hook_fn, digest)


def scale_pair(value: Any) -> tuple[float, float]:
    if isinstance(value, list | tuple):
        return float(value[0]), float(value[1])
    return float(value), 0.0


def fill_value(band: str, dtype: np.dtype, params: Mapping[str, Any]) -> float | int:
    """The user's fill value, else NaN for floats, the type's max (unsigned) or min (signed)."""
    per_band = params.get("fill_values") or {}
    value = per_band.get(band, params.get("fill_value"))
    if dtype.kind == "f":
        return float("nan") if value is None else float(value)
    info = np.iinfo(dtype)
    if value is None:
        return int(info.max if dtype.kind == "u" else info.min)
    if not float(value).is_integer() or not info.min <= value <= info.max:
        raise ConfigError(
            [
                Problem(
                    f"open_params.fill_values.{band}", f"{value} is not a valid {dtype.name} value"
                )
            ]
        )
    return int(value)


def sentinel(req: np.dtype, fill: float | int | None) -> float | int:
    """The value masked pixels are set to server-side (JSON cannot carry NaN)."""
    if req.kind == "f":
        if fill is not None and not math.isnan(fill):
            return float(fill)
        return float(np.finfo(req).min)
    if fill is not None:
        return int(fill)
    info = np.iinfo(req)
    return int(info.max if req.kind == "u" else info.min)


def band_types(
    bands: Sequence[str],
    native: Mapping[str, str],
    scales: Mapping[str, tuple[float, float]],
    averaged: bool,
    params: Mapping[str, Any],
) -> tuple[dict[str, str], dict[str, str], dict, dict, tuple[BandGroup, ...]]:
    """Per band: the type requested (float when averaged), the output type (float when
    scaled), fill value and sentinel; bands grouped by request type and sentinel."""
    req_dtype: dict[str, str] = {}
    out_dtype: dict[str, str] = {}
    fills: dict[str, float | int] = {}
    sentinels: dict[str, float | int] = {}
    for b in bands:
        nat = np.dtype(native[b])
        req = np.dtype("float64" if nat == np.float64 else "float32") if averaged else nat
        out = np.dtype("float64" if req == np.float64 else "float32") if b in scales else req
        fill = fill_value(b, out, params)
        req_dtype[b], out_dtype[b], fills[b] = req.name, out.name, fill
        sentinels[b] = sentinel(req, None if b in scales else fill)
    groups: dict[tuple[str, float], list[str]] = {}
    for b in bands:
        groups.setdefault((req_dtype[b], sentinels[b]), []).append(b)
    band_groups = tuple(BandGroup(tuple(bs), EE_TYPE[dt], s) for (dt, s), bs in groups.items())
    return req_dtype, out_dtype, fills, sentinels, band_groups


def ee_image(image_id: str) -> Any:
    import ee

    return ee.Image(image_id)
