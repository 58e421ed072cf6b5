"""The de-identification policy: which PS3.15 options apply, and the secret behind pseudonyms.

What an option does to an attribute is the table's own data: its column in Table E.1-1
(``profile.annex_e.OPTIONS``) says K or C, and where that column is empty the Basic Profile's
action applies (PS3.15 E.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from fetalmlops.anonymizer.profile.annex_e import ACTIONS, OPTIONS, REPEATING

# PS3.16 CID 7050 De-identification Method codes (DCM).
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")
RETAIN_DEVICE_IDENTITY = ("113109", "Retain Device Identity Option")
RETAIN_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
RETAIN_SAFE_PRIVATE = ("113111", "Retain Safe Private Option")

# The options this policy offers, by their columns in Table E.1-1 (PS3.15 E.3).
SAFE_PRIVATE_COLUMN = "Rtn. Safe Priv. Opt."
DEVICE_IDENTITY_COLUMN = "Rtn. Dev. Id. Opt."
MODIFIED_DATES_COLUMN = "Rtn. Long. Modif. Dates Opt."
# What C (clean) can mean here, by column and VR: under modified dates a date moves by the
# patient's shift and a time of day stays (a shift of whole days leaves it as it was). A C cell
# with no cleaner here (a device's AE title, a timestamp in OB) gets the Basic Profile's action:
# a cleaning we do not do is no reason to keep a value.
CLEANABLE: dict[str, frozenset[str]] = {MODIFIED_DATES_COLUMN: frozenset({"DA", "DT", "TM"})}
# Two options may both name an attribute (a calibration date is device identity and a date):
# the more protective action applies, cleaned before kept.
PROTECTIVE_FIRST = ("C", "K")


@dataclass(frozen=True)
class Policy:
    secret: bytes = field(repr=False)
    # Dates shift by one amount per patient, times stay: intervals survive (gestational growth).
    # Only the dates the option's column names: the patient's birth date is not one of them.
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

    def columns(self) -> list[str]:
        """The option columns of Table E.1-1 this policy applies."""
        chosen = {
            SAFE_PRIVATE_COLUMN: bool(self.safe_private),
            DEVICE_IDENTITY_COLUMN: self.retain_device_identity,
            MODIFIED_DATES_COLUMN: self.retain_modified_dates,
        }
        return [column for column in OPTIONS if chosen.get(column, False)]

    def basic_action(self, tag: int) -> str | None:
        """The Basic Profile's action for ``tag``; None for an attribute the table omits."""
        if tag in ACTIONS:
            return ACTIONS[tag]
        return next((code for base, mask, code in REPEATING if tag & mask == base), None)

    def action(self, tag: int, vr: str = "") -> str | None:
        """The action under this policy's options: an option column's K, or its C where we
        can clean that VR; the Basic Profile's action where the columns are empty (E.3)."""
        basic = self.basic_action(tag)
        if basic is None:
            return None
        row = tag if tag in ACTIONS else next(b for b, m, _ in REPEATING if tag & m == b)
        cells = [
            code
            for column in self.columns()
            if (code := OPTIONS[column].get(row))
            and (code != "C" or vr in CLEANABLE.get(column, frozenset()))
        ]
        return min(cells, key=PROTECTIVE_FIRST.index) if cells else basic

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
