"""Generators of STAC catalogs for tests, demos and benchmarks.

``make_tiny_catalog`` writes a self-contained static catalog of tiny COGs that
exercises what real archives do to a cube builder: two UTM zones, overlapping
footprints, two acquisitions on one solar day, nodata borders, cloud-cover and
platform properties, a classification asset for masking and relative asset hrefs.
``make_synthetic_catalog`` writes a large JSON-only catalog (no pixels) for
index benchmarks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyproj
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.io import MemoryFile

STAC_VERSION = "1.1.0"
TINY_COLLECTION = "tiny-s2"
FAR_COLLECTION = "tiny-far"
SYNTHETIC_COLLECTION = "synthetic"

# Sentinel-2 scene classes used by the tiny catalog's SCL asset.
SCL_VEGETATION = 4
SCL_CLOUD_SHADOW = 3
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9

_SIZE = 64  # pixels per side of every tiny COG
_RES = 20.0  # metres


@dataclass(frozen=True)
class TinyItem:
    """What the generator wrote for one item (for building reference mosaics)."""

    id: str
    collection: str
    epsg: int
    transform: Affine
    datetime: datetime
    cloud_cover: float
    assets: dict[str, Path]  # asset key -> COG path


@dataclass(frozen=True)
class TinyCatalog:
    root: Path
    catalog_path: Path
    items: dict[str, TinyItem] = field(default_factory=dict)

    def collection_path(self, collection_id: str) -> Path:
        return self.root / collection_id / "collection.json"


# (id, collection, epsg, centre lon, centre lat, datetime, cloud cover)
_TINY_ITEMS = (
    ("A-32632-0601", TINY_COLLECTION, 32632, 11.995, 48.000, "2024-06-01T10:00:00Z", 12.0),
    ("B-32633-0601", TINY_COLLECTION, 32633, 12.005, 48.003, "2024-06-01T10:00:30Z", 3.0),
    ("C-32632-0611", TINY_COLLECTION, 32632, 11.995, 48.000, "2024-06-11T10:00:00Z", 80.0),
    ("D-32633-0611", TINY_COLLECTION, 32633, 12.005, 48.003, "2024-06-11T10:00:00Z", 5.0),
    ("E-32632-0621", TINY_COLLECTION, 32632, 11.995, 48.000, "2024-06-21T10:00:00Z", 15.0),
    ("F-32634-0601", FAR_COLLECTION, 32634, 21.000, 10.000, "2024-06-01T09:00:00Z", 1.0),
)

_BANDS = {
    # asset key -> (dtype, nodata, roles)
    "B04": ("uint16", 0, ["data"]),
    "B08": ("uint16", 0, ["data"]),
    "SCL": ("uint8", 0, ["data"]),
}


def tiny_pixels(index: int, asset: str) -> np.ndarray:
    """The pixel values of asset ``asset`` of the ``index``-th tiny item."""
    rows, cols = np.mgrid[0:_SIZE, 0:_SIZE]
    if asset == "B04":
        data = (1000 * (index + 1) + rows + cols).astype("uint16")
        data[:, :8] = 0  # a nodata border, filled by overlapping items when mosaicking
    elif asset == "B08":
        data = (500 * (index + 1) + 2 * rows).astype("uint16")
        data[-6:, :] = 0
    elif asset == "SCL":
        data = np.full((_SIZE, _SIZE), SCL_VEGETATION, dtype="uint8")
        data[10:20, 30:50] = SCL_CLOUD_MEDIUM
        data[40:50, 20:40] = SCL_CLOUD_HIGH
        data[25:30, 5:15] = SCL_CLOUD_SHADOW
    else:
        raise KeyError(asset)
    return data


def _write_cog(path: Path, data: np.ndarray, epsg: int, transform: Affine, nodata: float) -> None:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "nodata": nodata,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
        with mem.open() as src:
            rasterio.shutil.copy(src, path, driver="COG", BLOCKSIZE=32, OVERVIEWS="NONE")


def _utm_transform(epsg: int, lon: float, lat: float) -> Affine:
    x, y = pyproj.Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    half = _SIZE * _RES / 2
    west = round((x - half) / _RES) * _RES
    north = round((y + half) / _RES) * _RES
    return Affine(_RES, 0.0, west, 0.0, -_RES, north)


def _footprint(epsg: int, transform: Affine) -> tuple[list[float], dict]:
    to_ll = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True)
    corners = [transform @ (c, r) for c, r in ((0, 0), (_SIZE, 0), (_SIZE, _SIZE), (0, _SIZE))]
    ring = [list(to_ll.transform(x, y)) for x, y in corners]
    ring.append(ring[0])
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return bbox, {"type": "Polygon", "coordinates": [ring]}


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


def _collection_doc(
    cid: str, bboxes: list[list[float]], times: list[str], links: list, raster: bool = True
) -> dict:
    bbox = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": cid,
        "description": f"tiny test collection {cid}",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[min(times), max(times)]]},
        },
        "item_assets": {
            key: {
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": roles,
                **({"raster:bands": [{"data_type": dtype, "nodata": nodata}]} if raster else {}),
            }
            for key, (dtype, nodata, roles) in _BANDS.items()
        },
        "links": links,
    }


def make_tiny_catalog(root: str | os.PathLike, *, raster_extension: bool = True) -> TinyCatalog:
    """Write the tiny static catalog under ``root`` (``root/catalog.json``).

    Layout: catalog -> collection -> one sub-catalog per date -> items, every
    link and asset href relative. ``raster_extension=False`` leaves out
    ``raster:bands`` (dtype and nodata are then only in the COG headers), as
    many real catalogs do.
    """
    root = Path(root)
    infos: dict[str, TinyItem] = {}
    by_collection: dict[str, dict[str, list[dict]]] = {}
    for index, (iid, cid, epsg, lon, lat, when, cc) in enumerate(_TINY_ITEMS):
        transform = _utm_transform(epsg, lon, lat)
        bbox, geometry = _footprint(epsg, transform)
        date = when[:10]
        item_dir = root / cid / date / iid
        item_dir.mkdir(parents=True, exist_ok=True)
        assets, paths = {}, {}
        for key, (dtype, nodata, roles) in _BANDS.items():
            path = item_dir / f"{key}.tif"
            _write_cog(path, tiny_pixels(index, key), epsg, transform, nodata)
            paths[key] = path
            assets[key] = {
                "href": f"./{key}.tif",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": roles,
                "proj:shape": [_SIZE, _SIZE],
                "proj:transform": list(transform)[:6],
            }
            if raster_extension:
                assets[key]["raster:bands"] = [
                    {"data_type": dtype, "nodata": nodata, "spatial_resolution": _RES}
                ]
        doc = {
            "type": "Feature",
            "stac_version": STAC_VERSION,
            "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            ]
            + (
                ["https://stac-extensions.github.io/raster/v1.1.0/schema.json"]
                if raster_extension
                else []
            ),
            "id": iid,
            "collection": cid,
            "bbox": bbox,
            "geometry": geometry,
            "properties": {
                "datetime": when,
                "eo:cloud_cover": cc,
                "proj:code": f"EPSG:{epsg}",
                "platform": "sentinel-2a" if index % 2 == 0 else "sentinel-2b",
            },
            "assets": assets,
            "links": [
                {"rel": "root", "href": "../../../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
                {"rel": "collection", "href": "../../collection.json", "type": "application/json"},
            ],
        }
        _write_json(item_dir / f"{iid}.json", doc)
        by_collection.setdefault(cid, {}).setdefault(date, []).append(doc)
        infos[iid] = TinyItem(
            id=iid,
            collection=cid,
            epsg=epsg,
            transform=transform,
            datetime=datetime.fromisoformat(when.replace("Z", "+00:00")),
            cloud_cover=cc,
            assets=paths,
        )

    root_links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for cid, dates in by_collection.items():
        coll_links = [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        ]
        for date, docs in dates.items():
            sub_links = [
                {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            ]
            sub_links += [
                {
                    "rel": "item",
                    "href": f"./{d['id']}/{d['id']}.json",
                    "type": "application/geo+json",
                }
                for d in docs
            ]
            _write_json(
                root / cid / date / "catalog.json",
                {
                    "type": "Catalog",
                    "stac_version": STAC_VERSION,
                    "id": f"{cid}-{date}",
                    "description": f"acquisitions of {date}",
                    "links": sub_links,
                },
            )
            coll_links.append(
                {"rel": "child", "href": f"./{date}/catalog.json", "type": "application/json"}
            )
        all_docs = [d for docs in dates.values() for d in docs]
        _write_json(
            root / cid / "collection.json",
            _collection_doc(
                cid,
                [d["bbox"] for d in all_docs],
                [d["properties"]["datetime"] for d in all_docs],
                coll_links,
                raster_extension,
            ),
        )
        root_links.append(
            {"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"}
        )
    _write_json(
        root / "catalog.json",
        {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": "tiny-catalog",
            "description": "tiny static catalog of COGs for multistore tests",
            "links": root_links,
        },
    )
    return TinyCatalog(root=root, catalog_path=root / "catalog.json", items=infos)


def item_collection_with_base(catalog: TinyCatalog, base_url: str, collection_id: str) -> dict:
    """The items of one collection as an ItemCollection whose asset hrefs are absolute.

    ``base_url`` replaces the catalog root (e.g. ``http://127.0.0.1:PORT`` or
    ``s3://bucket``): STAC API servers need absolute asset hrefs.
    """
    features = []
    for info in catalog.items.values():
        if info.collection != collection_id:
            continue
        date = info.datetime.strftime("%Y-%m-%d")
        rel = f"{collection_id}/{date}/{info.id}"
        doc = json.loads((catalog.root / rel / f"{info.id}.json").read_text())
        for asset in doc["assets"].values():
            asset["href"] = f"{base_url.rstrip('/')}/{rel}/{asset['href'].removeprefix('./')}"
        doc["links"] = []
        features.append(doc)
    return {"type": "FeatureCollection", "features": features}


def make_synthetic_catalog(
    root: str | os.PathLike,
    n_items: int,
    *,
    items_per_catalog: int = 1000,
    seed: int = 0,
    bbox: Sequence[float] = (-10.0, 35.0, 30.0, 60.0),
    start: str = "2020-01-01",
    days: int = 4 * 365,
) -> Path:
    """Write a JSON-only catalog of ``n_items`` small square items (no pixels).

    Layout: catalog -> collection -> ``part-NNNN`` sub-catalogs of
    ``items_per_catalog`` items each. Items carry ``eo:cloud_cover`` and a
    CORINE-like label fraction ``clc_412`` (as RapidAI4EO does). Returns the
    root catalog path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    west, south, east, north = bbox
    lons = rng.uniform(west, east - 0.05, n_items)
    lats = rng.uniform(south, north - 0.05, n_items)
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    offsets = rng.uniform(0, days * 86400.0, n_items)
    cloud = rng.uniform(0, 100, n_items).round(2)
    clc = rng.uniform(0, 1, n_items).round(4)
    coll_dir = root / SYNTHETIC_COLLECTION
    n_parts = max(1, -(-n_items // items_per_catalog))
    coll_links = [
        {"rel": "root", "href": "../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
    ]
    for part in range(n_parts):
        name = f"part-{part:04d}"
        part_dir = coll_dir / name
        part_dir.mkdir(parents=True, exist_ok=True)
        links = [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
        ]
        for i in range(part * items_per_catalog, min(n_items, (part + 1) * items_per_catalog)):
            iid = f"syn-{i:07d}"
            w, s = float(lons[i]), float(lats[i])
            e, n = w + 0.02, s + 0.02
            when = (t0 + timedelta(seconds=float(offsets[i]))).strftime("%Y-%m-%dT%H:%M:%SZ")
            doc = {
                "type": "Feature",
                "stac_version": STAC_VERSION,
                "id": iid,
                "collection": SYNTHETIC_COLLECTION,
                "bbox": [w, s, e, n],
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
                },
                "properties": {
                    "datetime": when,
                    "eo:cloud_cover": float(cloud[i]),
                    "clc_412": float(clc[i]),
                },
                "assets": {
                    "image": {"href": f"./{iid}.tif", "type": "image/tiff", "roles": ["data"]}
                },
                "links": [
                    {"rel": "parent", "href": "./catalog.json", "type": "application/json"},
                ],
            }
            (part_dir / f"{iid}.json").write_text(json.dumps(doc))
            links.append({"rel": "item", "href": f"./{iid}.json", "type": "application/geo+json"})
        _write_json(
            part_dir / "catalog.json",
            {
                "type": "Catalog",
                "stac_version": STAC_VERSION,
                "id": name,
                "description": name,
                "links": links,
            },
        )
        coll_links.append(
            {"rel": "child", "href": f"./{name}/catalog.json", "type": "application/json"}
        )
    end = t0 + timedelta(days=days)
    _write_json(
        coll_dir / "collection.json",
        {
            "type": "Collection",
            "stac_version": STAC_VERSION,
            "id": SYNTHETIC_COLLECTION,
            "description": "synthetic items for index benchmarks",
            "license": "CC0-1.0",
            "extent": {
                "spatial": {"bbox": [list(bbox)]},
                "temporal": {
                    "interval": [
                        [t0.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")]
                    ]
                },
            },
            "links": coll_links,
        },
    )
    _write_json(
        root / "catalog.json",
        {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": "synthetic-catalog",
            "description": "synthetic catalog",
            "links": [
                {"rel": "root", "href": "./catalog.json", "type": "application/json"},
                {
                    "rel": "child",
                    "href": f"./{SYNTHETIC_COLLECTION}/collection.json",
                    "type": "application/json",
                },
            ],
        },
    )
    return root / "catalog.json"
