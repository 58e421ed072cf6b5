"""What one request may make the server decode, checked before anything is decoded.

A picture costs what its header says, not what its bytes weigh: a 78 KB PNG of 9000 x 9000
black pixels decodes to 81 MB (324 MB as RGBA), then to a padded square and two resized
copies. So the limits are on pixels, as ingest's are, with the same defaults and the same
rule (`fetalmlops.imaging.limits`): a file ingest would refuse is refused here too, from its
header, before Pillow or pydicom decodes a pixel. And a request is a number of images: each
becomes a preprocessed tensor however small it arrived (a 68-byte PNG is a 600 KB float tensor
at 224 pixels), so the count is bounded too, and so is the number of requests decoded at once
(`DecodeSlots`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fetalmlops.imaging.limits import over_limits
from fetalmlops.inference.refusals import TooLarge


@dataclass(frozen=True)
class ImageLimits:
    """The settings' limits (`InferenceSettings`), with the same defaults as ingest's."""

    max_pixels: int = 40_000_000  # all frames together
    max_side: int = 8192
    max_frames: int = 1000
    max_request_images: int = 64


def check_size(rows: int, columns: int, frames: int, limits: ImageLimits) -> None:
    """Raises TooLarge when an image of this geometry is over the limits; ValueError when it
    declares no pixel at all."""
    if min(rows, columns, frames) < 1:
        raise ValueError("the image declares no pixels")
    reason = over_limits(
        rows,
        columns,
        frames,
        max_side=limits.max_side,
        max_frames=limits.max_frames,
        max_pixels=limits.max_pixels,
    )
    if reason is not None:
        raise TooLarge(reason)


def check_count(images: int, limits: ImageLimits) -> None:
    if images > limits.max_request_images:
        raise TooLarge(f"the request holds more than {limits.max_request_images} images")


class DecodeSlots:
    """At most ``slots`` decodes at once, on whichever event loop serves the requests.

    A semaphore belongs to the loop it first waited on; tests and a restarted server run
    requests on new loops, so a new loop gets a new semaphore (as `MicroBatcher._bind` does).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(slots)

    def slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.slots)
        return self._semaphore
