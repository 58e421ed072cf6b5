"""Tests that run a real system program say so: ``@pytest.mark.needs("tesseract")``.

On a machine without the program they are skipped with the Debian package to install and the
target that installs every one of them (`make system-packages`, which `.ci/run` runs, so CI
never skips them).
"""

from __future__ import annotations

import shutil

import pytest

# The program a test runs → the Debian 12 package that brings it.
PACKAGES = {
    "tesseract": "tesseract-ocr",
    "storescu": "dcmtk",
    "echoscu": "dcmtk",
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        for program in marker.args:
            if shutil.which(program) is None:
                package = PACKAGES.get(program, program)
                pytest.skip(f"needs `{program}` (Debian: {package}); run `make system-packages`")
