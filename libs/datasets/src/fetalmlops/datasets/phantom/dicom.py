"""Phantom frames as DICOM Ultrasound Image Storage, the way a scanner sends them to a PACS.

The header carries the identity and visit of ``identities`` in the places real files do: the
patient and study modules, a nested request sequence, free-text comments and a vendor's private
block. ``planted`` lists every one of them (with its tag path) for leak tests. The imaging
sector is described by a SequenceOfUltrasoundRegions item (PS3.3 C.8.5.5); the patient banner is
burned into the pixels above it, and BurnedInAnnotation says so.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, UltrasoundImageStorage

from fetalmlops.datasets.phantom.frame import Frame
from fetalmlops.datasets.phantom.identities import Identity, Visit
from fetalmlops.datasets.phantom.profiles import ScannerProfile

PRIVATE_CREATOR = "PHANTOM SCANNER 1.0"
PRIVATE_GROUP = 0x0009


@dataclass(frozen=True)
class Planted:
    path: str  # e.g. "PatientName", "RequestAttributesSequence[0].AccessionNumber", "(0009,1001)"
    value: str


@dataclass(frozen=True)
class StudyUids:
    study: str
    series: str
    instance: str


def derived_uid(*parts: str) -> str:
    """A 2.25 UID (PS3.5 B.2) from a hash of ``parts``: the same inputs, the same UID."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()[:16]
    return f"2.25.{uuid.UUID(bytes=digest).int}"


def uids(seed: int, identity: Identity, visit_index: int, series: int, image_id: str) -> StudyUids:
    """Deterministic UIDs: the same seed regenerates byte-identical files."""
    base = ("fetalmlops-phantom", str(seed), identity.patient_key, str(visit_index))
    return StudyUids(
        study=derived_uid(*base, "study"),
        series=derived_uid(*base, "series", str(series)),
        instance=derived_uid(*base, "instance", image_id),
    )


def ultrasound_region(frame: Frame, profile: ScannerProfile) -> Dataset:
    geo = frame.geometry
    x0, y0, x1, y1 = frame.region
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D tissue image
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = geo.mm_per_pixel / 10
    region.PhysicalDeltaY = geo.mm_per_pixel / 10
    region.ReferencePixelX0 = round(geo.apex_x)
    region.ReferencePixelY0 = round(geo.apex_y)
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    region.TransducerFrequency = int(profile.frequency_mhz * 1000)  # kHz
    return region


def to_dataset(
    frame: Frame,
    profile: ScannerProfile,
    identity: Identity,
    visit: Visit,
    study_uids: StudyUids,
    instance_number: int,
) -> tuple[Dataset, list[Planted]]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(study_uids.instance)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = study_uids.instance
    ds.StudyInstanceUID = study_uids.study
    ds.SeriesInstanceUID = study_uids.series
    ds.Modality = "US"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    stamp_date = visit.study_datetime.strftime("%Y%m%d")
    stamp_time = visit.study_datetime.strftime("%H%M%S")

    planted: list[Planted] = []

    def plant(path: str, value: str) -> str:
        planted.append(Planted(path, value))
        return value

    ds.PatientName = plant("PatientName", identity.name)
    ds.PatientID = plant("PatientID", identity.patient_id)
    ds.PatientBirthDate = plant("PatientBirthDate", identity.birth_date.strftime("%Y%m%d"))
    ds.PatientTelephoneNumbers = plant("PatientTelephoneNumbers", identity.phone)
    ds.PatientSex = "F"
    age = (visit.study_datetime.date() - identity.birth_date).days // 365
    ds.PatientAge = f"{age:03d}Y"
    other_id = Dataset()
    other_id.PatientID = plant(
        "OtherPatientIDsSequence[0].PatientID", f"NHS{identity.patient_id[3:]}"
    )
    other_id.IssuerOfPatientID = "NATIONAL"
    ds.OtherPatientIDsSequence = Sequence([other_id])

    ds.StudyDate = ds.SeriesDate = ds.ContentDate = plant("StudyDate", stamp_date)
    # A time of day alone identifies no one (PS3.15 keeps times under modified dates).
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = stamp_time
    ds.AcquisitionDateTime = plant("AcquisitionDateTime", stamp_date + stamp_time)
    ds.AccessionNumber = plant("AccessionNumber", visit.accession_number)
    ds.StudyID = plant("StudyID", visit.accession_number[-6:])
    ds.ReferringPhysicianName = plant("ReferringPhysicianName", visit.referring_physician)
    ds.OperatorsName = plant("OperatorsName", visit.operator)
    ds.InstitutionName = plant("InstitutionName", visit.institution)
    ds.InstitutionAddress = plant("InstitutionAddress", visit.institution_address)
    ds.StationName = plant("StationName", visit.station_name)
    ds.StudyDescription = "OB ULTRASOUND 2ND/3RD TRIMESTER"
    ds.ImageComments = plant("ImageComments", f"Growth scan for {identity.name.replace('^', ' ')}")
    request = Dataset()
    request.AccessionNumber = plant(
        "RequestAttributesSequence[0].AccessionNumber", visit.accession_number
    )
    request.RequestedProcedureID = plant(
        "RequestAttributesSequence[0].RequestedProcedureID", f"RP{visit.accession_number[3:]}"
    )
    request.ScheduledProcedureStepID = "SPS1"
    ds.RequestAttributesSequence = Sequence([request])

    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    serial = hashlib.sha256(f"{profile.name}{visit.station_name}".encode()).hexdigest()[:8]
    ds.DeviceSerialNumber = plant("DeviceSerialNumber", f"SN{serial.upper()}")
    ds.SoftwareVersions = "4.2.1"
    ds.TransducerData = profile.probe

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", plant(f"({PRIVATE_GROUP:04X},1001)", identity.name))
    block.add_new(0x02, "LO", plant(f"({PRIVATE_GROUP:04X},1002)", identity.patient_id))

    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.BurnedInAnnotation = "YES" if frame.burned_in else "NO"
    ds.LossyImageCompression = "00"
    ds.SequenceOfUltrasoundRegions = Sequence([ultrasound_region(frame, profile)])

    rows, cols = frame.pixels.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = frame.pixels.tobytes()
    return ds, planted
