"""The size limits an image is held to before a pixel of it is decoded, on every channel.

A picture costs what its header says, not what its bytes weigh: a 78 KB PNG of 9000 x 9000
black pixels decodes to 81 MB. Ingest refuses such a file on its way in, and the inference
service in a request, both from the header and by this one rule. A reason names the limit that
was passed, never the geometry the header declared: a width or a frame count is the sender's
content like any other.
"""

from __future__ import annotations


def over_limits(
    rows: int, columns: int, frames: int, *, max_side: int, max_frames: int, max_pixels: int
) -> str | None:
    """Which limit an image of this geometry passes, as its reason; None within them all.
    ``max_pixels`` counts every frame."""
    if max(rows, columns) > max_side:
        return f"the image is over the limit of {max_side} pixels a side"
    if frames > max_frames:
        return f"the image is over the limit of {max_frames} frames"
    if rows * columns * frames > max_pixels:
        return f"the image is over the limit of {max_pixels} pixels"
    return None
