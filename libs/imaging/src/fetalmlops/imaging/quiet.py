"""Reading a DICOM file that may hold PHI without pydicom repeating its values.

pydicom warns about the values it finds odd, quoting them, and logs each warning too
(`pydicom.misc.warn_and_log`): a patient's name in a malformed element would reach a service's
log. While a thread reads such a file, both are silenced, and only in that thread: requests are
decoded in executor threads side by side, and other threads' warnings and logging must go on.

``warnings.catch_warnings`` cannot do this: it swaps the process's filter list, so two threads
using it at once restore each other's filters in the wrong order. Instead the warning's last
step, ``warnings.showwarning``, is wrapped once, and the wrapper drops what a reading thread
warns; the filters are never touched.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_READING = threading.local()
_INSTALLING = threading.Lock()


def _reading() -> bool:
    return bool(getattr(_READING, "active", False))


class _WhileReading(logging.Filter):
    """Drops pydicom's log records in a thread while that thread reads a file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _reading()


class _ShownUnlessReading:
    """``warnings.showwarning``, except for a thread that is reading a file."""

    def __init__(self, shown: Any) -> None:
        self.shown = shown

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not _reading():
            self.shown(message, category, filename, lineno, file, line)


_PYDICOM_LOG = logging.getLogger("pydicom")
_SILENCED = _WhileReading()


def _install() -> None:
    """Wraps whatever shows warnings now: a test's recorder, or `logging.captureWarnings`'s
    handler may have replaced the wrapper since the last read."""
    with _INSTALLING:
        _PYDICOM_LOG.addFilter(_SILENCED)  # a logger holds a filter once, however often added
        if not isinstance(warnings.showwarning, _ShownUnlessReading):
            warnings.showwarning = _ShownUnlessReading(warnings.showwarning)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Neither pydicom's warnings nor its log records leave this thread while the block runs."""
    _install()
    outer = _reading()
    _READING.active = True
    try:
        yield
    finally:
        _READING.active = outer
