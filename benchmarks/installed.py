"""Time the code as an installed package runs: with its bytecode compiled.

pip compiles what it installs, but not an editable checkout or a baseline
worktree; where ``PYTHONDONTWRITEBYTECODE`` is set (containers, CI), every
``multistore`` child would compile the package again (about 0.15 s of CPU).
"""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_package(*roots: str | Path) -> None:
    """Compile ``multistore/`` under each checkout root (unchanged files are skipped)."""
    for root in roots:
        compileall.compile_dir(Path(root) / "multistore", quiet=1)
