"""The de-identification policy: which PS3.15 options apply, and the secret behind pseudonyms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from fetalmlops.anonymizer.profile.annex_e import ACTIONS, REPEATING

# PS3.16 CID 7050 De-identification Method codes (DCM).
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")
RETAIN_DEVICE_IDENTITY = ("113109", "Retain Device Identity Option")
RETAIN_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
RETAIN_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")

# Attributes the Retain Device Identity Option keeps (PS3.15 Table E.1-1, its "K" column).
DEVICE_IDENTITY = frozenset(
    {
        0x00181000,  # Device Serial Number
        0x00181002,  # Device UID
        0x00081010,  # Station Name
        0x0018700A,  # Detector ID
        0x00181007,  # Cassette ID
        0x00181008,  # Gantry ID
        0x00181009,  # Unique Device Identifier
        0x0018100A,  # UDI Sequence
        0x00181003,  # Device ID
    }
)


@dataclass(frozen=True)
class Policy:
    secret: bytes = field(repr=False)
    # Dates shift by one amount per patient, times stay: intervals survive (gestational growth).
    retain_modified_dates: bool = True
    # Off by default: a scanner's serial and station name can point to a clinic and a day. The
    # scanner *model* (Manufacturer, ManufacturerModelName) is never in the table and always kept.
    retain_device_identity: bool = False
    clean_pixel_data: bool = True
    # Private elements survive only if listed here, as (private creator, element byte).
    safe_private: frozenset[tuple[str, int]] = frozenset()
    # Imaging regions to keep for images that do not describe their own: by device
    # ("Manufacturer/Model") or by frame size ("800x600"), each a list of (x0, y0, x1, y1).
    masks: Mapping[str, Sequence[tuple[int, int, int, int]]] = field(default_factory=dict)
    # Images with neither: blank the words OCR reads with at least this confidence (0–100).
    ocr: bool = False
    ocr_min_confidence: float = 60.0

    def mask_for(
        self, columns: int, rows: int, device: str = ""
    ) -> list[tuple[int, int, int, int]]:
        found = self.masks.get(device) if device else None
        return list(found or self.masks.get(f"{columns}x{rows}", []))

    def keeps_private(self, element: DataElement, creators: Mapping[tuple[int, int], str]) -> bool:
        """A private element survives only if its (creator, element byte) is safe-listed; a
        creator element survives while the safe list names it (PS3.5 7.8.1 blocks)."""
        group, number = element.tag.group, element.tag.element
        if 0x0010 <= number <= 0x00FF:
            return any(creator == str(element.value) for creator, _ in self.safe_private)
        creator = creators.get((group, number >> 8), "")
        return (creator, number & 0xFF) in self.safe_private

    def action(self, tag: int) -> str | None:
        if tag in ACTIONS:
            return ACTIONS[tag]
        return next((code for base, mask, code in REPEATING if tag & mask == base), None)

    def method_codes(self) -> list[tuple[str, str]]:
        codes = [BASIC_PROFILE]
        if self.clean_pixel_data:
            codes.append(CLEAN_PIXEL_DATA)
        if self.retain_device_identity:
            codes.append(RETAIN_DEVICE_IDENTITY)
        if self.retain_modified_dates:
            codes.append(RETAIN_MODIFIED_DATES)
        if self.safe_private:
            codes.append(RETAIN_SAFE_PRIVATE)
        return codes


def private_creators(dataset: Dataset) -> dict[tuple[int, int], str]:
    """Each private block of one dataset level, (group, block byte) → its creator's name."""
    return {
        (e.tag.group, e.tag.element): str(e.value)
        for e in dataset
        if e.tag.is_private and 0x0010 <= e.tag.element <= 0x00FF
    }
