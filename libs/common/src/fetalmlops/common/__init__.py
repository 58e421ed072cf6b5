"""FetalMLOps shared kernel: plumbing and contracts every service stands on.

It holds settings, event contracts, the bus, the object store, the database and telemetry;
never a service's domain logic.
"""
