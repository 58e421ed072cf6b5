"""Each service writes only its own tables, and reads another's only through its owner's read
interface (DESIGN.md: a service owns its rows)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fetalmlops.common.db.models import OWNERS, Base

SERVICES = Path(__file__).resolve().parents[3] / "services"
TABLES = {mapper.class_.__name__: mapper.local_table.name for mapper in Base.registry.mappers}


def test_every_table_has_one_owner() -> None:
    assert set(OWNERS) == set(Base.metadata.tables)
    assert set(OWNERS.values()) <= {path.name for path in SERVICES.iterdir()}


def models_imported(source: Path) -> set[str]:
    """The ORM classes a module imports from the kernel's database layer."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in (
            "fetalmlops.common.db",
            "fetalmlops.common.db.models",
        ):
            names |= {alias.name for alias in node.names if alias.name in TABLES}
    return names


@pytest.mark.parametrize("service", sorted(path.name for path in SERVICES.iterdir()))
def test_a_service_touches_only_the_tables_it_owns(service: str) -> None:
    foreign = {
        f"{source.relative_to(SERVICES)}: {name}"
        for source in (SERVICES / service / "src").rglob("*.py")
        for name in models_imported(source)
        if OWNERS[TABLES[name]] != service
    }
    assert foreign == set()
