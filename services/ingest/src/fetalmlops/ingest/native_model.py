"""The PS3.19 Native DICOM Model: a data set in the DICOM JSON Model (PS3.18 Annex F) as XML.

PS3.18 §8.7.3 lets a STOW-RS client ask for the Store Instances Response in either encoding;
both are built from one JSON-model dict, so they cannot say different things. Covers the VRs the
response uses (UI, US, UR, SQ) and any other single-valued string or number.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from pydicom.datadict import keyword_for_tag

MEDIA_TYPE = "application/dicom+xml"
NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"


def to_xml(dataset: dict[str, Any]) -> bytes:
    """``dataset`` (tags as 8 hex digits → {"vr", "Value"}) as a NativeDicomModel document."""
    root = ET.Element("NativeDicomModel", {"xmlns": NAMESPACE})
    _attributes(root, dataset)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _attributes(parent: ET.Element, dataset: dict[str, Any]) -> None:
    # PS3.19 A.1: attributes appear in ascending tag order, as in a binary data set.
    for tag in sorted(dataset):
        element = dataset[tag]
        attribute = ET.SubElement(parent, "DicomAttribute", {"tag": tag, "vr": element["vr"]})
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attribute.set("keyword", keyword)
        for number, value in enumerate(element.get("Value", []), 1):
            if element["vr"] == "SQ":
                item = ET.SubElement(attribute, "Item", {"number": str(number)})
                _attributes(item, value)
            else:
                ET.SubElement(attribute, "Value", {"number": str(number)}).text = str(value)
