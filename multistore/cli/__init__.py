"""The ``multistore`` command line: one module per command, registered on one click group."""

from __future__ import annotations

from .main import main, run

__all__ = ["main", "run"]
