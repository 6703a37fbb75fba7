"""Keep secret values out of messages, logs and files."""

from __future__ import annotations

import logging
from collections.abc import Iterable

MASK = "***"


class Scrubber:
    """Replaces every known secret value in a text by ``***``."""

    def __init__(self, secret_values: Iterable[str] = ()):
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(
            {v for v in secret_values if v and len(v) >= 4}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


class ScrubbingFilter(logging.Filter):
    """A logging filter that masks secrets in every record passing through a handler."""

    def __init__(self, scrubber: Scrubber):
        super().__init__()
        self._scrub = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        if self._scrub:
            record.msg = self._scrub(record.getMessage())
            record.args = None
        return True
