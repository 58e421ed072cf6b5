"""pydicom neither warns nor logs while a file that may hold PHI is read, in that thread only."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest
from pydicom.misc import warn_and_log

from fetalmlops.imaging.quiet import quiet_pydicom

PHI = "DOE^JANE 19840203"


def test_a_complaint_quoting_a_value_is_silenced_inside_and_heard_outside(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pydicom")
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        with quiet_pydicom():
            warn_and_log(f"odd value {PHI}")
        assert PHI not in caplog.text and heard == []
        warn_and_log(f"odd value {PHI}")
    assert PHI in caplog.text and len(heard) == 1


def test_other_threads_keep_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pydicom")
    reading, logged = threading.Event(), threading.Event()

    def other() -> None:
        reading.wait(5)
        logging.getLogger("pydicom").warning("from another thread")
        logged.set()

    thread = threading.Thread(target=other)
    thread.start()
    with quiet_pydicom():
        reading.set()
        logged.wait(5)
    thread.join(5)
    assert "from another thread" in caplog.text
