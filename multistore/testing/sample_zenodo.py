"""A tiny, deterministic Zenodo record shaped like the forest disturbance atlas (13333034).

``france.zip`` holds uint8 GeoTIFFs in EPSG:3035 (one of them multi-band,
one band per year, like ``annual_disturbances_1985_2023_france.tif``); a
float32 canopy height GeoTIFF sits at the record root. Same bytes on every
call, so checksums are stable.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from .zenodo_emulator import ZenodoEmulator

SAMPLE_RECORD_ID = "13333034"
SAMPLE_CRS = "EPSG:3035"
SAMPLE_ORIGIN = (3480000.0, 2405000.0)  # west, north: near Bordeaux
SAMPLE_RES = 100.0
SAMPLE_SIZE = 64
FIRST_YEAR = 1985
# A fixed date keeps zip member headers, hence the archive's md5, stable.
_ZIP_DATE = (2024, 8, 16, 0, 0, 0)


def geotiff_bytes(
    data: np.ndarray,
    *,
    crs: str = SAMPLE_CRS,
    origin: tuple[float, float] = SAMPLE_ORIGIN,
    res: float = SAMPLE_RES,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> bytes:
    """A deflate-compressed, tiled GeoTIFF of ``data`` (2-D or ``band, y, x``) in memory."""
    bands = data[np.newaxis] if data.ndim == 2 else data
    count, height, width = bands.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=bands.dtype.name,
        crs=crs,
        transform=from_origin(origin[0], origin[1], res, res),
        nodata=nodata,
        compress="deflate",
        tiled=True,
        blockxsize=32,
        blockysize=32,
    )
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(bands)
            for i, text in enumerate(descriptions or (), start=1):
                dst.set_band_description(i, text)
        return memory.read()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), content)
    return buffer.getvalue()


def zarr_zip_bytes(dataset: xr.Dataset, *, zarr_format: int = 2) -> bytes:
    """``dataset`` as a zipped Zarr (ZipStore layout: metadata at the top of the zip).

    Entries are stored uncompressed, as Zarr chunks are already compressed
    and range readers can then read a chunk's bytes directly.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data.zarr"
        dataset.to_zarr(root, zarr_format=zarr_format, consolidated=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_ZIP_DATE)
                zf.writestr(info, path.read_bytes())
        return buffer.getvalue()


def annual_disturbances(years: int = 39, size: int = SAMPLE_SIZE) -> np.ndarray:
    """uint8 (year, y, x): 1 where a disturbance happened that year, 255 (nodata) off-forest."""
    yy, xx = np.mgrid[0:size, 0:size]
    data = np.zeros((years, size, size), dtype=np.uint8)
    for i in range(years):
        data[i] = ((xx + 3 * yy + 7 * i) % 41 == 0).astype(np.uint8)
    data[:, : size // 8, : size // 8] = 255
    return data


def forest_mask(size: int = SAMPLE_SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((xx // 8 + yy // 8) % 3 != 0).astype(np.uint8)
    mask[: size // 8, : size // 8] = 255
    return mask


def canopy_height(size: int = SAMPLE_SIZE) -> np.ndarray:
    """float32 metres, -9999 as nodata in one corner."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    height = (5.0 + 0.25 * xx + 0.1 * yy).astype(np.float32)
    height[-(size // 8) :, -(size // 8) :] = -9999.0
    return height


def sample_record_files(years: int = 39, size: int = SAMPLE_SIZE) -> dict[str, bytes]:
    """File key -> content of the sample record."""
    last_year = FIRST_YEAR + years - 1
    annual = f"annual_disturbances_{FIRST_YEAR}_{last_year}_france.tif"
    france = zip_bytes(
        {
            annual: geotiff_bytes(
                annual_disturbances(years, size),
                nodata=255,
                descriptions=[str(FIRST_YEAR + i) for i in range(years)],
            ),
            "forest_mask_france.tif": geotiff_bytes(forest_mask(size), nodata=255),
            "number_disturbances_france.tif": geotiff_bytes(
                annual_disturbances(years, size)
                .sum(axis=0, dtype=np.uint16)
                .clip(0, 254)
                .astype(np.uint8),
                nodata=255,
            ),
        }
    )
    return {
        "france.zip": france,
        "planet_canopy_height_30m_v0.1.tif": geotiff_bytes(canopy_height(size), nodata=-9999.0),
    }


@contextmanager
def serve_sample_record(record_id: str = SAMPLE_RECORD_ID) -> Iterator[str]:
    """Serve the sample record from a local Zenodo emulator; yields its base URL."""
    with ZenodoEmulator() as emulator:
        emulator.add_record(
            record_id,
            sample_record_files(),
            title="European forest disturbance atlas (tiny offline sample)",
        )
        yield emulator.base_url
