"""The consumer of fetal.images.received: raw image in, de-identified image and catalog row out.

Outputs are keyed by the image id (a keyed pseudonym of the raw sha256), so a redelivered event
rewrites the same objects; the catalog row is written last and marks the image as done, so a
crash anywhere before it means a complete redo, never a half-published image. Whatever the gate
refuses is quarantined in the raw zone and dead-lettered, never published.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from functools import cached_property

import pydicom
from sqlalchemy import Engine

from fetalmlops.anonymizer import catalog, pseudonyms
from fetalmlops.anonymizer.pipeline import anonymize_dicom, anonymize_picture
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.anonymizer.verify import Residue
from fetalmlops.common.bus import Bus, Record, Rejected, publish_event, read_event
from fetalmlops.common.bus.consume import Handler
from fetalmlops.common.db import Image, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectInfo, ObjectNotFound, ObjectStore, content_key
from fetalmlops.imaging.canonical import canonical, union
from fetalmlops.imaging.regions import NoRegions, us_regions
from fetalmlops.v1 import common_pb2, images_pb2

log = logging.getLogger(__name__)
DICOM = "application/dicom"


@dataclass(frozen=True)
class Output:
    """A de-identified image ready to store: its file, canonical PNG and catalog facts."""

    data: bytes
    media_type: str
    canonical_png: bytes
    patient_pseudonym: str
    manufacturer: str
    model: str
    rows: int
    columns: int
    spacing_mm: float


@dataclass
class Anonymizer:
    settings: Settings
    own: AnonymizerSettings
    store: ObjectStore
    bus: Bus
    engine: Engine

    @cached_property
    def policy(self) -> Policy:
        """Built once; raises (and is retried) while the secret is missing."""
        return self.own.policy()

    def handler(self) -> Handler:
        return self.handle

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, images_pb2.ImageReceived):
            raise Rejected(f"expected ImageReceived, got {type(event).__name__}")
        image_id = catalog.image_id(self.policy.secret, event.sha256)
        with session_scope(self.engine) as session:
            if session.get(Image, image_id) is not None:
                return  # catalogued already: this is a redelivery
        try:
            raw = self.store.get(event.raw.bucket, event.raw.key)
        except ObjectNotFound:
            raise Rejected("raw object not found") from None
        try:
            declared = self.declared_patient(event)
            output = self.deidentify(raw, event.media_type, declared)
        except (NoRegions, Residue) as exc:
            self.quarantine(event.sha256, f"{type(exc).__name__}: {exc}")
            raise Rejected(f"quarantined: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            # A decoder's message may quote the file's values: only its type leaves the raw zone.
            self.quarantine(event.sha256, f"{type(exc).__name__}: {exc}")
            raise Rejected(f"quarantined: cannot de-identify ({type(exc).__name__})") from None
        self.publish(image_id, output, event.cohort)
        log.info("image anonymized", extra={"image_id": image_id})

    def declared_patient(self, event: images_pb2.ImageReceived) -> str:
        """The patient id the sender declared beside the file (raw zone), or ""."""
        if not event.HasField("context"):
            return ""
        try:
            context = json.loads(self.store.get(event.context.bucket, event.context.key))
        except ObjectNotFound:
            raise Rejected("the declared context object is missing") from None
        return str(context.get("patient_id", ""))

    def deidentify(self, raw: bytes, media_type: str, declared_patient: str = "") -> Output:
        """A DICOM's own PatientID names its patient; a picture's only what was declared."""
        policy = self.policy
        if media_type == DICOM:
            result = anonymize_dicom(raw, policy)
            ds = pydicom.dcmread(io.BytesIO(result.data))
            device = f"{ds.get('Manufacturer', '')}/{ds.get('ManufacturerModelName', '')}"
            # Cleaned by its regions, a configured mask, or (neither) OCR over the whole frame.
            regions = us_regions(ds) or policy.mask_for(int(ds.Columns), int(ds.Rows), device)
            first = (
                ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) == 1 else ds.pixel_array[0]
            )
            described = ds.get("SequenceOfUltrasoundRegions") or [{}]
            return Output(
                result.data,
                DICOM,
                canonical(first, union(regions), self.own.canonical_size),
                result.patient_pseudonym,
                str(ds.get("Manufacturer", "")),
                str(ds.get("ManufacturerModelName", "")),
                int(ds.Rows),
                int(ds.Columns),
                float(described[0].get("PhysicalDeltaX", 0.0)) * 10,
            )
        picture = anonymize_picture(raw, policy, self.own.pictures_deidentified)
        rows, columns = picture.pixels.shape
        square = canonical(picture.pixels, union(picture.mask), self.own.canonical_size)
        patient = (
            pseudonyms.patient_pseudonym(policy.secret, declared_patient)
            if declared_patient
            else ""
        )
        return Output(picture.png, "image/png", square, patient, "", "", rows, columns, 0.0)

    def quarantine(self, sha256: str, reason: str) -> None:
        note = json.dumps({"sha256": sha256, "reason": reason}).encode()
        self.store.put(
            self.settings.buckets.raw,
            f"quarantine/{sha256}.json",
            note,
            content_type="application/json",
        )

    def publish(self, image_id: str, output: Output, cohort: str = "") -> None:
        bucket = self.settings.buckets.anonymized
        suffix = "dcm" if output.media_type == DICOM else "png"
        dicom_key, canonical_key = f"images/{image_id}.{suffix}", f"canonical/{image_id}.png"
        dicom = self.store.put(
            bucket,
            dicom_key,
            output.data,
            content_type=output.media_type,
            sha256=content_key(output.data)[1],
        )
        png = self.store.put(
            bucket,
            canonical_key,
            output.canonical_png,
            content_type="image/png",
            sha256=content_key(output.canonical_png)[1],
        )
        event = images_pb2.ImageAnonymized(
            image_id=image_id,
            patient_pseudonym=output.patient_pseudonym,
            dicom=_ref(dicom),
            canonical=_ref(png),
            device=images_pb2.Device(manufacturer=output.manufacturer, model=output.model),
            geometry=images_pb2.Geometry(
                rows=output.rows, columns=output.columns, pixel_spacing_mm=output.spacing_mm
            ),
            cohort=cohort,
        )
        publish_event(
            self.bus, self.settings.topics.images_anonymized, image_id, event, "anonymizer"
        )
        with session_scope(self.engine) as session:
            session.merge(
                Image(
                    id=image_id,
                    sha256=dicom.sha256 or content_key(output.data)[1],
                    object_key=dicom_key,
                    canonical_key=canonical_key,
                    patient_pseudonym=output.patient_pseudonym or None,
                    device_manufacturer=output.manufacturer or None,
                    device_model=output.model or None,
                    pixel_spacing_mm=output.spacing_mm or None,
                    rows=output.rows,
                    columns=output.columns,
                    cohort=cohort or None,
                )
            )


def _ref(info: ObjectInfo) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(
        bucket=info.bucket,
        key=info.key,
        sha256=info.sha256 or "",
        size=info.size,
        content_type=info.content_type,
    )
