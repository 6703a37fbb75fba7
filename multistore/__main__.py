"""``python -m multistore`` = the ``multistore`` command."""

from .cli import run

run()
