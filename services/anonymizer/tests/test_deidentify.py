"""PS3.15 de-identification of phantom DICOM: no planted PHI survives, the image does."""

from __future__ import annotations

import io
import json
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fetalmlops.anonymizer.pipeline import anonymize_dicom
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.verify import Residue, verify
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan

POLICY = Policy(secret=b"test-secret-0123456789")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate(out, plan(8, seed=77), seed=77, fmt=OutputFormat.DICOM)
    return out


def cases(phantom: Path) -> list[tuple[bytes, dict]]:  # type: ignore[type-arg]
    return [
        (path.read_bytes(), json.loads(path.with_suffix(".phi.json").read_text()))
        for path in sorted((phantom / "dicom").glob("*.dcm"))
    ]


def test_no_planted_phi_survives_anywhere_in_the_bytes(phantom: Path) -> None:
    for data, sidecar in cases(phantom):
        output = anonymize_dicom(data, POLICY).data
        planted = (
            {p["value"] for p in sidecar["planted"]}
            | set(sidecar["phi_values"])
            | set(sidecar["uids"])
        )
        survivors = [value for value in planted if value.encode() in output]
        assert survivors == [], sidecar["image_id"]


def test_banner_blanked_region_untouched(phantom: Path) -> None:
    for data, sidecar in cases(phantom)[:6]:
        before = pydicom.dcmread(io.BytesIO(data)).pixel_array
        after_ds = pydicom.dcmread(io.BytesIO(anonymize_dicom(data, POLICY).data))
        after = after_ds.pixel_array
        for burned in sidecar["burned_in"]:
            x0, y0, x1, y1 = burned["box"]
            assert (
                before[y0 : y1 + 1, x0 : x1 + 1].max() > 0
                and after[y0 : y1 + 1, x0 : x1 + 1].max() == 0
            )
        (x0, y0, x1, y1) = sidecar["us_regions"][0]
        assert np.array_equal(before[y0 : y1 + 1, x0 : x1 + 1], after[y0 : y1 + 1, x0 : x1 + 1])
        outside = np.ones(before.shape, bool)
        outside[y0 : y1 + 1, x0 : x1 + 1] = False
        assert after[outside].max() == 0
        assert after_ds.BurnedInAnnotation == "NO"


def test_method_is_recorded_and_device_model_kept(phantom: Path) -> None:
    data, _ = cases(phantom)[0]
    source, ds = (
        pydicom.dcmread(io.BytesIO(data)),
        pydicom.dcmread(io.BytesIO(anonymize_dicom(data, POLICY).data)),
    )
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113107"]
    assert (ds.Manufacturer, ds.ManufacturerModelName) == (
        source.Manufacturer,
        source.ManufacturerModelName,
    )
    assert (
        ds.SOPClassUID == source.SOPClassUID
        and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    )
    assert ds.SOPInstanceUID.startswith("2.25.") and ds.SOPInstanceUID != source.SOPInstanceUID
    assert not any(element.tag.is_private for element in ds.iterall())
    assert "RequestAttributesSequence" not in ds and "OtherPatientIDsSequence" not in ds


def test_pseudonyms_are_consistent_and_date_intervals_preserved(phantom: Path) -> None:
    by_patient: dict[str, list[tuple[pydicom.Dataset, pydicom.Dataset]]] = {}
    for data, sidecar in cases(phantom):
        out = pydicom.dcmread(io.BytesIO(anonymize_dicom(data, POLICY).data))
        by_patient.setdefault(sidecar["patient"], []).append(
            (pydicom.dcmread(io.BytesIO(data)), out)
        )
    pseudonyms = {p: {o.PatientID for _, o in pairs} for p, pairs in by_patient.items()}
    assert all(len(ids) == 1 for ids in pseudonyms.values()), "one pseudonym per patient"
    assert len({next(iter(ids)) for ids in pseudonyms.values()}) == len(pseudonyms), (
        "distinct patients stay distinct"
    )
    day = lambda value: datetime.strptime(value, "%Y%m%d")  # noqa: E731
    longitudinal = 0
    for pairs in by_patient.values():
        studies = {(s.StudyInstanceUID, o.StudyInstanceUID) for s, o in pairs}
        assert len({o for _, o in studies}) == len(studies), "studies keep distinct UIDs"
        dates = sorted({(day(s.StudyDate), day(o.StudyDate)) for s, o in pairs})
        for (first_src, first_out), (later_src, later_out) in pairwise(dates):
            assert later_src - first_src == later_out - first_out
            longitudinal += 1
        assert all(src != out for src, out in dates), "dates moved"
    assert longitudinal >= 1, "the phantom has patients with a second visit"


