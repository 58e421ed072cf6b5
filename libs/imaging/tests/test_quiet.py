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


def test_other_threads_keep_their_warnings_and_the_filters_are_untouched() -> None:
    reading, warned = threading.Event(), threading.Event()

    def other() -> None:
        reading.wait(5)
        warnings.warn("from another thread", UserWarning, stacklevel=1)
        warned.set()

    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        thread = threading.Thread(target=other)
        thread.start()
        with quiet_pydicom():
            assert warnings.filters == filters
            reading.set()
            warned.wait(5)
            warn_and_log(f"odd value {PHI}")
        thread.join(5)
    assert [str(w.message) for w in heard] == ["from another thread"]
