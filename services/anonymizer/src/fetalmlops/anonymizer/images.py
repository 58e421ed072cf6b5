"""The consumer of fetal.images.received: raw image in, de-identified image and catalog row out.

One catalog image per source instance (``instances``): a raw copy whose instance is catalogued
already becomes an ``ImageCopy`` of that image, never a second image, an error or a retry. A
new image is written in the order DESIGN.md §2 asks for: its objects (keyed by its id, the
pseudonym of this copy's raw sha256), then its row and first copy in one transaction, then its
one fetal.images.anonymized event, and then the row's ``published_at``. A crash before the row
redoes the image; one between row and event finds the row unpublished and publishes the missing
event, the same event (same id, same content) however often that happens. Whatever the gate
refuses is quarantined in the raw zone and dead-lettered, never published.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from functools import cached_property

import pydicom
from prometheus_client import Counter
from sqlalchemy import Engine, or_, select
from sqlalchemy.exc import IntegrityError

from fetalmlops.anonymizer import catalog, pseudonyms
from fetalmlops.anonymizer.instances import Catalogued, Facts, Instance, announcement, same_image
from fetalmlops.anonymizer.pipeline import anonymize_dicom, anonymize_picture
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.anonymizer.verify import Residue
from fetalmlops.common.bus import Bus, Record, Rejected, publish_event, read_event
from fetalmlops.common.bus.consume import Handler
from fetalmlops.common.db import Image, ImageCopy, session_scope
from fetalmlops.common.db.columns import utcnow
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectNotFound, ObjectStore, content_key
from fetalmlops.imaging.canonical import canonical, canonical_picture, union
from fetalmlops.imaging.regions import NoRegions, us_regions
from fetalmlops.v1 import images_pb2

log = logging.getLogger(__name__)
DICOM = "application/dicom"
IMAGES = Counter(
    "fetalmlops_anonymizer_images_total",
    "Raw copies handled: a new image, a copy of a catalogued one, or a redelivery.",
    ["outcome"],
)


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
    sop_instance_uid: str = ""  # the pseudonymous one; a picture has none

    @property
    def instance(self) -> Instance:
        return Instance(self.sop_instance_uid or None, content_key(self.data)[1])


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
        secret = self.policy.secret
        copy_id = catalog.image_id(secret, event.sha256)
        with session_scope(self.engine) as session:
            known = catalog.known_copy(session, secret, event.sha256)
            image_id = known.image_id if known is not None else None
        if image_id is None:
            image_id = self.catalogue(copy_id, self.deidentify_event(event), event.cohort)
        else:
            IMAGES.labels("redelivery").inc()
        self.announce(image_id)

    def deidentify_event(self, event: images_pb2.ImageReceived) -> Output:
        try:
            raw = self.store.get(event.raw.bucket, event.raw.key)
        except ObjectNotFound:
            raise Rejected("raw object not found") from None
        try:
            return self.deidentify(raw, event.media_type, self.declared_patient(event))
        except (NoRegions, Residue) as exc:
            self.quarantine(event.sha256, f"{type(exc).__name__}: {exc}")
            raise Rejected(f"quarantined: {type(exc).__name__}: {exc}") from None
        except Rejected:
            raise
        except Exception as exc:
            # A decoder's message may quote the file's values: only its type leaves the raw zone.
            self.quarantine(event.sha256, f"{type(exc).__name__}: {exc}")
            raise Rejected(f"quarantined: cannot de-identify ({type(exc).__name__})") from None

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
            described = ds.get("SequenceOfUltrasoundRegions") or [{}]
            return Output(
                result.data,
                DICOM,
                canonical_picture(ds, self.own.canonical_size, regions),
                result.patient_pseudonym,
                str(ds.get("Manufacturer", "")),
                str(ds.get("ManufacturerModelName", "")),
                int(ds.Rows),
                int(ds.Columns),
                float(described[0].get("PhysicalDeltaX", 0.0)) * 10,
                result.sop_instance_uid,
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

    def catalogue(self, copy_id: str, output: Output, cohort: str = "") -> str:
        """The id of the image this copy is: a new one (objects, then row), or the catalogued
        image of the same instance. A unique constraint that refuses the row is a copy of an
        image another delivery catalogued meanwhile, never a failure to retry."""
        existing = self.same_image(output.instance)
        if existing is not None:
            return self.record_copy(copy_id, existing)
        image = self.write_objects(copy_id, output, cohort)
        try:
            with session_scope(self.engine) as session:
                session.add(image)
                session.add(ImageCopy(copy_id=copy_id, image_id=copy_id))
        except IntegrityError:
            existing = self.same_image(output.instance)
            if existing is None:
                raise  # not a duplicate: some other constraint, a failure like any other
            if existing != copy_id:
                self.remove_objects(image)  # ours, under our own id: no row will name them
                return self.record_copy(copy_id, existing)
        IMAGES.labels("anonymized").inc()
        log.info("image anonymized", extra={"image_id": copy_id})
        return copy_id

    def same_image(self, instance: Instance) -> str | None:
        same = [Image.sha256 == instance.sha256]
        if instance.sop_instance_uid is not None:
            same.append(Image.sop_instance_uid == instance.sop_instance_uid)
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(Image.id, Image.sop_instance_uid, Image.sha256).where(or_(*same))
            ).all()
        return same_image(instance, [Catalogued(i, Instance(uid, sha)) for i, uid, sha in rows])

    def record_copy(self, copy_id: str, image_id: str) -> str:
        try:
            with session_scope(self.engine) as session:
                if session.get(ImageCopy, copy_id) is None:
                    session.add(ImageCopy(copy_id=copy_id, image_id=image_id))
        except IntegrityError:
            pass  # another delivery of this copy recorded it first: the same mapping
        IMAGES.labels("duplicate").inc()
        log.info("copy of a catalogued image", extra={"image_id": image_id, "copy_id": copy_id})
        return image_id

    def write_objects(self, image_id: str, output: Output, cohort: str) -> Image:
        """The image's objects in `fetal-anonymized`, and the row that will name them."""
        bucket = self.settings.buckets.anonymized
        suffix = "dcm" if output.media_type == DICOM else "png"
        dicom_key, canonical_key = f"images/{image_id}.{suffix}", f"canonical/{image_id}.png"
        sha256 = content_key(output.data)[1]
        self.store.put(bucket, dicom_key, output.data, content_type=output.media_type,
                       sha256=sha256)  # fmt: skip
        self.store.put(bucket, canonical_key, output.canonical_png, content_type="image/png",
                       sha256=content_key(output.canonical_png)[1])  # fmt: skip
        return Image(
            id=image_id,
            sha256=sha256,
            sop_instance_uid=output.sop_instance_uid or None,
            object_key=dicom_key,
            canonical_key=canonical_key,
            patient_pseudonym=output.patient_pseudonym or None,
            device_manufacturer=output.manufacturer or None,
            device_model=output.model or None,
            pixel_spacing_mm=output.spacing_mm or None,
            rows=output.rows,
            columns=output.columns,
            cohort=cohort or None,
            created_at=utcnow(),
        )

    def remove_objects(self, image: Image) -> None:
        bucket = self.settings.buckets.anonymized
        for key in (image.object_key, image.canonical_key):
            if key:
                self.store.delete(bucket, key)

    def announce(self, image_id: str) -> None:
        """fetal.images.anonymized for the image, unless it went out already.

        The row stays locked while the event is produced, so two deliveries (two copies, two
        replicas) cannot both announce it; a crash after the event and before the commit
        announces it again with the same event id.
        """
        bucket = self.settings.buckets.anonymized
        with session_scope(self.engine) as session:
            image = session.get(Image, image_id, with_for_update=True)
            if image is None or image.published_at is not None:
                return
            dicom = self.store.stat(bucket, image.object_key)
            png = self.store.stat(bucket, image.canonical_key or "")
            event = announcement(_facts(image), dicom, png)
            publish_event(
                self.bus, self.settings.topics.images_anonymized, image_id, event, "anonymizer"
            )
            image.published_at = utcnow()


def _facts(image: Image) -> Facts:
    return Facts(
        image_id=image.id,
        patient_pseudonym=image.patient_pseudonym or "",
        manufacturer=image.device_manufacturer or "",
        model=image.device_model or "",
        rows=image.rows,
        columns=image.columns,
        spacing_mm=image.pixel_spacing_mm or 0.0,
        cohort=image.cohort or "",
        catalogued_at=image.created_at,
    )
