"""Show a run's per-dataset status: live table in a terminal or notebook, log lines, JSON lines.

Every display is a listener on a ``StatusBoard``; ``open_display`` picks one
by mode (``auto`` = notebook in Jupyter, rich table on a terminal, log lines
otherwise).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from ..status import StatusBoard
from .base import Display


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def resolve_mode(mode: str, stream: TextIO | None = None) -> str:
    if mode != "auto":
        return mode
    if in_notebook():
        return "notebook"
    stream = stream or sys.stderr
    return "rich" if stream.isatty() else "log"


def make_display(mode: str, title: str = "multistore", stream: TextIO | None = None) -> Display:
    mode = resolve_mode(mode, stream)
    if mode == "rich":
        from .terminal import RichDisplay

        return RichDisplay(title, stream)
    if mode == "notebook":
        from .notebook import NotebookDisplay

        return NotebookDisplay(title)
    if mode == "json":
        from .jsonlines import JsonDisplay

        return JsonDisplay(stream or sys.stdout)
    if mode == "log":
        from .plain import LogDisplay

        return LogDisplay(stream or sys.stderr)
    return Display()


@contextmanager
def live_display(
    board: StatusBoard, mode: str, title: str = "multistore", stream: TextIO | None = None
) -> Iterator[Display]:
    display = make_display(mode, title, stream)
    board.subscribe(display.on_update)
    display.start(board)
    try:
        yield display
    finally:
        display.stop(board)
