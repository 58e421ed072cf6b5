"""A planted canary for fuzz runs: files that carry it, the forms a leak of it takes, and a
server's peak memory while it is fuzzed.

The canary stands for PHI a client sends: a name and an MRN in a DICOM header, a PNG text
chunk, a JPEG and a GIF comment, or the bytes of a file that is no image at all. A channel
that repeats any form of it (as text, as a number, in base64 or in hex) quotes the request.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pydicom
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan

# Fifteen characters: its base64 is a prefix of the base64 of any data that begins with it.
CANARY = "CANARY7Doe4Jane"
CANARY_NUMBER = 73195824  # an MRN-like number, where a client sends numbers
CANARY_FORMS = (
    "CANARY7Doe",  # the canary, or any cut or escaped form of it
    str(CANARY_NUMBER),
    base64.b64encode(CANARY.encode()).decode(),
    CANARY.encode().hex()[:12],
)
MIB = 1024 * 1024
HEAVY_AT_ONCE = 16
R = TypeVar("R")


def leaked(text: str) -> list[str]:
    return [form for form in CANARY_FORMS if form in text]


def leaking(texts: Iterable[str]) -> list[str]:
    """The beginnings of the texts (log lines, spans) that hold any form of the canary."""
    return [text[:300] for text in texts if leaked(text)]


@dataclass
class Seen:
    """What a fuzz run's answers were: statuses, 5xx answers, and answers quoting the canary."""

    statuses: Counter[int] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def record(self, what: str, response: httpx.Response, answer: str) -> None:
        """One exchange: ``what`` names the request, ``answer`` is what to search."""
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.errors.append(f"{response.status_code} {what}: {response.text[:200]}")
        found = leaked(answer)
        if found:
            self.leaks.append(f"{found} {response.status_code} {what}: {answer[:300]}")

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


@dataclass(frozen=True)
class Pressure:
    """How long the fuzz took, and the process's memory before it and at its peak."""

    fuzz_s: float
    baseline: int
    peak: int

    def summary(self, seen: Seen, process: str, allowance: int) -> str:
        return (
            f"{seen.sent} requests ({self.fuzz_s:.0f} s of fuzz), statuses "
            f"{dict(sorted(seen.statuses.items()))}; {process} RSS {self.baseline / MIB:.0f} MiB "
            f"warmed up, peak {self.peak / MIB:.0f} MiB "
            f"(bound {(self.baseline + allowance) / MIB:.0f} MiB)"
        )


def fuzz_then_abuse(
    url: str,
    pid: int,
    requests: st.SearchStrategy[R],
    heavy: Sequence[R],
    exchange: Callable[[httpx.Client, R], None],
    examples: int,
) -> Pressure:
    """``examples`` requests drawn from ``requests`` one after another (derandomized, so every
    run sends the same), then ``heavy`` sixteen at a time, each through ``exchange``; the
    server process ``pid``'s resident memory is sampled throughout."""
    baseline = psutil.Process(pid).memory_info().rss
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as http, PeakRss(pid) as rss:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(requests)
        def fuzz(request: R) -> None:
            exchange(http, request)

        fuzz()
        fuzz_s = time.monotonic() - started

        def one(request: R) -> None:
            with httpx.Client(base_url=url, timeout=120) as own:
                exchange(own, request)

        with ThreadPoolExecutor(HEAVY_AT_ONCE) as pool:
            list(pool.map(one, heavy))
    return Pressure(fuzz_s, baseline, rss.peak)


def canary_dicoms(root: Path) -> list[bytes]:
    """The phantom's study with the canary as the patient, and its malformed variants: no
    ultrasound region, and a header that declares a bomb of frames."""
    generate(root, plan(1, seed=31)[:1], seed=31, fmt=OutputFormat.DICOM)
    (path,) = sorted((root / "dicom").glob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.PatientName = f"{CANARY}^Jane"
    ds.PatientID = str(CANARY_NUMBER)
    ds.InstitutionName = CANARY
    variants = [encoded(ds)]
    regionless = pydicom.dcmread(io.BytesIO(variants[0]))
    del regionless.SequenceOfUltrasoundRegions
    variants.append(encoded(regionless))
    frames = pydicom.dcmread(io.BytesIO(variants[0]))
    frames.NumberOfFrames = str(CANARY_NUMBER)
    variants.append(encoded(frames))
    return variants


def encoded(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` over pixel data that is the canary."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", CANARY.encode())


def canary_pictures(picture: bytes) -> list[bytes]:
    """``picture`` as PNG, JPEG and GIF with the canary in their comments, and two PNG
    headers: one as wide as the canary's number, one a decompression bomb (9000 x 9000)."""
    grey = Image.open(io.BytesIO(picture)).convert("L").resize((96, 72))
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", CANARY)
    files = []
    for kind, options in (("PNG", {"pnginfo": text}), ("JPEG", {"comment": CANARY}),
                          ("GIF", {"comment": CANARY})):  # fmt: skip
        buffer = io.BytesIO()
        grey.save(buffer, kind, **options)
        files.append(buffer.getvalue())
    return [*files, png_header(CANARY_NUMBER, 1), png_header(9000, 9000)]


def not_images() -> list[bytes]:
    return [CANARY.encode() * 3, b"\x89PNG\r\n\x1a\n" + CANARY.encode(), b""]


@st.composite
def mutated(draw: st.DrawFn, files: tuple[bytes, ...]) -> bytes:
    """One of ``files`` as is, truncated, with the canary spliced in, or with a byte flipped."""
    data = draw(st.sampled_from(files))
    operation = draw(st.sampled_from(["as is", "as is", "truncate", "splice", "flip"]))
    at = len(data) * draw(st.integers(0, 1000)) // 1000
    if operation == "truncate":
        return data[:at]
    if operation == "splice":
        return data[:at] + CANARY.encode() + data[at:]
    if operation == "flip" and data:
        index = min(at, len(data) - 1)
        return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
    return data


class PeakRss:
    """Samples a process's resident memory every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
