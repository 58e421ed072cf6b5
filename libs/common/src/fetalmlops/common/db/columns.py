"""Column types that behave the same on SQLite (embedded) and PostgreSQL (stack, production)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

# JSONB on PostgreSQL so reports and metrics can be indexed and queried; plain JSON elsewhere.
JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")

# Room for enum values added later: a new value then only changes the check constraint,
# not the column type, which keeps that migration cheap on both databases.
ENUM_LENGTH = 32


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware datetime, stored in UTC and always read back aware.

    SQLite has no time-zone type: SQLAlchemy writes the wall-clock fields and drops the offset.
    Normalising to UTC on the way in is what makes the stored text comparable and lets us
    attach UTC again on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one, e.g. datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def string_enum(enum_class: type[StrEnum], name: str) -> sa.Enum:
    """A VARCHAR plus a named CHECK constraint instead of a native enum type.

    Native PostgreSQL enums cannot drop values and need their own migration steps; a checked
    string works the same on SQLite and PostgreSQL and stores the readable value.
    """
    return sa.Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=ENUM_LENGTH,
        validate_strings=True,
        values_callable=_values,
    )


def _values(enum_class: type[Any]) -> list[str]:
    return [member.value for member in enum_class]