def test_same_secret_same_output_other_secret_other_uids(phantom: Path) -> None:
    data, _ = cases(phantom)[0]
    first, again = anonymize_dicom(data, POLICY), anonymize_dicom(data, POLICY)
    other = anonymize_dicom(data, Policy(secret=b"another-secret"))
    assert first.data == again.data
    assert (
        first.sop_instance_uid != other.sop_instance_uid
        and first.patient_pseudonym != other.patient_pseudonym
    )


def test_the_gate_refuses_output_that_still_holds_phi(phantom: Path) -> None:
    data, _ = cases(phantom)[0]
    source = pydicom.dcmread(io.BytesIO(data))
    # A vendor that writes the patient's name where no table expects it.
    source.Manufacturer = f"Sonora for {source.PatientName.family_name}"
    buffer = io.BytesIO()
    source.save_as(buffer, enforce_file_format=True)
    with pytest.raises(Residue) as caught:
        anonymize_dicom(buffer.getvalue(), POLICY)
    assert source.PatientName.family_name not in str(caught.value), "the refusal quotes no PHI"
    ds = pydicom.dcmread(io.BytesIO(anonymize_dicom(data, POLICY).data))
    ds.InstitutionName = "Somewhere"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(Residue, match="InstitutionName should have been removed"):
        verify(buffer.getvalue(), frozenset(), POLICY)


def test_pixel_values_that_spell_a_name_are_not_a_leak(phantom: Path) -> None:
    data, _ = cases(phantom)[0]
    output = bytearray(anonymize_dicom(data, POLICY).data)
    output[-5000:-4996] = b"CHEN"  # speckle in the printable range spells names by chance
    verify(bytes(output), frozenset({"CHEN"}), POLICY)


def test_a_short_number_inside_a_pseudonymous_uid_is_not_a_leak(phantom: Path) -> None:
    data, _ = cases(phantom)[0]
    output = anonymize_dicom(data, POLICY)
    digits = output.sop_instance_uid.split(".")[-1][10:16]  # six digits from inside the UID
    verify(output.data, frozenset({digits}), POLICY)
    with pytest.raises(Residue):
        verify(output.data, frozenset({"2.25"}), POLICY)  # anything else still counts as found


def test_a_date_inside_a_pseudonymous_uid_is_not_a_leak_but_one_starting_a_value_is(
    phantom: Path,
) -> None:
    data, _ = cases(phantom)[0]
    output = anonymize_dicom(data, POLICY)
    inside = output.sop_instance_uid.split(".")[-1][12:20]  # eight digits from inside the UID
    verify(output.data, frozenset({inside}), POLICY)
    ds = pydicom.dcmread(io.BytesIO(output.data))
    ds.ContentDate = "20240523"
    ds.AcquisitionDateTime = "20240523155803"  # a date at the head of a date-time
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(Residue, match="8 characters"):
        verify(buffer.getvalue(), frozenset({"20240523"}), POLICY)


def test_a_safe_listed_private_element_survives_with_its_creator(phantom: Path) -> None:
    source = pydicom.dcmread(io.BytesIO(cases(phantom)[0][0]))
    block = source.private_block(0x0011, "ACME US 2.0", create=True)
    block.add_new(0x05, "DS", "4.5")  # a gain setting: safe to keep
    block.add_new(0x06, "LO", "DOE^JANE")  # a vendor's copy of the name: not on the list
    buffer = io.BytesIO()
    source.save_as(buffer)
    policy = Policy(secret=POLICY.secret, safe_private=frozenset({("ACME US 2.0", 0x05)}))

    data = anonymize_dicom(buffer.getvalue(), policy).data
    out = pydicom.dcmread(io.BytesIO(data))

    kept = out.private_block(0x0011, "ACME US 2.0")
    assert kept[0x05].value == "4.5"
    assert 0x00111006 not in out and b"DOE^JANE" not in data
    assert not any(e.tag.group == 0x0009 for e in out)  # the phantom's own block is not listed
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert "113111" in codes
