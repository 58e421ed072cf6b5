"""The verification gate: an output is published only if re-reading it finds nothing to hide.

It re-parses the bytes that would be written and checks that no private element survived
unlisted, no attribute the profile removes is still there, the pixels were cleaned, and — the
last word — that none of the source's identifying strings occurs in the encoded header.
"""

from __future__ import annotations

import io
import re

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from fetalmlops.anonymizer.profile.policy import Policy, private_creators

KEPT_BY_DESIGN = frozenset({0x00100010, 0x00100020})  # replaced by the patient pseudonym
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
SHORT_NUMBER = 8  # digits; a date (YYYYMMDD) or longer is searched as it is


class Residue(Exception):
    """The output still holds PHI: quarantine it, never publish it."""

    def __init__(self, findings: list[str]) -> None:
        super().__init__("; ".join(findings[:10]))
        self.findings = findings


def verify(
    output: bytes, phi: frozenset[str], policy: Policy, names: frozenset[str] = frozenset()
) -> None:
    """Raises Residue; ``names`` (parts of person names) count only as whole words."""
    ds = pydicom.dcmread(io.BytesIO(output))
    findings = _elements_not_allowed(ds, policy)
    if policy.clean_pixel_data and ds.get("BurnedInAnnotation") != "NO":
        findings.append("burned-in annotation not cleaned")
    header = _header(output)
    leaked = [value for value in phi if _found(value, header)]
    leaked += [name for name in names if _word(name).search(header)]
    findings += [f"source value found in output: {len(v)} characters" for v in leaked]
    if findings:
        raise Residue(findings)


def _elements_not_allowed(dataset: Dataset, policy: Policy) -> list[str]:
    findings, creators = [], private_creators(dataset)
    for element in dataset:
        if element.tag.is_private and not policy.keeps_private(element, creators):
            findings.append(f"private element {element.tag} survived")
        elif not element.tag.is_private and _should_be_gone(element, policy):
            findings.append(f"{element.keyword or element.tag} should have been removed")
        if element.VR == "SQ":
            for item in element.value:
                findings += _elements_not_allowed(item, policy)
    return findings


def _found(value: str, header: bytes) -> bool:
    encoded = value.encode("latin-1", "ignore")
    if value.isdigit() and len(value) < SHORT_NUMBER:
        # A six-digit study ID turns up inside a 39-digit pseudonymous UID every few hundred
        # images; as a number of its own it is still found.
        return re.search(rb"(?<![0-9])" + encoded + rb"(?![0-9])", header) is not None
    if value.isdigit():
        # A date turns up inside a 39-digit pseudonymous UID too, one image in a few hundred
        # thousand (it did, in a test run); one that starts a number, as a date or date-time
        # left in place does, is still found.
        return re.search(rb"(?<![0-9])" + encoded, header) is not None
    return encoded in header


def _word(name: str) -> re.Pattern[bytes]:
    # "MARY" is a name in PatientName and a syllable of PRIMARY in ImageType.
    return re.compile(
        rb"(?<![A-Za-z])" + re.escape(name.encode("latin-1", "ignore")) + rb"(?![A-Za-z])"
    )


def _header(output: bytes) -> bytes:
    """Everything before the top-level Pixel Data: where strings live.

    Pixel values are not text; searched as bytes, 300,000 of them contain any four-letter name
    by chance (speckle sits in the printable range). Burned-in text is the region cleaning's job.
    """
    end = output.rfind(PIXEL_DATA_TAG)
    return output if end < 0 else output[:end]


def _should_be_gone(element: DataElement, policy: Policy) -> bool:
    """A non-empty attribute the profile removes (X...) under the policy's options."""
    action = policy.action(int(element.tag), element.VR)
    if not action or not action.startswith("X") or element.VR == "SQ":
        return False
    return element.value not in (None, "") and int(element.tag) not in KEPT_BY_DESIGN
