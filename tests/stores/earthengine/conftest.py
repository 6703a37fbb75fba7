"""Fixtures for the Earth Engine store tests: the offline emulator (see tests/servers/earthengine.py)."""

from tests.servers.earthengine import ee_emulator, ee_offline  # noqa: F401
