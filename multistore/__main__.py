"""``python -m multistore`` = the ``multistore`` command."""

from .cli import main

main()
