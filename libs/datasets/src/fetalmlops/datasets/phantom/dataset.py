"""A phantom dataset on disk: patients, visits and images, written as a readable dataset.

Layout (the generic-CSV format of ``fetalmlops.datasets.readers``, with a folder-per-class tree):

    OUT/labels.csv                      path,label,patient,split,cohort,brain_plane,… (see below)
    OUT/png/<plane>/<image id>.png      the frame without the patient banner
    OUT/dicom/<image id>.dcm            Ultrasound Image Storage with PHI in header and pixels
    OUT/dicom/<image id>.phi.json       every planted PHI value, the banner boxes, the US region
    OUT/manifest.json                   seed, parameters and counts

Every image has its own random stream derived from (seed, patient, image), so an image does not
depend on how many were generated before it or in which process.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image

from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.datasets.phantom.dicom import to_dataset, uids
from fetalmlops.datasets.phantom.frame import Frame, render
from fetalmlops.datasets.phantom.identities import Identity, Visit, identity
from fetalmlops.datasets.phantom.profiles import DEFAULT_MIX, PROFILES, ScannerProfile

GENERATOR = "fetalmlops-phantom/1"
CSV_COLUMNS = (
    "path",
    "label",
    "patient",
    "split",
    "cohort",
    "brain_plane",
    "profile",
    "ga_weeks",
    "dicom",
)
# A mild imbalance, brain and "other" most common, as in routine screening archives.
PLANE_WEIGHTS = {
    Plane.FETAL_ABDOMEN: 0.14,
    Plane.FETAL_BRAIN: 0.2,
    Plane.FETAL_FEMUR: 0.14,
    Plane.FETAL_THORAX: 0.16,
    Plane.MATERNAL_CERVIX: 0.16,
    Plane.OTHER: 0.2,
}
BRAIN_WEIGHTS = {
    BrainPlane.TRANS_THALAMIC: 0.5,
    BrainPlane.TRANS_CEREBELLUM: 0.3,
    BrainPlane.TRANS_VENTRICULAR: 0.2,
}
SPLITS = (("train", 0.7), ("val", 0.15), ("test", 0.15))  # by patient, never by image


class OutputFormat(StrEnum):
    PNG = "png"
    DICOM = "dicom"
    BOTH = "both"


@dataclass(frozen=True)
class ImageSpec:
    """What to draw, decided before drawing (pure and cheap)."""

    image_id: str
    patient: Identity
    visit_index: int
    instance_number: int
    plane: Plane
    brain_plane: BrainPlane | None
    profile: ScannerProfile
    split: str

    @property
    def visit(self) -> Visit:
        return self.patient.visits[self.visit_index]


def _patient_rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def plan(
    patients: int,
    seed: int,
    profiles: Sequence[str] = DEFAULT_MIX,
    images_per_visit: tuple[int, int] = (3, 7),
) -> list[ImageSpec]:
    """Patients with one or two visits of several images each, split by patient."""
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ValueError(f"unknown scanner profile(s) {unknown}; choose from {sorted(PROFILES)}")
    order = np.random.default_rng(seed).permutation(patients)
    n_train, n_val = round(SPLITS[0][1] * patients), round(SPLITS[1][1] * patients)
    split_of = {
        int(patient): "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        for rank, patient in enumerate(order)
    }
    specs = []
    planes, plane_p = list(PLANE_WEIGHTS), list(PLANE_WEIGHTS.values())
    brains, brain_p = list(BRAIN_WEIGHTS), list(BRAIN_WEIGHTS.values())
    for index in range(patients):
        rng = _patient_rng(seed, index)
        person = identity(index + 1, rng)
        profile = PROFILES[profiles[int(rng.integers(0, len(profiles)))]]
        for visit_index in range(len(person.visits)):
            for k in range(int(rng.integers(images_per_visit[0], images_per_visit[1] + 1))):
                plane = planes[int(rng.choice(len(planes), p=plane_p))]
                brain = (
                    brains[int(rng.choice(len(brains), p=brain_p))]
                    if plane is Plane.FETAL_BRAIN
                    else None
                )
                specs.append(
                    ImageSpec(
                        image_id=f"{person.patient_key}-v{visit_index + 1}-{k + 1:02d}",
                        patient=person,
                        visit_index=visit_index,
                        instance_number=k + 1,
                        plane=plane,
                        brain_plane=brain,
                        profile=profile,
                        split=split_of[index],
                    )
                )
    return specs


def sector_png(spec: ImageSpec, seed: int, side: int, difficulty: float = 0.5) -> bytes:
    """The imaging sector as a square greyscale PNG of ``side`` pixels, drawn at half the
    scanner's frame size: the same anatomy and classes, four times faster to draw, for tests
    and benchmarks that need many labelled pictures quickly."""
    p = spec.profile
    half = dataclasses.replace(
        p,
        rows=p.rows // 2,
        cols=p.cols // 2,
        axial_samples=p.axial_samples // 2,
        lateral_samples=p.lateral_samples // 2,
    )
    frame = draw(dataclasses.replace(spec, profile=half), seed, difficulty, banner=False)
    x0, y0, x1, y1 = frame.region
    sector = Image.fromarray(frame.pixels[y0 : y1 + 1, x0 : x1 + 1])
    out = io.BytesIO()
    sector.resize((side, side), Image.Resampling.BILINEAR).save(out, "PNG")
    return out.getvalue()


def draw(spec: ImageSpec, seed: int, difficulty: float, banner: bool) -> Frame:
    index = int(spec.patient.patient_key[1:])
    rng = _patient_rng(seed, index, spec.visit_index, spec.instance_number, 1)
    visit = spec.visit
    lines = (
        (
            spec.patient.name.replace("^", ", "),
            f"ID: {spec.patient.patient_id}",
            visit.study_datetime.strftime("%d/%m/%Y %H:%M:%S"),
            visit.institution,
        )
        if banner
        else ()
    )
    return render(
        spec.profile, spec.plane, spec.brain_plane, visit.ga_weeks, difficulty, rng, lines
    )


def write_image(
    out: Path, spec: ImageSpec, seed: int, difficulty: float, fmt: OutputFormat
) -> dict[str, str]:
    """Write one image in the requested formats; returns its labels.csv row."""
    row = {
        "path": "",
        "label": spec.plane.value,
        "patient": spec.patient.patient_key,
        "split": spec.split,
        "cohort": spec.profile.name,
        "brain_plane": spec.brain_plane.value if spec.brain_plane else "",
        "profile": spec.profile.name,
        "ga_weeks": f"{spec.visit.ga_weeks:.1f}",
        "dicom": "",
    }
    if fmt in (OutputFormat.PNG, OutputFormat.BOTH):
        png = Path("png") / spec.plane.value / f"{spec.image_id}.png"
        (out / png).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw(spec, seed, difficulty, banner=False).pixels).save(out / png)
        row["path"] = png.as_posix()
    if fmt in (OutputFormat.DICOM, OutputFormat.BOTH):
        dcm = Path("dicom") / f"{spec.image_id}.dcm"
        (out / dcm).parent.mkdir(parents=True, exist_ok=True)
        frame = draw(spec, seed, difficulty, banner=True)
        study = uids(seed, spec.patient, spec.visit_index, 1, spec.image_id)
        dataset, planted = to_dataset(
            frame, spec.profile, spec.patient, spec.visit, study, spec.instance_number
        )
        dataset.save_as(out / dcm, enforce_file_format=True)
        sidecar = {
            "image_id": spec.image_id,
            "patient": spec.patient.patient_key,
            "planted": [{"path": p.path, "value": p.value} for p in planted],
            "phi_values": spec.patient.phi_values(),
            "uids": [study.study, study.series, study.instance],
            "burned_in": [{"text": b.text, "box": list(b.box)} for b in frame.burned_in],
            "us_regions": [list(frame.region)],
        }
        (out / dcm.with_suffix(".phi.json")).write_text(json.dumps(sidecar, indent=2))
        row["dicom"] = dcm.as_posix()
        row["path"] = row["path"] or dcm.as_posix()
    return row


def generate(
    out: Path,
    specs: Sequence[ImageSpec],
    seed: int = 0,
    fmt: OutputFormat = OutputFormat.PNG,
    difficulty: float = 0.5,
    workers: int = 1,
    on_image: Callable[[], None] = lambda: None,
) -> dict[str, object]:
    """Write the planned images under ``out`` (in parallel when ``workers`` > 1)."""
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError("difficulty must lie between 0 and 1")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        mapper = pool.map if pool is not None else map
        jobs = mapper(
            write_image, *zip(*((out, s, seed, difficulty, fmt) for s in specs), strict=True)
        )
        for row in jobs:
            rows.append(row)
            on_image()
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {
        "generator": GENERATOR,
        "seed": seed,
        "patients": len({s.patient.patient_key for s in specs}),
        "format": fmt.value,
        "difficulty": difficulty,
        "images": len(rows),
        "per_label": dict(sorted(Counter(r["label"] for r in rows).items())),
        "per_split": dict(sorted(Counter(r["split"] for r in rows).items())),
        "per_profile": dict(sorted(Counter(r["profile"] for r in rows).items())),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def iter_frames(
    specs: Sequence[ImageSpec], seed: int, difficulty: float
) -> Iterator[tuple[ImageSpec, Frame]]:
    """Frames in memory, for tests and benchmarks that need no files."""
    for spec in specs:
        yield spec, draw(spec, seed, difficulty, banner=False)
