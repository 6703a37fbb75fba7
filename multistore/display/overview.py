"""xcube-multistore's notebook overview: ``display_config()``'s per-dataset table and
``display_geolocations()``'s map of every cube's extent (secrets redacted throughout)."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import Config, redact

COLUMNS = ("dataset", "store", "data_id", "grid_mapping", "format", "output")


def config_rows(config: Config) -> list[dict[str, str]]:
    """One row per dataset (one per variable of multi-source datasets), from the redacted
    config, so interpolated secrets never reach the table."""
    raw = redact(dict(config.raw), config.secret_values)
    rows = []
    for ds, built in zip(raw.get("datasets", []), config.datasets, strict=True):
        sources = ds.get("variables") or [ds]
        for i, src in enumerate(sources):
            name = (
                built.identifier
                if "variables" not in ds
                else f"{built.identifier}.{src.get('identifier')}"
            )
            rows.append(
                {
                    "dataset": name,
                    "store": str(src.get("store", "")),
                    "data_id": str(src.get("data_id", "")),
                    "grid_mapping": str(ds.get("grid_mapping") or "(source grid)")
                    if i == 0
                    else "",
                    "format": built.format_id if i == 0 else "",
                    "output": built.file_name if i == 0 else "",
                }
            )
    return rows


def table_text(rows: Sequence[Mapping[str, str]]) -> str:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in COLUMNS))
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)


def table_html(rows: Sequence[Mapping[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in COLUMNS) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def extents(config: Config, open_cube: Any = None) -> dict[str, tuple[float, float, float, float]]:
    """Lon/lat extent (west, south, east, north) of each cube whose grid is known: its grid
    mapping (followed through datasets borrowing another's grid), else its written cube
    when ``open_cube(identifier)`` can open it. East may exceed 180 for wrapping grids."""
    from pyproj import Transformer

    from ..grid import TargetGrid

    out: dict[str, tuple[float, float, float, float]] = {}
    for ds in config.datasets:
        name, seen = ds.grid_mapping, {ds.identifier}
        while name is not None and config.grid_mapping(name) is None and name not in seen:
            seen.add(name)
            other = config.dataset(name)
            name = other.grid_mapping if other is not None else None
        gm = config.grid_mapping(name) if name is not None else None
        if gm is not None:
            bounds, crs = gm.bbox, gm.crs
        elif open_cube is not None:
            try:
                grid = TargetGrid.from_dataset(open_cube(ds.identifier))
            except Exception:  # not generated yet: nothing to show
                continue
            bounds, crs = grid.bounds, grid.crs
        else:
            continue
        t = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        if t.source_crs.is_geographic:
            out[ds.identifier] = tuple(float(v) for v in bounds)
        else:
            out[ds.identifier] = tuple(
                float(v) for v in t.transform_bounds(*bounds, densify_pts=21)
            )
    return out


def interactive_map(boxes: Mapping[str, tuple[float, float, float, float]]) -> Any | None:
    """A folium (else ipyleaflet) map with one rectangle per cube; None if neither is installed."""
    try:
        import folium
    except ImportError:
        folium = None
    if folium is not None:
        m = folium.Map(tiles="OpenStreetMap")
        for name, (w, s, e, n) in boxes.items():
            folium.Rectangle([[s, w], [n, e]], tooltip=name, fill=True, fill_opacity=0.2).add_to(m)
        if boxes:
            m.fit_bounds(_fit(boxes))
        return m
    try:
        import ipyleaflet
    except ImportError:
        return None
    m = ipyleaflet.Map()
    for name, (w, s, e, n) in boxes.items():
        m.add(ipyleaflet.Rectangle(bounds=((s, w), (n, e)), name=name))
    if boxes:
        m.fit_bounds(_fit(boxes))
    return m


def _fit(boxes: Mapping[str, tuple[float, float, float, float]]) -> list[list[float]]:
    w = min(b[0] for b in boxes.values())
    s = min(b[1] for b in boxes.values())
    e = max(b[2] for b in boxes.values())
    n = max(b[3] for b in boxes.values())
    return [[s, w], [n, e]]


def png_map(boxes: Mapping[str, tuple[float, float, float, float]]) -> bytes:
    """A static PNG of the extents on lon/lat axes (no basemap: works offline)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, (name, (w, s, e, n)) in enumerate(boxes.items()):
        color = f"C{i % 10}"
        ax.add_patch(Rectangle((w, s), e - w, n - s, fill=True, alpha=0.25, color=color))
        ax.add_patch(Rectangle((w, s), e - w, n - s, fill=False, color=color))
        ax.annotate(name, (w, n), fontsize=8, va="bottom", color=color)
    if boxes:
        (s, w), (n, e) = _fit(boxes)
        pad = max(e - w, n - s, 0.01) * 0.1
        ax.set_xlim(w - pad, e + pad)
        ax.set_ylim(s - pad, n + pad)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_aspect("equal", adjustable="datalim")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
