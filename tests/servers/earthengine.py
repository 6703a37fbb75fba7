"""pytest fixtures: the offline Earth Engine emulator (``tests.servers.ee_emulator``).

The real ``earthengine-api`` client is pointed at it; the deprecated-assets
catalog fetch (a call to Google storage made by ``ee.Initialize``) is patched
out so nothing leaves the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from unittest import mock

import pytest

from tests.servers.ee_emulator import Emulator

# A small pixel grid in Earth Engine's REST form (6 x 4 px at 0.001 deg), for raw requests.
PIXEL_GRID = {
    "dimensions": {"width": 6, "height": 4},
    "affineTransform": {
        "scaleX": 0.001, "shearX": 0, "translateX": 10.0,
        "shearY": 0, "scaleY": -0.001, "translateY": 45.11,
    },
    "crsCode": "EPSG:4326",
}  # fmt: skip


@pytest.fixture
def ee_offline() -> Iterator[None]:
    import ee.deprecation

    with (
        mock.patch.dict(os.environ, {"NO_GCE_CHECK": "true"}),
        mock.patch.object(ee.deprecation, "_FetchDataCatalogStac", return_value={}),
    ):
        yield


@pytest.fixture
def ee_emulator(ee_offline: None) -> Iterator[Emulator]:
    """A fresh emulator per test (no latency, no caps, the real 48 MB limit)."""
    with Emulator() as emu:
        yield emu


def store_params(emu: Emulator, **overrides: object) -> dict[str, object]:
    """Store params pointing the ``earthengine`` store at ``emu`` without credentials."""
    return {
        "url": emu.url,
        "project": "test-project",
        "credentials": "none",
        "backoff_s": 0.01,
        **overrides,
    }
