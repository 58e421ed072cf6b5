from __future__ import annotations

import platform

import pytest

from fetalmlops.common.memory import return_large_blocks


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_a_fixed_mmap_threshold() -> None:
    assert return_large_blocks() is True
