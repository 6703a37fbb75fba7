"""A fresh offline Zenodo (``multistore.testing.zenodo_emulator``) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from multistore.testing.zenodo_emulator import ZenodoEmulator


@pytest.fixture
def zenodo() -> Iterator[ZenodoEmulator]:
    """An emulator on 127.0.0.1 with no records yet; add them with ``add_record``."""
    with ZenodoEmulator() as emulator:
        yield emulator
