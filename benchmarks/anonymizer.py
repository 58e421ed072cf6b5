"""De-identification speed and thoroughness: this anonymizer, dicognito and dicom-anonymizer.

All three run on the same phantom corpus in one run. For each tool: images per second, and how
many planted PHI values survive — in the header (every value the phantom's sidecars list,
searched in the encoded header) and in the pixels (burned-in banner lines whose box still has
non-black pixels). The ratios compare each tool's speed with this anonymizer's.

    make bench            # or: .venv/bin/python benchmarks/anonymizer.py --patients 20
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from dicognito.anonymizer import Anonymizer as Dicognito
from dicomanonymizer.simpledicomanonymizer import anonymize_dataset
from rich.progress import Progress

from fetalmlops.anonymizer.pipeline import anonymize_dicom
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan

PIXEL_DATA = b"\xe0\x7f\x10\x00"


def ours(data: bytes) -> bytes:
    return anonymize_dicom(data, Policy(secret=b"benchmark")).data


def with_dataset(change: Callable[[pydicom.Dataset], None]) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        change(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    return run


TOOLS: dict[str, Callable[[bytes], bytes]] = {
    "fetalmlops anonymizer": ours,
    "dicognito 0.19.0": with_dataset(Dicognito(seed="benchmark").anonymize),
    "dicom-anonymizer 2.1.0": with_dataset(anonymize_dataset),
}


def survivors(output: bytes, sidecar: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    header = output[: output.rfind(PIXEL_DATA)]
    values = {p["value"] for p in sidecar["planted"]} | set(sidecar["phi_values"])
    in_header = sum(1 for v in values if v.encode() in header)
    pixels = pydicom.dcmread(io.BytesIO(output)).pixel_array
    in_pixels = sum(
        1
        for b in sidecar["burned_in"]
        if np.any(pixels[b["box"][1] : b["box"][3] + 1, b["box"][0] : b["box"][2] + 1])
    )
    return in_header, in_pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), plan(args.patients, seed=2026), seed=2026, fmt=OutputFormat.DICOM)
        corpus = [
            (p.read_bytes(), json.loads(p.with_suffix(".phi.json").read_text()))
            for p in sorted((Path(tmp) / "dicom").glob("*.dcm"))
        ]
    planted = sum(len({p["value"] for p in s["planted"]} | set(s["phi_values"])) for _, s in corpus)
    banners = sum(len(s["burned_in"]) for _, s in corpus)
    results = {}
    with Progress() as progress:
        for name, tool in TOOLS.items():
            task = progress.add_task(name, total=len(corpus))
            outputs, start = [], time.perf_counter()
            for data, _ in corpus:
                outputs.append(tool(data))
                progress.advance(task)
            elapsed = time.perf_counter() - start
            left = [
                survivors(out, sidecar) for out, (_, sidecar) in zip(outputs, corpus, strict=True)
            ]
            results[name] = (
                len(corpus) / elapsed,
                sum(h for h, _ in left),
                sum(p for _, p in left),
            )
    print(
        f"\n{len(corpus)} phantom DICOM files: {planted} planted PHI values, {banners} banner lines"
    )
    columns = ("images/s", "vs ours", "PHI left in header", "banner lines left")
    print(f"{'tool':<24}" + "".join(f"{c:>{len(c) + 3}}" for c in columns))
    base = results["fetalmlops anonymizer"][0]
    for name, (rate, header, pixels) in results.items():
        print(f"{name:<24}{rate:>11.1f}{rate / base:>10.2f}{header:>21}{pixels:>20}")


if __name__ == "__main__":
    main()
