"""PS3.15 Annex E de-identification of a DICOM dataset: a pure function of dataset and policy.

Every element is looked up in Table E.1-1 (``profile.annex_e``), recursively through sequences,
under the policy's options (their columns of the table): what an option keeps (K) stays, the
dates its column cleans (C, Retain Longitudinal Temporal Information with Modified Dates) move
by the patient's shift, UIDs become keyed ``2.25.`` pseudonyms, the patient ID a keyed
pseudonym, and every other listed attribute is removed, emptied or replaced by a dummy as the
Basic Profile says. Private elements go unless safe-listed. What the source held is returned
too, for the verification gate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from fetalmlops.anonymizer import pseudonyms
from fetalmlops.anonymizer.profile.policy import Policy, private_creators

PATIENT_ID = 0x00100020
TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)
DUMMY = {"PN": "ANONYMIZED", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED",
         "LT": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "CS": "ANONYMIZED",
         "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "IS": "0",
         "DS": "0"}  # fmt: skip
# Type 1/2 attributes of the US Image IOD that must stay present (emptied, not removed).
REQUIRED = frozenset(
    {
        0x00080020,
        0x00080030,
        0x00080050,
        0x00080090,
        0x00100010,
        0x00100030,
        0x00100040,
        0x00200010,
    }
)
# Values this short ("F", "YES", "1") occur everywhere; they identify no one and would only
# make the gate cry wolf.
MIN_PHI_LENGTH = 4


@dataclass(frozen=True)
class Deidentified:
    dataset: Dataset
    patient_pseudonym: str
    phi: frozenset[str]  # every identifying string the source held, for the verification gate
    names: frozenset[str]  # the parts of its person names, matched as whole words


def deidentify(source: Dataset, policy: Policy) -> Deidentified:
    patient_id = str(source.get("PatientID", "") or source.get("StudyInstanceUID", ""))
    walker = _Walker(policy, pseudonyms.date_shift(policy.secret, patient_id))
    dataset = copy.deepcopy(source)
    walker.walk(dataset)
    pseudonym = pseudonyms.patient_pseudonym(policy.secret, patient_id)
    dataset.PatientID = pseudonym
    dataset.PatientName = pseudonym  # Type 2: present, and now as anonymous as the ID
    dataset.PatientIdentityRemoved = "YES"
    # LO holds 64 characters: the code sequence below carries the meanings.
    codes = " ".join(code for code, _ in policy.method_codes())
    dataset.DeidentificationMethod = f"FetalMLOps PS3.15 E.1-1 {codes}"
    dataset.DeidentificationMethodCodeSequence = Sequence(
        [_code(value, meaning) for value, meaning in policy.method_codes()]
    )
    if "SOPInstanceUID" in dataset and hasattr(dataset, "file_meta"):
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return Deidentified(
        dataset,
        pseudonym,
        # A string the source also holds where the profile keeps it ("US KIDNEY" as a removed
        # StudyDescription and as a kept code meaning) is, by the profile's own judgement, no PHI.
        frozenset(v for v in walker.phi - walker.kept if len(v) >= MIN_PHI_LENGTH),
        frozenset(n for n in walker.names - walker.kept if len(n) >= MIN_PHI_LENGTH),
    )


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


class _Walker:
    def __init__(self, policy: Policy, shift: timedelta) -> None:
        self.policy = policy
        self.shift = shift
        self.phi: set[str] = set()
        self.names: set[str] = set()
        self.kept: set[str] = set()  # strings of attributes the profile keeps

    def walk(self, dataset: Dataset) -> None:
        creators = private_creators(dataset)
        for element in list(dataset):
            tag = int(element.tag)
            if element.tag.is_private:
                self._private(dataset, element, creators)
                continue
            action = self.policy.action(tag, element.VR)
            if action is None or action == "K" or (action == "C" and element.VR == "TM"):
                self._keep(element)
                continue
            self._remember(element)
            self._apply(dataset, element, action)

    def _keep(self, element: DataElement) -> None:
        """Unlisted or kept by an option: as it is, a sequence's items cleaned (PS3.15 E.1.1 K)."""
        if element.VR == "SQ":
            for item in element.value:
                self.walk(item)
        elif element.VR in TEXT_VRS and element.value is not None:
            self.kept.add(str(element.value).strip())

    def _private(
        self, dataset: Dataset, element: DataElement, creators: dict[tuple[int, int], str]
    ) -> None:
        if not self.policy.keeps_private(element, creators):
            self._remember(element)
            del dataset[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                self.walk(item)

    def _apply(self, dataset: Dataset, element: DataElement, action: str) -> None:
        tag, vr = int(element.tag), element.VR
        if tag == PATIENT_ID:
            return  # the patient ID is replaced by its pseudonym once the walk is done
        if action == "C":  # a date the option cleans (the policy says which it can)
            shift = pseudonyms.shift_da if vr == "DA" else pseudonyms.shift_dt
            if element.value:
                _map(element, lambda v: shift(v, self.shift))
        elif vr == "UI" and "U" in action:
            _map(element, lambda v: pseudonyms.uid(self.policy.secret, v))
        elif action.startswith("X") and not ("Z" in action and tag in REQUIRED):
            del dataset[element.tag]
        elif "Z" in action or vr not in DUMMY:
            element.value = None if vr != "SQ" else Sequence()
        else:
            element.value = DUMMY[vr]

    def _remember(self, element: DataElement) -> None:
        """Collect the identifying strings an element holds, through nested sequences.

        Inside a sequence only what is identifying in its own right counts (a name, a date, an
        attribute the table lists): procedure codes in a removed sequence are not PHI, and
        would only make the gate refuse files that reuse them elsewhere.
        """
        if element.VR == "SQ":
            for item in element.value or []:
                for nested in item:
                    if (
                        nested.VR == "SQ"
                        or nested.VR in ("PN", "DA", "DT")
                        or self.policy.action(int(nested.tag), nested.VR)
                    ):
                        self._remember(nested)
            return
        if element.VR not in TEXT_VRS or element.value is None:
            return
        values = element.value if element.VM > 1 else [element.value]
        for text in (str(v).strip() for v in values if v is not None):
            if not text:
                continue
            self.phi.add(text)
            if element.VR == "PN":
                self.phi.add(text.replace("^", " ").strip())
                self.names.update(part for part in text.replace("^", " ").split() if part)


def _map(element: DataElement, change: Callable[[str], str]) -> None:
    if element.VM > 1:
        element.value = [change(str(v)) for v in element.value]
    else:
        element.value = change(str(element.value))
