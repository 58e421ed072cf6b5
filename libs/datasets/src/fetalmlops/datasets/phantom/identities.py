"""Realistic but fictitious patient identities and visit details: the PHI planted for leak tests.

In fetal ultrasound the DICOM patient is the mother. Each patient gets a name, medical record
number, birth date and one or two visits (so longitudinal date intervals and cross-study
pseudonym consistency can be tested), each with an accession number, referring physician,
institution, station and date/time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np

GIVEN = (
    "Amina",
    "Sofia",
    "Chiara",
    "Ngozi",
    "Mei",
    "Fatima",
    "Elena",
    "Aisha",
    "Priya",
    "Lucia",
    "Hannah",
    "Yasmin",
    "Zanele",
    "Ingrid",
    "Camila",
    "Olga",
    "Leila",
    "Grace",
    "Keiko",
    "Marta",
)
FAMILY = (
    "Okafor",
    "Garcia",
    "Rossi",
    "Mensah",
    "Chen",
    "Haddad",
    "Novak",
    "Banda",
    "Sharma",
    "Silva",
    "Muller",
    "Karimi",
    "Dlamini",
    "Larsen",
    "Torres",
    "Ivanova",
    "Nakamura",
    "Kowalski",
    "Abebe",
)
PHYSICIANS = ("Moreau^Claire^^Dr", "Osei^Kwame^^Dr", "Lindqvist^Eva^^Dr", "Patel^Ravi^^Dr")
INSTITUTIONS = (
    ("Riverside Maternity Hospital", "12 Harbour Road, Port Elm"),
    ("St. Agnes Women's Clinic", "4 Linden Square, Northvale"),
    ("Lakeshore Perinatal Centre", "88 Shore Drive, Westmere"),
)


@dataclass(frozen=True)
class Visit:
    accession_number: str
    study_datetime: datetime
    referring_physician: str
    operator: str
    institution: str
    institution_address: str
    station_name: str
    ga_weeks: float


@dataclass(frozen=True)
class Identity:
    patient_key: str  # the dataset's own patient number, e.g. P00042 (not PHI)
    name: str  # DICOM PN: FAMILY^GIVEN
    patient_id: str  # medical record number
    birth_date: date
    phone: str
    visits: tuple[Visit, ...]

    def phi_values(self) -> list[str]:
        """Every identifying string planted for this patient, for leak scanners."""
        values = [
            self.name,
            self.name.replace("^", " "),
            self.patient_id,
            self.birth_date.strftime("%Y%m%d"),
            self.phone,
        ]
        for visit in self.visits:
            values += [
                visit.accession_number,
                visit.referring_physician,
                visit.operator,
                visit.institution,
                visit.institution_address,
                visit.station_name,
                visit.study_datetime.strftime("%Y%m%d"),
            ]
        return list(dict.fromkeys(values))


def identity(index: int, rng: np.random.Generator) -> Identity:
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    first_visit = datetime.combine(
        date(2021, 1, 4) + timedelta(days=int(rng.integers(0, 1400))),
        time(int(rng.integers(8, 17)), int(rng.integers(0, 60)), int(rng.integers(0, 60))),
    )
    age_years = rng.uniform(19, 42)
    birth = (first_visit - timedelta(days=int(age_years * 365.25))).date()
    institution, address = INSTITUTIONS[int(rng.integers(0, len(INSTITUTIONS)))]
    ga = float(rng.uniform(18, 30))  # second-trimester anomaly scan to early third trimester
    visits = []
    for k in range(1 + int(rng.random() < 0.35)):  # about a third come back for a growth scan
        weeks_later = 0 if k == 0 else int(rng.integers(3, 8))
        visits.append(
            Visit(
                accession_number=f"ACC{rng.integers(10**7, 10**8)}",
                study_datetime=first_visit
                + timedelta(weeks=weeks_later, minutes=int(rng.integers(0, 90))),
                referring_physician=str(rng.choice(PHYSICIANS)),
                operator=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
                institution=institution,
                institution_address=address,
                station_name=f"US-ROOM-{rng.integers(1, 9)}",
                ga_weeks=ga + weeks_later,
            )
        )
    return Identity(
        patient_key=f"P{index:05d}",
        name=f"{family.upper()}^{given.upper()}",
        patient_id=f"MRN{rng.integers(10**6, 10**7)}",
        birth_date=birth,
        phone=f"+1-555-{rng.integers(100, 1000)}-{rng.integers(1000, 10000)}",
        visits=tuple(visits),
    )
