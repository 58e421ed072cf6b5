"""Reading a DICOM file that may hold PHI without pydicom repeating its values.

pydicom warns about the values it finds odd, quoting them, and logs each warning too
(`pydicom.misc.warn_and_log`): a patient's name in a malformed element would reach a service's
log. While a thread reads such a file, both are silenced, and only in that thread: requests are
decoded in executor threads side by side, and other threads' logging must go on.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class _WhileReading(logging.Filter):
    """Drops pydicom's log records in a thread while that thread reads a file."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.reading, "active", False)


_PYDICOM_LOG = logging.getLogger("pydicom")
_SILENCED = _WhileReading()


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Neither pydicom's warnings nor its log records leave while the block runs."""
    _PYDICOM_LOG.addFilter(_SILENCED)  # a logger holds a filter once, however often added
    _SILENCED.reading.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _SILENCED.reading.active = False
