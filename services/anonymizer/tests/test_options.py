"""The policy's options do what their columns of PS3.15 Table E.1-1 say, attribute by attribute.

One dataset holds every attribute of the table (with a value of its VR); it is de-identified
with the Basic Profile alone and with each option the policy offers. Under an option, an
attribute whose column says K comes out unchanged, one whose column says C is cleaned (dates
shifted by the patient's shift, times of day kept), and one whose column is empty — or whose C
we have no cleaner for — comes out exactly as under the Basic Profile.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from fetalmlops.anonymizer import pseudonyms
from fetalmlops.anonymizer.deidentify import deidentify
from fetalmlops.anonymizer.pipeline import anonymize_dicom
from fetalmlops.anonymizer.profile.annex_e import ACTIONS, OPTIONS, PRIVATE
from fetalmlops.anonymizer.profile.policy import (
    DEVICE_IDENTITY_COLUMN,
    MODIFIED_DATES_COLUMN,
    SAFE_PRIVATE_COLUMN,
    Policy,
)
from fetalmlops.datasets.phantom.samples import sample_dicom

SECRET = b"options-secret"
PATIENT = "P-OPTIONS-1"
BASIC = Policy(secret=SECRET, retain_modified_dates=False)
OFFERED = {
    MODIFIED_DATES_COLUMN: Policy(secret=SECRET, retain_modified_dates=True),
    DEVICE_IDENTITY_COLUMN: Policy(
        secret=SECRET, retain_modified_dates=False, retain_device_identity=True
    ),
}
VALUES: dict[str, Any] = {
    "DA": "20240315", "DT": "20240315101112", "TM": "101112", "PN": "DOE^JANE", "AS": "030Y",
    "CS": "SOMEVALUE", "AE": "STATION7", "IS": "7", "DS": "1.5", "UR": "http://x.invalid/a",
    "US": 7, "SS": 7, "UL": 7, "SL": 7, "UV": 7, "SV": 7, "FL": 1.5, "FD": 1.5, "AT": 0x00100010,
}  # fmt: skip
BINARY = ("OB", "OW", "OD", "OF", "OL", "OV", "UN")


def value(tag: int, vr: str) -> Any:
    if vr == "UI":
        return f"1.2.826.0.1.3680043.{tag}"
    if vr == "SQ":
        item = Dataset()
        item.CodeMeaning = "an unlisted attribute inside"
        return Sequence([item])
    if vr in BINARY:
        return b"\x01\x02"
    return VALUES.get(vr, f"text of {tag:08X}")


def every_attribute() -> Dataset:
    """Every attribute of the table that pydicom's dictionary gives a VR, each with a value."""
    ds = Dataset()
    for tag in sorted(ACTIONS):
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue  # named by the table, unknown to this pydicom: nothing to build it from
        ds.add_new(tag, vr, value(tag, vr))
    ds.PatientID = PATIENT  # whose date shift applies
    return ds


def outcome(ds: Dataset, tag: int) -> Any:
    return ds[tag].value if tag in ds else "<removed>"


@pytest.fixture(scope="module")
def source() -> Dataset:
    ds = every_attribute()
    assert len(ds) > 550, "most of the table is exercised"
    return ds


@pytest.fixture(scope="module")
def under_basic(source: Dataset) -> Dataset:
    return deidentify(source, BASIC).dataset


@pytest.mark.parametrize("column", list(OFFERED))
def test_each_option_does_what_its_column_says(
    column: str, source: Dataset, under_basic: Dataset
) -> None:
    out = deidentify(source, OFFERED[column]).dataset
    shift = pseudonyms.date_shift(SECRET, PATIENT)
    wrong = {}
    for element in source:
        tag, vr, before = int(element.tag), element.VR, element.value
        cell = OPTIONS[column].get(tag, "")
        if cell == "K" or (cell == "C" and vr == "TM"):
            expected = before
        elif cell == "C" and vr == "DA":
            expected = pseudonyms.shift_da(before, shift)
        elif cell == "C" and vr == "DT":
            expected = pseudonyms.shift_dt(before, shift)
        else:  # an empty cell, or a C we have no cleaner for: the Basic Profile's action
            expected = outcome(under_basic, tag)
        if outcome(out, tag) != expected:
            wrong[f"{element.keyword or element.tag} ({cell or 'basic'})"] = outcome(out, tag)
    assert wrong == {}
    assert sum(1 for tag in OPTIONS[column] if tag in source) >= 40, "the column is exercised"


def test_the_more_protective_action_wins_where_two_options_name_an_attribute(
    source: Dataset,
) -> None:
    both = Policy(secret=SECRET, retain_modified_dates=True, retain_device_identity=True)
    shared = set(OPTIONS[DEVICE_IDENTITY_COLUMN]) & set(OPTIONS[MODIFIED_DATES_COLUMN])
    assert 0x00181200 in shared  # Date of Last Calibration: the device's, and a date
    out = deidentify(source, both).dataset
    shift = pseudonyms.date_shift(SECRET, PATIENT)
    assert out.DateOfLastCalibration == pseudonyms.shift_da("20240315", shift)
    assert out.DeviceSerialNumber == source.DeviceSerialNumber  # only device identity names it


def test_the_birth_date_is_emptied_under_modified_dates_as_the_basic_profile_says() -> None:
    data = sample_dicom(71)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientBirthTime = "073000"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    policy = Policy(secret=SECRET)
    assert policy.retain_modified_dates

    output = anonymize_dicom(buffer.getvalue(), policy).data
    out = pydicom.dcmread(io.BytesIO(output))

    # The column of Retain Longitudinal Temporal Information with Modified Dates is empty for
    # both: Z (Type 2 in the US Image IOD, so present and empty) and X.
    assert OPTIONS[MODIFIED_DATES_COLUMN].get(0x00100030) is None
    assert "PatientBirthDate" in out and out.PatientBirthDate == ""
    assert "PatientBirthTime" not in out
    shifted = pseudonyms.shift_da(ds.PatientBirthDate, pseudonyms.date_shift(SECRET, ds.PatientID))
    assert ds.PatientBirthDate.encode() not in output and shifted.encode() not in output
    assert out.StudyDate and out.StudyDate != ds.StudyDate  # the study date still moves
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert "113107" in codes


def test_the_policy_applies_only_the_columns_it_offers() -> None:
    assert set(OPTIONS) == {
        "Rtn. Safe Priv. Opt.", "Rtn. UIDs Opt.", "Rtn. Dev. Id. Opt.", "Rtn. Inst. Id. Opt.",
        "Rtn. Pat. Chars. Opt.", "Rtn. Long. Full Dates Opt.", "Rtn. Long. Modif. Dates Opt.",
        "Clean Desc. Opt.", "Clean Struct. Cont. Opt.", "Clean Graph. Opt.",
    }  # fmt: skip
    assert {code for cells in OPTIONS.values() for code in cells.values()} == {"K", "C"}
    assert PRIVATE == {"Basic Prof.": "X", SAFE_PRIVATE_COLUMN: "C"}
    everything = Policy(
        secret=SECRET,
        retain_device_identity=True,
        safe_private=frozenset({("ACME", 1)}),
    )
    assert everything.columns() == [SAFE_PRIVATE_COLUMN, DEVICE_IDENTITY_COLUMN,
                                    MODIFIED_DATES_COLUMN]  # fmt: skip
    assert BASIC.columns() == []
