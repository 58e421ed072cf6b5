"""What a service talks to, opened in one place: the object store, the database, the bus.

Every service's ``main.build`` starts from `connect(settings)` and declares readiness on the
same three clients, so the platform a service sees is configured one way, by `Settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from fetalmlops.common.bus import Bus, open_bus
from fetalmlops.common.db.session import create_engine_for
from fetalmlops.common.service import ReadinessCheck, buckets_ready, database_ready
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore, open_store


@dataclass(frozen=True)
class Clients:
    store: ObjectStore
    engine: Engine
    bus: Bus

    def readiness(self, buckets: Sequence[str]) -> dict[str, ReadinessCheck]:
        """Ready once ``buckets`` exist and the database answers."""
        return {
            "object-store": buckets_ready(self.store, buckets),
            "database": database_ready(self.engine),
        }


def connect(settings: Settings) -> Clients:
    """The clients ``settings`` configure."""
    return Clients(
        store=open_store(settings),
        engine=create_engine_for(settings.database_url),
        bus=open_bus(settings),
    )
