"""Readers on small fixtures written in each real format, well-formed and malformed."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.datasets.labels import parse_brain_plane, parse_plane
from fetalmlops.datasets.readers import DatasetError, DatasetFormat, Split, detect, read_dataset

FPDB_HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train \n"


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8)).save(path)
    return path


def fetal_planes_db(root: Path, rows: list[str], images: list[str]) -> Path:
    for name in images:
        png(root / "Images" / f"{name}.png")
    (root / "FETAL_PLANES_DB_data.csv").write_text(FPDB_HEADER + "".join(r + "\n" for r in rows))
    return root


def test_fetal_planes_db_with_its_trailing_space_header(tmp_path: Path) -> None:
    root = fetal_planes_db(
        tmp_path,
        [
            "Patient00001_Plane1_1_of_15;1;Other;Not A Brain;Op. 1;Voluson E6;1",
            "Patient00001_Plane3_1_of_3;1;Fetal brain;Trans-thalamic;Op. 1;Voluson E6;1",
            "Patient00002_Plane5_1_of_1;2;Maternal cervix;Not A Brain;Other;Aloka;0",
        ],
        ["Patient00001_Plane1_1_of_15", "Patient00001_Plane3_1_of_3", "Patient00002_Plane5_1_of_1"],
    )
    assert detect(root) is DatasetFormat.FETAL_PLANES_DB
    other, brain, cervix = read_dataset(root)
    assert (other.plane, other.brain_plane, other.split) == (Plane.OTHER, None, Split.TRAIN)
    assert (brain.plane, brain.brain_plane) == (Plane.FETAL_BRAIN, BrainPlane.TRANS_THALAMIC)
    assert (cervix.plane, cervix.patient, cervix.split) == (Plane.MATERNAL_CERVIX, "2", Split.TEST)
    assert cervix.device == "Aloka" and cervix.cohort == "fetal_planes_db"
    assert cervix.path == root / "Images" / "Patient00002_Plane5_1_of_1.png"


def test_fetal_planes_db_errors_list_every_offending_row(tmp_path: Path) -> None:
    root = fetal_planes_db(
        tmp_path,
        [
            "a;1;Fetal brain;Trans-thalamic;Op. 1;Voluson E6;1",
            "b;1;Fetal kidney;Not A Brain;Op. 1;Voluson E6;1",
            "missing;2;Fetal femur;Not A Brain;Op. 1;Voluson E6;1",
            "a;3;Fetal femur;Not A Brain;Op. 1;Voluson E6;1",
            "c;3;Fetal brain;Trans-nothing;Op. 1;Voluson E6;maybe",
        ],
        ["a", "b", "c"],
    )
    with pytest.raises(DatasetError) as caught:
        read_dataset(root)
    problems = {(p.where, p.reason.split(":")[0].split(" '")[0]) for p in caught.value.problems}
    assert problems == {
        ("row 3", "unknown plane label"),
        ("row 4", "file not found"),
        ("row 2, row 5", "duplicate image a.png"),
        ("row 6", "unknown brain plane label"),
    }
    assert "row 3: unknown plane label 'Fetal kidney'" in str(caught.value)


def test_african_cohort_per_country_folders(tmp_path: Path) -> None:
    for country, code in (("Algeria", "DZA"), ("Malawi", "MWI")):
        png(tmp_path / country / f"patient001_{code}_plane0.png")
    (tmp_path / "African_planes_database.csv").write_text(
        "Filename,Center,Patient_num,Plane,Train\n"
        "patient001_DZA_plane0,Algeria,1,Fetal abdomen,1\n"
        "patient001_MWI_plane0,Malawi,1,Fetal thorax,0\n"
    )
    assert detect(tmp_path) is DatasetFormat.AFRICAN
    algeria, malawi = read_dataset(tmp_path)
    assert (algeria.plane, algeria.cohort, algeria.patient) == (
        Plane.FETAL_ABDOMEN,
        "african-algeria",
        "Algeria-1",
    )
    assert malawi.patient != algeria.patient, "patient numbers restart per centre"
    assert malawi.split is Split.TEST


def test_african_missing_column_and_file_are_reported(tmp_path: Path) -> None:
    (tmp_path / "African_planes_database.csv").write_text(
        "Filename,Patient_num,Plane\npatient001_EGY_plane0,1,Fetal brain\n"
    )
    with pytest.raises(DatasetError, match="row 2: missing column 'Center'"):
        read_dataset(tmp_path)


def test_folder_per_class(tmp_path: Path) -> None:
    png(tmp_path / "Fetal brain" / "x1.png")
    png(tmp_path / "fetal_femur" / "nested" / "x2.png")
    (tmp_path / "fetal_femur" / "notes.txt").write_text("ignored")
    samples = read_dataset(tmp_path)
    assert detect(tmp_path) is DatasetFormat.FOLDER
    assert [s.plane for s in samples] == [Plane.FETAL_BRAIN, Plane.FETAL_FEMUR]


def test_folder_with_an_unknown_class_folder_is_refused(tmp_path: Path) -> None:
    png(tmp_path / "fetal_brain" / "x1.png")
    png(tmp_path / "kidney" / "x2.png")
    with pytest.raises(DatasetError, match="kidney: unknown plane label 'kidney'"):
        read_dataset(tmp_path)


def test_generic_csv_relative_paths_and_optional_columns(tmp_path: Path) -> None:
    png(tmp_path / "img" / "1.png")
    png(tmp_path / "img" / "2.png")
    table = tmp_path / "mine.csv"
    table.write_text(
        "path,label,patient,split,cohort\nimg/1.png,femur,p1,val,site-a\nimg/2.png,Thorax,,,\n"
    )
    first, second = read_dataset(table)
    assert (first.plane, first.patient, first.split, first.cohort) == (
        Plane.FETAL_FEMUR,
        "p1",
        Split.VAL,
        "site-a",
    )
    assert (second.plane, second.patient, second.split) == (Plane.FETAL_THORAX, None, None)


def test_generic_csv_errors(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n,femur\nnope.png,femur\n")
    with pytest.raises(DatasetError) as caught:
        read_dataset(tmp_path)
    assert [(p.where, p.reason[:14]) for p in caught.value.problems] == [
        ("row 2", "empty path"),
        ("row 3", "file not found"),
    ]


def test_empty_or_absent_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no images"):
        read_dataset(tmp_path)


def test_the_phantom_output_reads_back_in_two_formats(tmp_path: Path) -> None:
    from fetalmlops.datasets.phantom.dataset import generate, plan

    generate(tmp_path, plan(3, seed=1), seed=1)
    by_csv = read_dataset(tmp_path)
    by_folder = read_dataset(tmp_path / "png")
    assert sorted(s.path for s in by_csv) == sorted(s.path.resolve() for s in by_folder)
    assert all(s.patient and s.split and s.cohort for s in by_csv)


@pytest.mark.parametrize(
    ("name", "plane"),
    [("Fetal abdomen", Plane.FETAL_ABDOMEN), ("MATERNAL-CERVIX", Plane.MATERNAL_CERVIX),
     ("fetal_thorax", Plane.FETAL_THORAX), ("Other", Plane.OTHER), ("brain", Plane.FETAL_BRAIN)],
)  # fmt: skip
def test_label_names_fold_onto_the_canonical_planes(name: str, plane: Plane) -> None:
    assert parse_plane(name) is plane


def test_brain_sub_plane_names() -> None:
    assert parse_brain_plane("Trans-cerebellum") is BrainPlane.TRANS_CEREBELLUM
    assert parse_brain_plane("Not A Brain") is None
    with pytest.raises(ValueError, match="unknown brain plane"):
        parse_brain_plane("coronal")
