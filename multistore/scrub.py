"""Keep secret values out of logs: a logging filter around the one ``Masker``."""

from __future__ import annotations

import logging

from .config.redact import Masker

_FORMATTER = logging.Formatter()


class ScrubbingFilter(logging.Filter):
    """Masks secrets in every record: its message, its traceback and its stack."""

    def __init__(self, masker: Masker):
        super().__init__()
        self._mask = masker

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._mask(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            # formatted here, masked, and kept: formatters use exc_text when it is set
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True
