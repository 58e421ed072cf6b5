"""FetalMLOps monitor service: Drift, performance and carbon monitoring."""
